"""Prometheus from Debian's ``prometheus`` package (2.42), on loopback, scraping the fleet the way
a user's Prometheus does: from the ServiceMonitors in the cluster.

What the Prometheus Operator generates was the first choice: ``kubernetes_sd_configs`` (role
``endpoints``) plus, per ServiceMonitor endpoint, a scrape job whose relabelling keeps the endpoints
of the selected Services on the named port and sets ``namespace``/``service``/``pod``/``container``/
``endpoint``/``job``. Debian builds Prometheus without its Kubernetes discovery (``promtool`` refuses
``kubernetes_sd_configs``: "field not found"), so the discovery half runs here instead: the
``sync`` loop lists Endpoints, Services and Pods, writes the targets with the very
``__meta_kubernetes_*`` labels Prometheus' endpoints role gives them into ``file_sd`` files
(Prometheus re-reads those by itself), and the scrape jobs keep the Operator's relabelling
unchanged. So a series carries the labels it has in a user's cluster (KEDA's query selects on
them), and building Prometheus from source (minutes, and one more binary to cache) is not needed.
The loop also regenerates prometheus.yml when ServiceMonitors change and sends Prometheus SIGHUP
(its documented reload signal; no unauthenticated ``/-/reload`` endpoint is turned on).

The loop lists every ``DISCOVERY_SECONDS``, which bounds how late a new pod or ServiceMonitor is
scraped; the scrape interval still comes from the ServiceMonitor. It reads the cluster with the
admin kubeconfig: a local test stand-in, like the KEDA add-on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

PACKAGE = "prometheus"
GROUP, VERSION, PLURAL = "monitoring.coreos.com", "v1", "servicemonitors"
SELF_JOB = "prometheus"
# A ServiceMonitor endpoint without an interval gets Prometheus' global one (as the operator does).
DEFAULT_INTERVAL = "30s"
# How often the sync loop lists ServiceMonitors, Endpoints, Services and Pods.
DISCOVERY_SECONDS = 2.0

log = logging.getLogger("ttsfleet.devcluster.prometheus")


def binary() -> Path:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if not found:
        raise RuntimeError(
            "the prometheus add-on needs Debian's `prometheus` package (devcluster/system-packages.sh installs it)"
        )
    return Path(found)


# -- the configuration: what the Prometheus Operator would generate -------------------------------


def _label(name: str) -> str:
    """Kubernetes label key -> the name Prometheus' service discovery gives it (``__meta_..._label_<this>``)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _alternatives(values: Iterable[str]) -> str:
    return "|".join(re.escape(v) for v in values)


def _selector_relabels(selector: dict[str, Any]) -> list[dict[str, Any]]:
    """A label selector on the Service, as keep/drop relabel rules (the operator's translation)."""
    rules: list[dict[str, Any]] = []
    for key, value in sorted((selector.get("matchLabels") or {}).items()):
        rules.append(
            {
                "action": "keep",
                "source_labels": [
                    f"__meta_kubernetes_service_label_{_label(key)}",
                    f"__meta_kubernetes_service_labelpresent_{_label(key)}",
                ],
                "regex": f"({_alternatives([value])});true",
            }
        )
    for expression in selector.get("matchExpressions") or []:
        key, operator = _label(expression["key"]), expression["operator"]
        values = f"({_alternatives(expression.get('values') or [])});true"
        both = [f"__meta_kubernetes_service_label_{key}", f"__meta_kubernetes_service_labelpresent_{key}"]
        present = [f"__meta_kubernetes_service_labelpresent_{key}"]
        rule = {
            "In": {"action": "keep", "source_labels": both, "regex": values},
            "NotIn": {"action": "drop", "source_labels": both, "regex": values},
            "Exists": {"action": "keep", "source_labels": present, "regex": "true"},
            "DoesNotExist": {"action": "drop", "source_labels": present, "regex": "true"},
        }.get(operator)
        if rule is None:
            raise ValueError(f"unknown label selector operator {operator!r}")
        rules.append(rule)
    return rules


def namespaces_of(monitor: dict[str, Any]) -> list[str] | None:
    """The namespaces a ServiceMonitor looks in; None for all (``namespaceSelector.any``)."""
    chosen = (monitor.get("spec") or {}).get("namespaceSelector") or {}
    if chosen.get("any"):
        return None
    return list(chosen.get("matchNames") or [monitor["metadata"]["namespace"]])


def sd_file(sd_dir: Path, monitor: dict[str, Any], index: int) -> Path:
    return sd_dir / f"{monitor['metadata']['namespace']}_{monitor['metadata']['name']}_{index}.json"


def scrape_job(monitor: dict[str, Any], index: int, sd_dir: Path) -> dict[str, Any]:
    """The scrape job for endpoint ``index`` of a ServiceMonitor: the Prometheus Operator's job name
    and relabelling, over targets the sync loop discovers (see the module docstring)."""
    meta, spec = monitor["metadata"], monitor.get("spec") or {}
    endpoint = spec["endpoints"][index]
    relabels: list[dict[str, Any]] = _selector_relabels(spec.get("selector") or {})
    if "port" in endpoint:
        port_rule = {"source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": re.escape(endpoint["port"])}
        endpoint_label = str(endpoint["port"])
    elif "targetPort" in endpoint:
        port_rule = {
            "source_labels": ["__meta_kubernetes_pod_container_port_number"],
            "regex": str(endpoint["targetPort"]),
        }
        endpoint_label = str(endpoint["targetPort"])
    else:
        raise ValueError(f"ServiceMonitor {meta['namespace']}/{meta['name']}: endpoint {index} names no port")
    relabels.append({"action": "keep", **port_rule})
    for kind, target in (("Node", "node"), ("Pod", "pod")):
        relabels.append(
            {
                "source_labels": [
                    "__meta_kubernetes_endpoint_address_target_kind",
                    "__meta_kubernetes_endpoint_address_target_name",
                ],
                "separator": ";",
                "regex": f"{kind};(.*)",
                "replacement": "${1}",
                "target_label": target,
            }
        )
    relabels += [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"},
        {"target_label": "endpoint", "replacement": endpoint_label},
    ]
    job: dict[str, Any] = {
        "job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/{index}",
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "file_sd_configs": [{"files": [str(sd_file(sd_dir, monitor, index))]}],
        "scrape_interval": endpoint.get("interval") or DEFAULT_INTERVAL,
        "metrics_path": endpoint.get("path") or "/metrics",
        "scheme": endpoint.get("scheme") or "http",
        "relabel_configs": relabels,
    }
    if endpoint.get("scrapeTimeout"):
        job["scrape_timeout"] = endpoint["scrapeTimeout"]
    return job


def jobs_of(monitors: Iterable[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    ordered = sorted(monitors, key=lambda m: (m["metadata"]["namespace"], m["metadata"]["name"]))
    return [(m, i) for m in ordered for i in range(len((m.get("spec") or {}).get("endpoints") or []))]


def render(port: int, sd_dir: Path | None, monitors: Iterable[dict[str, Any]]) -> str:
    """The whole prometheus.yml: Prometheus itself plus one job per ServiceMonitor endpoint."""
    jobs: list[dict[str, Any]] = [{"job_name": SELF_JOB, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]
    if sd_dir is not None:
        for monitor, index in jobs_of(monitors):
            try:
                jobs.append(scrape_job(monitor, index, sd_dir))
            except (KeyError, ValueError) as error:  # one bad object must not stop the others
                log.warning("skipping ServiceMonitor endpoint: %s", error)
    config = {"global": {"scrape_interval": DEFAULT_INTERVAL, "evaluation_interval": DEFAULT_INTERVAL}}
    return yaml.safe_dump({**config, "scrape_configs": jobs}, sort_keys=False)


# -- discovery: what Prometheus' kubernetes_sd_configs role=endpoints would produce --------------


def _object_labels(prefix: str, obj: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for key, value in (obj["metadata"].get("labels") or {}).items():
        labels[f"{prefix}_label_{_label(key)}"] = str(value)
        labels[f"{prefix}_labelpresent_{_label(key)}"] = "true"
    return labels


def _pod_labels(pod: dict[str, Any], port: dict[str, Any]) -> dict[str, str]:
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    labels = {
        "__meta_kubernetes_pod_name": pod["metadata"]["name"],
        "__meta_kubernetes_pod_ip": str(status.get("podIP", "")),
        "__meta_kubernetes_pod_node_name": str((pod.get("spec") or {}).get("nodeName", "")),
        "__meta_kubernetes_pod_phase": str(status.get("phase", "")),
        "__meta_kubernetes_pod_ready": "true" if ready else "false",
        "__meta_kubernetes_pod_uid": str(pod["metadata"].get("uid", "")),
        **_object_labels("__meta_kubernetes_pod", pod),
    }
    for container in (pod.get("spec") or {}).get("containers") or []:
        for declared in container.get("ports") or []:
            if declared.get("containerPort") == port.get("port"):
                labels["__meta_kubernetes_pod_container_name"] = container["name"]
                labels["__meta_kubernetes_pod_container_port_name"] = str(declared.get("name", ""))
                labels["__meta_kubernetes_pod_container_port_number"] = str(declared["containerPort"])
                labels["__meta_kubernetes_pod_container_port_protocol"] = str(declared.get("protocol", "TCP"))
    return labels


def discover(
    endpoints: Iterable[dict[str, Any]],
    services: dict[tuple[str, str], dict[str, Any]],
    pods: dict[tuple[str, str], dict[str, Any]],
) -> list[dict[str, Any]]:
    """file_sd target groups: one per Endpoints object, one target per address and port."""
    groups: list[dict[str, Any]] = []
    for item in endpoints:
        namespace, name = item["metadata"]["namespace"], item["metadata"]["name"]
        common = {
            "__meta_kubernetes_namespace": namespace,
            "__meta_kubernetes_endpoints_name": name,
            **_object_labels("__meta_kubernetes_endpoints", item),
        }
        service_obj = services.get((namespace, name))
        if service_obj is not None:
            common["__meta_kubernetes_service_name"] = name
            common |= _object_labels("__meta_kubernetes_service", service_obj)
        targets: list[dict[str, Any]] = []
        for subset in item.get("subsets") or []:
            addresses = [(a, "true") for a in subset.get("addresses") or []]
            addresses += [(a, "false") for a in subset.get("notReadyAddresses") or []]
            for address, ready in addresses:
                for port in subset.get("ports") or []:
                    labels = {
                        "__address__": f"{address['ip']}:{port['port']}",
                        "__meta_kubernetes_endpoint_port_name": str(port.get("name", "")),
                        "__meta_kubernetes_endpoint_port_protocol": str(port.get("protocol", "TCP")),
                        "__meta_kubernetes_endpoint_ready": ready,
                    }
                    ref = address.get("targetRef") or {}
                    if ref:
                        labels["__meta_kubernetes_endpoint_address_target_kind"] = str(ref.get("kind", ""))
                        labels["__meta_kubernetes_endpoint_address_target_name"] = str(ref.get("name", ""))
                    if address.get("nodeName"):
                        labels["__meta_kubernetes_endpoint_node_name"] = str(address["nodeName"])
                    pod = pods.get((namespace, ref.get("name", ""))) if ref.get("kind") == "Pod" else None
                    if pod is not None:
                        labels |= _pod_labels(pod, port)
                    targets.append(labels)
        for target in targets:
            address = target.pop("__address__")
            groups.append({"targets": [address], "labels": {**common, **target}})
    return groups


def write_config(directory: Path, port: int, with_discovery: bool = True) -> Path:
    """The starting configuration (no ServiceMonitor yet); ``sync`` rewrites it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sd").mkdir(exist_ok=True)
    path = directory / "prometheus.yml"
    _write_atomically(path, render(port, directory / "sd" if with_discovery else None, []))
    return path


def _write_atomically(path: Path, text: str) -> None:
    # Prometheus may reload at any moment: it must never read a half-written file.
    partial = path.with_suffix(".tmp")
    partial.write_text(text)
    partial.replace(path)


def argv(binary_path: Path, config: Path, data: Path, port: int) -> list[str]:
    return [
        str(binary_path),
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=2h",
        "--log.level=warn",
    ]


def sync_argv(kubeconfig: Path, config: Path, prometheus_pid: int, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ttsfleet.devcluster.addons_prometheus",
        "sync",
        f"--kubeconfig={kubeconfig}",
        f"--config={config}",
        f"--prometheus-pid={prometheus_pid}",
        f"--port={port}",
    ]


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


# -- the sync loop: ServiceMonitors -> prometheus.yml -> SIGHUP -----------------------------------


class ConfigSync:
    """Keeps ``config`` equal to ``render(ServiceMonitors)`` (SIGHUP to Prometheus when it changes)
    and each job's file_sd file equal to the discovered targets (Prometheus re-reads those)."""

    def __init__(self, kubeconfig: Path, config: Path, prometheus_pid: int, port: int) -> None:
        self.kubeconfig, self.config, self.pid, self.port = kubeconfig, config, prometheus_pid, port
        self.sd_dir = config.parent / "sd"
        self.monitors: dict[tuple[str, str], dict[str, Any]] = {}
        self.reloads = 0

    def update(self) -> bool:
        """Rewrite prometheus.yml and signal Prometheus if the ServiceMonitors changed it."""
        text = render(self.port, self.sd_dir, self.monitors.values())
        if self.config.exists() and self.config.read_text() == text:
            return False
        _write_atomically(self.config, text)
        os.kill(self.pid, signal.SIGHUP)
        self.reloads += 1
        log.info("prometheus.yml: %d ServiceMonitor(s); reload %d sent", len(self.monitors), self.reloads)
        return True

    def write_targets(self, monitor: dict[str, Any], index: int, groups: list[dict[str, Any]]) -> bool:
        path = sd_file(self.sd_dir, monitor, index)
        text = json.dumps(groups, indent=1, sort_keys=True)
        if path.exists() and path.read_text() == text:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, text)
        return True

    def tick(self, core: Any, custom: Any) -> None:
        listing = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        self.monitors = {_key(m): m for m in listing["items"]}
        found: dict[str | None, list[dict[str, Any]]] = {}
        for monitor, index in jobs_of(self.monitors.values()):
            wanted = namespaces_of(monitor)
            groups: list[dict[str, Any]] = []
            for namespace in wanted if wanted is not None else [None]:
                if namespace not in found:
                    found[namespace] = self._discover(core, namespace)
                groups += found[namespace]
            # Targets first: the job that Prometheus loads next finds its file.
            self.write_targets(monitor, index, groups)
        self.update()

    @staticmethod
    def _discover(core: Any, namespace: str | None) -> list[dict[str, Any]]:
        def listed(kind: str) -> list[dict[str, Any]]:
            if namespace is None:
                method = getattr(core, f"list_{kind}_for_all_namespaces")
                result = method(_preload_content=False)
            else:
                result = getattr(core, f"list_namespaced_{kind}")(namespace, _preload_content=False)
            items: list[dict[str, Any]] = json.loads(result.data)["items"]
            return items

        def by_key(items: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
            return {(i["metadata"]["namespace"], i["metadata"]["name"]): i for i in items}

        return discover(listed("endpoints"), by_key(listed("service")), by_key(listed("pod")))

    def run(self) -> None:
        from kubernetes import client, config

        api_client = config.new_client_from_config(str(self.kubeconfig))
        core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
        while True:
            try:
                self.tick(core, custom)
            except Exception as error:  # API server restarting, CRD not there yet: next round
                log.warning("discovery: %s", error)
            time.sleep(DISCOVERY_SECONDS)


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ttsfleet.devcluster.addons_prometheus")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("sync", help="regenerate prometheus.yml from the cluster's ServiceMonitors")
    run.add_argument("--kubeconfig", type=Path, required=True)
    run.add_argument("--config", type=Path, required=True)
    run.add_argument("--prometheus-pid", type=int, required=True)
    run.add_argument("--port", type=int, required=True)
    parsed = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ConfigSync(parsed.kubeconfig, parsed.config, parsed.prometheus_pid, parsed.port).run()


if __name__ == "__main__":
    main()
