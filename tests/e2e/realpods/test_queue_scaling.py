"""Queue scaling on real pods, through the real products: no hand-made HPA anywhere.

Clients stream to the fleet through its client Service → each pod's ``tts_queue_length`` rises →
Prometheus (Debian's 2.42, its scrape jobs generated from the fleet's ServiceMonitor, as the
Prometheus Operator does) scrapes it → the HPA that KEDA v2.18.0 made reads the ScaledObject's
prometheus trigger through KEDA's metrics adapter (aggregation layer) → ``/scale`` on the
TTSDeployment → operator → StatefulSet → a second pod fetches, loads, warms up → Ready. Load stops
→ the queue drains → back to one pod after the stabilization window.

``examples/autoscaling.yaml`` is adapted for the local real node, and only where it must be:
image, model source and the node's toleration/nodeSelector (``real_fleet.adapt``); Prometheus'
address (KEDA runs next to the control plane, without cluster DNS); CPU instead of a GPU at half
a CPU per pod, and at most 2 pods (the node has 2 cores beside the operator and the model server);
a 5 s scrape and polling interval and a short scale-down window (a CI run must not wait 10 min);
and no schedules (the example's evening window would scale the fleet whatever its queue, depending
on the hour). Its target of 4 queued requests per pod stays: 6 clients exceed it on one pod.

The add-ons run on the session's cluster (``addons_cluster.attached``): it holds the machine's
only real node. Figures (load start → new pod Ready, split into scrape, HPA sync, operator and
cold start) are printed, never asserted. KEDA's pollingInterval is not on the way up from one pod:
the HPA asks KEDA's adapter at its own 15 s sync and KEDA queries Prometheus then (the trigger
does not set useCachedMetrics); polling decides activation between 0 and 1 pods only.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
import yaml

from ttsfleet import contract
from ttsfleet.devcluster import addons_cluster
from ttsfleet.devcluster.cluster import ClusterHandle
from ttsfleet.devcluster.waiting import wait_for
from ttsfleet.operator import naming
from ttsfleet.realpods import operator_pod, real_fleet
from ttsfleet.realpods.stage import Stage as RealPodStage
from ttsfleet.realpods.stage import staged, unavailable

RELEASE = "ttsfleet-queue"
READY_TIMEOUT = 900
# The example's tts_queue_length target per pod.
TARGET = int(real_fleet.load_example("autoscaling.yaml")["spec"]["autoscaling"]["targetQueueLength"])
CLIENTS = 6  # open streams: 6 > 4 on one pod; ceil(6 / 4) = 2 pods, where it stays while they stream
STABILIZATION = 20
TEXT = " ".join(f"Sentence {n} keeps this stream open while the fleet scales out." for n in range(1, 7))


@dataclass
class Stage:
    cluster: ClusterHandle
    namespace: str
    prometheus: str
    operator: operator_pod.OperatorPod
    name: str = ""


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def stage(cluster: ClusterHandle) -> Iterator[Stage]:
    if reason := unavailable(cluster):
        pytest.skip(reason)
    if os.environ.get("TTSFLEET_TEST_KUBECONFIG"):
        pytest.skip("the Prometheus and KEDA add-ons start next to a local cluster's control plane")
    started = time.monotonic()
    with addons_cluster.attached(cluster, ("prometheus", "keda")) as info:
        print(f"\nprometheus + KEDA up on the session's cluster in {time.monotonic() - started:.1f}s", flush=True)
        with staged(cluster, "queue", RELEASE) as ready:
            state = Stage(cluster, ready.namespace, info["prometheus"]["url"], ready.operator)
            try:
                state.name = _apply_fleet(state, ready)
                yield state
            finally:
                # While KEDA still runs: its finalizer on the ScaledObject needs its operator.
                at = ("-n", ready.namespace)
                cluster.kubectl("delete", "ttsd", "--all", *at, "--wait=true", "--timeout=120s", check=False)
                cluster.kubectl("delete", "scaledobject", "--all", *at, "--timeout=60s", check=False)


def _apply_fleet(state: Stage, ready: RealPodStage) -> str:
    body = ready.adapt("autoscaling.yaml")
    spec = body["spec"]
    # CPU, not a GPU; two pods at half a CPU fit the 2-core node beside the operator and the model
    # server (no CPU limit: a pod still uses what is free).
    spec["resources"] = {"gpu": 0, "cpu": "500m", "memory": "4Gi"}
    scaling = spec["autoscaling"]
    scaling.pop("schedules")
    scaling.update(
        maxReplicas=2,
        pollingIntervalSeconds=5,
        cooldownSeconds=30,
        scaleDownStabilizationSeconds=STABILIZATION,
        prometheusAddress=state.prometheus,
    )
    spec["monitoring"]["interval"] = "5s"
    state.cluster.kubectl("apply", "-n", state.namespace, "-f", "-", input=yaml.safe_dump(body))
    name: str = body["metadata"]["name"]
    return name


def _describe(state: Stage) -> str:
    extra = state.cluster.kubectl("get", "hpa,scaledobject", "-n", state.namespace, "-o", "yaml", check=False).stdout[
        -3000:
    ]
    return real_fleet.describe(state.cluster, state.namespace) + extra + state.operator.logs(state.cluster)


def _pods(state: Stage) -> dict[str, dict[str, Any]]:
    items = real_fleet.get(state.cluster, state.namespace, "pods", "-l", f"app.kubernetes.io/instance={state.name}")
    return {p["metadata"]["name"]: p for p in items["items"] if not p["metadata"].get("deletionTimestamp")}


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def _at(state: Stage, replicas: int) -> bool:
    """spec (written by KEDA's HPA), StatefulSet, and exactly ``replicas`` pods, all Ready."""
    fleet = real_fleet.get(state.cluster, state.namespace, "ttsd", state.name)
    sts = real_fleet.get(state.cluster, state.namespace, "sts", state.name)
    pods = _pods(state)
    return (
        fleet["spec"].get("replicas") == replicas
        and sts["spec"]["replicas"] == replicas
        and len(pods) == replicas
        and all(_ready(p) for p in pods.values())
    )


def _prometheus(stage: Stage, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{stage.prometheus}{path}{query}", timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def _headless(state: Stage) -> str:
    return naming.headless_service_name(naming.Owner(state.name, state.namespace, ""))


def _service_address(state: Stage) -> str:
    service = real_fleet.get(state.cluster, state.namespace, "service", state.name)
    return f"{service['spec']['clusterIP']}:{contract.GRPC_PORT}"


@dataclass
class Load:
    """``CLIENTS`` clients, each streaming one request after another through the Service."""

    address: str
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]
        for thread in self.threads:
            thread.start()

    def _client(self) -> None:
        from ttsfleet.worker.client import TtsClient

        while not self.stop.is_set():
            try:
                with TtsClient(self.address) as client:
                    chunks = list(client.stream(TEXT))
                assert chunks and chunks[-1].final, "stream ended without FINAL"
                self.ok += 1
            except Exception as error:
                self.failed.append(repr(error))
                time.sleep(1)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(600)


def _first_sample_above(state: Stage, pod: str, since: float) -> float | None:
    """When Prometheus first scraped ``pod``'s queue above the target (the sample's own time)."""
    selector = (
        f'{contract.METRIC_QUEUE_LENGTH}{{namespace="{state.namespace}",service="{_headless(state)}",pod="{pod}"}}'
    )
    for series in _prometheus(state, "/api/v1/query", query=f"{selector}[30m]")["result"]:
        for stamp, value in series["values"]:
            if float(stamp) >= since and float(value) > TARGET:
                return float(stamp)
    return None


def _hpa_events(state: Stage) -> list[dict[str, Any]]:
    events = real_fleet.get(state.cluster, state.namespace, "events", "--field-selector", "reason=SuccessfulRescale")[
        "items"
    ]
    return sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def test_prometheus_scrapes_the_fleet_through_its_servicemonitor(stage: Stage) -> None:
    wait_for(
        lambda: _at(stage, 1), what="the autoscaled fleet Ready at minReplicas 1", timeout=READY_TIMEOUT, interval=2,
        describe=lambda: _describe(stage),
    )  # fmt: skip
    job = f"serviceMonitor/{stage.namespace}/{stage.name}/0"

    def scraped() -> dict[str, Any] | None:
        targets = _prometheus(stage, "/api/v1/targets", state="active")["activeTargets"]
        up = [t for t in targets if t["scrapePool"] == job and t["health"] == "up"]
        return up[0] if up else None

    target = wait_for(scraped, what=f"an up target in scrape pool {job}", timeout=120, interval=2)
    labels = target["labels"]
    assert (labels["namespace"], labels["service"], labels["pod"]) == (
        stage.namespace,
        _headless(stage),
        f"{stage.name}-0",
    ), labels
    assert labels["endpoint"] == contract.METRICS_PORT_NAME
    # The very query the operator put in the ScaledObject answers from these series.
    scaled = real_fleet.get(stage.cluster, stage.namespace, "scaledobject", stage.name)
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"]
    query = trigger["metadata"]["query"]

    def answered() -> list[Any] | None:
        # A target turns "up" as its scrape reports, which may come before the samples of that
        # scrape are queryable: wait for the series, one scrape interval at most.
        result: list[Any] = _prometheus(stage, "/api/v1/query", query=query)["result"]
        return result or None

    result = wait_for(answered, what=f"Prometheus answering {query}", timeout=60, interval=1)
    assert len(result) == 1, result
    autoscaling = real_fleet.condition(
        real_fleet.get(stage.cluster, stage.namespace, "ttsd", stage.name), "Autoscaling"
    )
    assert autoscaling.get("status") == "True", autoscaling
    pod = _pods(stage)[f"{stage.name}-0"]
    ready = next(_ts(c["lastTransitionTime"]) for c in pod["status"]["conditions"] if c["type"] == "Ready")
    print(
        f"\nPrometheus scrapes {target['scrapeUrl']} as {labels}; {stage.name}-0 (no load) Ready "
        f"{(ready - _ts(pod['metadata']['creationTimestamp'])).total_seconds():.0f}s after creation",
        flush=True,
    )


def test_queue_above_target_scales_out_through_keda_and_back_after_the_load(stage: Stage) -> None:
    wait_for(lambda: _at(stage, 1), what="the fleet at 1 Ready pod", timeout=READY_TIMEOUT, interval=2)
    hpa = wait_for(
        lambda: real_fleet.get(stage.cluster, stage.namespace, "hpa", f"keda-hpa-{stage.name}"),
        what="the HPA KEDA made", timeout=60,
    )  # fmt: skip
    assert [(o["kind"], o["name"]) for o in hpa["metadata"]["ownerReferences"]] == [("ScaledObject", stage.name)]
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "TTSDeployment"
    second = f"{stage.name}-1"
    load = Load(_service_address(stage))
    load_start = time.time()
    load.start()
    try:
        wait_for(
            lambda: _at(stage, 2), what="KEDA's HPA scaling the fleet to 2 Ready pods under load",
            timeout=READY_TIMEOUT, interval=2, describe=lambda: _describe(stage),
        )  # fmt: skip
        ok_at_two = load.ok
        wait_for(lambda: load.ok > ok_at_two + 1 or load.failed, what="streams served by two pods", timeout=300)
    finally:
        load.finish()
    load_end = time.time()

    rescales = _hpa_events(stage)
    up = next(e for e in rescales if "New size: 2" in e["message"])
    assert "external metric" in up["message"] and "above target" in up["message"], up["message"]
    scaled = real_fleet.get(stage.cluster, stage.namespace, "scaledobject", stage.name)
    assert real_fleet.condition(scaled, "Ready").get("status") == "True", scaled.get("status")
    pod = _pods(stage)[second]
    created = _ts(pod["metadata"]["creationTimestamp"]).timestamp()
    ready = next(_ts(c["lastTransitionTime"]) for c in pod["status"]["conditions"] if c["type"] == "Ready").timestamp()
    fetch = pod["status"]["initContainerStatuses"][0]["state"]["terminated"]
    fetched = _ts(fetch["finishedAt"]).timestamp()
    scraped = _first_sample_above(stage, f"{stage.name}-0", load_start)
    decided = _ts(up.get("lastTimestamp") or up["eventTime"]).timestamp()

    # Load stops: the queue drains, and after the stabilization window the HPA goes back to 1.
    wait_for(
        lambda: _at(stage, 1), what="the fleet back at 1 pod after the load", timeout=STABILIZATION + 300,
        interval=2, describe=lambda: _describe(stage),
    )  # fmt: skip
    down_at = time.time()
    down = [e for e in _hpa_events(stage) if "New size: 1" in e["message"]]
    assert down and "below target" in down[-1]["message"], [e["message"] for e in _hpa_events(stage)]

    print(
        f"\nqueue scaling: load start -> {second} Ready in {ready - load_start:.0f}s: "
        f"first scrape above target {scraped - load_start if scraped else float('nan'):.0f}s, "
        f"HPA rescale (adapter -> KEDA -> Prometheus at the HPA's 15 s sync) {decided - (scraped or load_start):.0f}s "
        f"later, pod created {created - decided:.0f}s after that (HPA -> /scale -> operator -> StatefulSet), "
        f"cold start {ready - created:.0f}s (fetch {fetched - _ts(fetch['startedAt']).timestamp():.0f}s, "
        f"load + warmup {ready - fetched:.0f}s); "
        f"load stop -> back to 1 pod in {down_at - load_end:.0f}s (stabilization {STABILIZATION}s); "
        f"streams ok={load.ok} failed={len(load.failed)}",
        flush=True,
    )
    assert load.failed == [], load.failed[:5]
