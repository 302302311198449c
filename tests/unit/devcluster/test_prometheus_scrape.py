"""The Prometheus add-on's scrape configuration, generated from ServiceMonitors as the Prometheus
Operator generates it, and the operator's KEDA query selecting the series that configuration makes.

Relabelling is evaluated here with Prometheus' documented semantics (keep/drop/replace over the
``;``-joined source labels, fully anchored RE2 regexes, ``${1}`` replacement) on the labels the
add-on's discovery gives each endpoint of a Service (those of Prometheus' endpoints role); the
generated file itself is checked by the real ``promtool``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ttsfleet import contract
from ttsfleet.devcluster import addons_prometheus
from ttsfleet.operator.desired import scaledobject, service, servicemonitor
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import parse_spec

OWNER = Owner(name="fleet", namespace="team-a", uid="uid-1")
SPEC = parse_spec(
    {
        "image": "ttsfleet/worker:0.1.0",
        "model": {"source": "hf://2Noise/ChatTTS"},
        "autoscaling": {"enabled": True},
        "monitoring": {"serviceMonitor": True, "interval": "5s"},
    }
)


def _monitor() -> dict[str, Any]:
    built = servicemonitor.build(OWNER, SPEC)
    assert built is not None
    built["metadata"]["namespace"] = OWNER.namespace
    return built


def _pod(name: str = "fleet-0") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": OWNER.namespace, "uid": "u", "labels": {"app": "x"}},
        "spec": {
            "nodeName": "real-node-0",
            "containers": [
                {"name": "worker", "ports": [{"name": "metrics", "containerPort": contract.METRICS_PORT}]},
            ],
        },
        "status": {"phase": "Running", "podIP": "10.0.0.5", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def _endpoints(svc: dict[str, Any], pod: str = "fleet-0") -> dict[str, Any]:
    """The Endpoints object the endpoints controller makes for ``svc`` with one pod behind it."""
    # The Service's targetPorts are names; the controller resolves them to the pod's numbers.
    numbers = {
        contract.GRPC_PORT_NAME: contract.GRPC_PORT,
        contract.HTTP_PORT_NAME: contract.HTTP_PORT,
        contract.METRICS_PORT_NAME: contract.METRICS_PORT,
    }
    ports = [{"name": p["name"], "port": numbers[p["targetPort"]], "protocol": "TCP"} for p in svc["spec"]["ports"]]
    address = {"ip": "10.0.0.5", "nodeName": "real-node-0", "targetRef": {"kind": "Pod", "name": pod}}
    return {
        "metadata": {"name": svc["metadata"]["name"], "namespace": OWNER.namespace},
        "subsets": [{"addresses": [address], "ports": ports}],
    }


def _discovered(svc: dict[str, Any], port_name: str) -> dict[str, str]:
    """The add-on's discovery labels of one address/port of a Service (Prometheus' endpoints role)."""
    svc = {**svc, "metadata": {**svc["metadata"], "namespace": OWNER.namespace}}
    groups = addons_prometheus.discover(
        [_endpoints(svc)], {(OWNER.namespace, svc["metadata"]["name"]): svc}, {(OWNER.namespace, "fleet-0"): _pod()}
    )
    (group,) = [g for g in groups if g["labels"]["__meta_kubernetes_endpoint_port_name"] == port_name]
    return {"__address__": group["targets"][0], **group["labels"], "job": "serviceMonitor/x"}


def _relabel(labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus' relabelling (the actions the generator uses); None when the target is dropped."""
    labels = dict(labels)
    for rule in rules:
        action = rule.get("action", "replace")
        value = rule.get("separator", ";").join(labels.get(s, "") for s in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            replacement = rule.get("replacement", "${1}")
            result = match.expand(replacement.replace("${", "\\g<").replace("}", ">"))
            if result:
                labels[rule["target_label"]] = result
            else:
                labels.pop(rule["target_label"], None)
    return {k: v for k, v in labels.items() if not k.startswith("__")}


def _job(tmp_path: Path) -> dict[str, Any]:
    config = yaml.safe_load(addons_prometheus.render(9090, tmp_path / "sd", [_monitor()]))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] != addons_prometheus.SELF_JOB]
    return dict(job)


def test_one_job_per_servicemonitor_endpoint_reading_its_discovered_targets(tmp_path: Path) -> None:
    job = _job(tmp_path)
    assert job["job_name"] == f"serviceMonitor/{OWNER.namespace}/{OWNER.name}/0"
    assert job["file_sd_configs"] == [{"files": [str(tmp_path / "sd" / f"{OWNER.namespace}_{OWNER.name}_0.json")]}]
    assert addons_prometheus.namespaces_of(_monitor()) == [OWNER.namespace]
    assert (job["scrape_interval"], job["metrics_path"]) == ("5s", "/metrics")


def test_discovery_publishes_ready_and_not_ready_addresses_with_pod_and_container() -> None:
    headless = {**service.build_headless(OWNER, SPEC)}
    headless["metadata"] = {**headless["metadata"], "namespace": OWNER.namespace}
    endpoints = _endpoints(headless)
    endpoints["subsets"][0]["notReadyAddresses"] = [{"ip": "10.0.0.6", "targetRef": {"kind": "Pod", "name": "fleet-1"}}]
    groups = addons_prometheus.discover([endpoints], {(OWNER.namespace, headless["metadata"]["name"]): headless}, {})
    metrics = {
        g["targets"][0]: g["labels"] for g in groups if g["labels"]["__meta_kubernetes_endpoint_port_name"] == "metrics"
    }
    assert set(metrics) == {f"10.0.0.5:{contract.METRICS_PORT}", f"10.0.0.6:{contract.METRICS_PORT}"}
    assert metrics[f"10.0.0.6:{contract.METRICS_PORT}"]["__meta_kubernetes_endpoint_ready"] == "false"
    assert metrics[f"10.0.0.6:{contract.METRICS_PORT}"]["__meta_kubernetes_endpoint_address_target_name"] == "fleet-1"


def test_the_metrics_port_of_the_headless_service_is_scraped_with_the_operators_labels(tmp_path: Path) -> None:
    rules = _job(tmp_path)["relabel_configs"]
    headless, client = service.build_headless(OWNER, SPEC), service.build_client(OWNER, SPEC)

    target = _relabel(_discovered(headless, contract.METRICS_PORT_NAME), rules)
    assert target == {
        "namespace": OWNER.namespace,
        "service": headless["metadata"]["name"],
        "pod": "fleet-0",
        "container": "worker",
        "job": headless["metadata"]["name"],
        "endpoint": contract.METRICS_PORT_NAME,
    }
    # Not the gRPC port of the same Service, nor anything of the client Service.
    assert _relabel(_discovered(headless, contract.GRPC_PORT_NAME), rules) is None
    assert _relabel(_discovered(client, contract.GRPC_PORT_NAME), rules) is None
    other = {**headless, "metadata": {**headless["metadata"], "labels": {"app.kubernetes.io/instance": "other"}}}
    assert _relabel(_discovered(other, contract.METRICS_PORT_NAME), rules) is None


def test_kedas_queue_query_selects_the_series_the_servicemonitor_makes(tmp_path: Path) -> None:
    """The trigger's PromQL matchers must match the labels of the scraped series, or KEDA reads
    "no data" forever (the query used to name the client Service, which nothing scrapes)."""
    target = _relabel(
        _discovered(service.build_headless(OWNER, SPEC), contract.METRICS_PORT_NAME), _job(tmp_path)["relabel_configs"]
    )
    assert target is not None
    query = scaledobject.queue_query(OWNER)
    matchers = dict(re.findall(r'(\w+)="([^"]*)"', query))
    assert query.startswith(f"sum({contract.METRIC_QUEUE_LENGTH}{{")
    assert matchers and all(target.get(name) == value for name, value in matchers.items()), (matchers, target)


def test_selector_expressions_translate_to_keep_and_drop_rules() -> None:
    rules = addons_prometheus._selector_relabels(
        {
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ]
        }
    )

    def kept(labels: dict[str, str]) -> bool:
        meta = {f"__meta_kubernetes_service_label_{k}": v for k, v in labels.items()}
        meta |= {f"__meta_kubernetes_service_labelpresent_{k}": "true" for k in labels}
        return _relabel(meta, rules) is not None

    assert kept({"tier": "b"})
    assert not kept({"tier": "c"})
    assert not kept({"tier": "a", "canary": "yes"})


def test_the_generated_configuration_is_valid_for_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian's prometheus package, devcluster/system-packages.sh) is not installed")
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / f"{OWNER.namespace}_{OWNER.name}_0.json").write_text("[]")
    path = tmp_path / "prometheus.yml"
    path.write_text(addons_prometheus.render(9090, tmp_path / "sd", [_monitor()]))
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sync_rewrites_the_file_and_signals_prometheus_only_when_the_monitors_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(addons_prometheus.os, "kill", lambda pid, sig: signals.append((pid, sig)))
    config = addons_prometheus.write_config(tmp_path, 9090)
    sync = addons_prometheus.ConfigSync(tmp_path / "kubeconfig", config, 4242, 9090)

    assert not sync.update()  # nothing in the cluster yet: same file, no reload
    sync.monitors[(OWNER.namespace, OWNER.name)] = _monitor()
    assert sync.update()
    assert not sync.update()
    assert "serviceMonitor/team-a/fleet/0" in config.read_text()
    assert [pid for pid, _ in signals] == [4242]
    assert signals[0][1] == addons_prometheus.signal.SIGHUP
    groups = [{"targets": ["10.0.0.5:8002"], "labels": {"__meta_kubernetes_namespace": OWNER.namespace}}]
    assert sync.write_targets(_monitor(), 0, groups)
    assert not sync.write_targets(_monitor(), 0, groups)  # unchanged: Prometheus re-reads nothing
