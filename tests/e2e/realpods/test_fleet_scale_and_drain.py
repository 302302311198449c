"""Scaling a fleet and draining its node, on real pods.

examples/cpu.yaml on the local cluster's real node, adapted as in test_fleet_serves_speech.py
(image, model source, the real node's toleration/nodeSelector) plus one test adaptation: the
worker's CPU request is lowered (``real_fleet.cpu_share(3)``) so three pods fit on the 2-core node
beside the operator pod and the model server. One fleet serves both tests (its cold start is the
expensive part); they run in file order: scale 1 -> 3 -> 1 -> 3, then drain the node with 3 pods.

Figures (cold start split into fetch and load + warmup, warm start, the operator's
status.coldStartP95Seconds) are printed, never asserted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ttsfleet.devcluster.cluster import ClusterHandle
from ttsfleet.devcluster.waiting import wait_for
from ttsfleet.operator import naming
from ttsfleet.realpods import operator_pod, real_fleet, stage

RELEASE = "ttsfleet-scale"
NAME = "tts-scale"
READY_TIMEOUT = 900
INSTANCE = f"app.kubernetes.io/instance={NAME}"
REFUSAL = "Cannot evict pod as it would violate the pod's disruption budget"
DOWNLOADED = '"cache filled"'
FOUND_WARM = '"cache already holds this revision"'


@dataclass
class Scaled:
    cluster: ClusterHandle
    namespace: str
    operator: operator_pod.OperatorPod
    cold: dict[str, real_fleet.StartTimes] = field(default_factory=dict)


@pytest.fixture(scope="module")
def scaled(cluster: ClusterHandle) -> Iterator[Scaled]:
    if reason := stage.unavailable(cluster):
        pytest.skip(reason)
    with stage.staged(cluster, "scale", RELEASE) as staged:
        body = staged.adapt("cpu.yaml")
        body["metadata"]["name"] = NAME
        # Test adaptation (the node has 2 cores): three pods must fit beside the operator and model server.
        body["spec"]["resources"]["cpu"] = real_fleet.cpu_share(3)
        staged.apply(body)
        state = Scaled(cluster, staged.namespace, staged.operator)
        try:
            _wait_fleet(state, 1, what=f"fleet {NAME} Ready with 1 pod")
            state.cold[f"{NAME}-0"] = real_fleet.start_times(_pods(state)[f"{NAME}-0"])
            yield state
        finally:
            cluster.kubectl("uncordon", cluster.real_nodes[0], check=False)


def _pods(state: Scaled) -> dict[str, dict[str, Any]]:
    items = real_fleet.get(state.cluster, state.namespace, "pods", "-l", INSTANCE)["items"]
    return {p["metadata"]["name"]: p for p in items if not p["metadata"].get("deletionTimestamp")}


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def _describe(state: Scaled) -> str:
    return real_fleet.describe(state.cluster, state.namespace) + "\noperator:\n" + state.operator.logs(state.cluster)


def _wait_fleet(state: Scaled, replicas: int, *, what: str) -> dict[str, dict[str, Any]]:
    """Exactly ordinals 0..replicas-1, all Ready, and the fleet's status says so for its generation."""
    wanted = {f"{NAME}-{i}" for i in range(replicas)}

    def done() -> dict[str, dict[str, Any]] | None:
        pods = _pods(state)
        fleet = real_fleet.get(state.cluster, state.namespace, "ttsd", NAME)
        status = fleet.get("status", {})
        settled = (
            set(pods) == wanted
            and all(_ready(p) for p in pods.values())
            and status.get("observedGeneration") == fleet["metadata"]["generation"]
            and (status.get("replicas"), status.get("readyReplicas")) == (replicas, replicas)
            and real_fleet.condition(fleet, "Ready").get("status") == "True"
        )
        return pods if settled else None

    return wait_for(done, what=what, timeout=READY_TIMEOUT, interval=2, describe=lambda: _describe(state))


def _scale(state: Scaled, replicas: int) -> None:
    # `kubectl scale` on the custom resource goes through its /scale subresource (what an HPA uses).
    state.cluster.kubectl("scale", "ttsd", NAME, "-n", state.namespace, f"--replicas={replicas}")


def _fetch_log(state: Scaled, pod: str) -> str:
    return state.cluster.kubectl("logs", "-n", state.namespace, pod, "-c", naming.FETCH_CONTAINER).stdout


def _caches(state: Scaled) -> dict[str, tuple[str, str]]:
    """Cache PVCs by ordinal suffix: (uid, phase)."""
    items = real_fleet.get(state.cluster, state.namespace, "pvc", "-l", INSTANCE)["items"]
    return {
        p["metadata"]["name"].rsplit("-", 1)[1]: (p["metadata"]["uid"], p["status"].get("phase", "")) for p in items
    }


def _p95(state: Scaled) -> str:
    status = real_fleet.get(state.cluster, state.namespace, "ttsd", NAME)["status"]
    return f"coldStartP95Seconds={status.get('coldStartP95Seconds')} (samples {status.get('coldStartSamples')})"


def test_scale_up_fetches_and_warms_scale_down_keeps_caches_and_returning_pods_start_warm(scaled: Scaled) -> None:
    state = scaled
    _scale(state, 3)
    pods = _wait_fleet(state, 3, what=f"fleet {NAME} scaled to 3 pods, all Ready")
    scale = real_fleet.get(state.cluster, state.namespace, "ttsd", NAME, "--subresource=scale")
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (3, 3)
    for ordinal in (1, 2):
        pod = f"{NAME}-{ordinal}"
        assert DOWNLOADED in _fetch_log(state, pod), "a new pod must fill its own cache"
        assert pods[pod]["spec"]["nodeName"] in state.cluster.real_nodes
        state.cold[pod] = real_fleet.start_times(pods[pod])
    cold_p95 = _p95(state)
    caches = _caches(state)
    assert set(caches) == {"0", "1", "2"} and all(phase == "Bound" for _, phase in caches.values()), caches

    _scale(state, 1)
    _wait_fleet(state, 1, what=f"fleet {NAME} scaled down to 1 pod")
    assert _caches(state) == caches, "scale-down must keep the cache PVCs of ordinals 1 and 2"

    _scale(state, 3)
    pods = _wait_fleet(state, 3, what=f"fleet {NAME} scaled back to 3 pods, all Ready")
    assert _caches(state) == caches, "returning ordinals must mount the same cache PVCs"
    warm = {}
    for ordinal in (1, 2):
        pod = f"{NAME}-{ordinal}"
        log = _fetch_log(state, pod)
        assert FOUND_WARM in log and "downloading" not in log, log
        warm[pod] = real_fleet.start_times(pods[pod])

    print(f"\nscale 1 -> 3 -> 1 -> 3 of {NAME} (worker cpu request {real_fleet.cpu_share(3)}):", flush=True)
    for times in sorted(state.cold.values(), key=lambda t: t.pod):
        print(f"  cold {times.line()}", flush=True)
    for times in sorted(warm.values(), key=lambda t: t.pod):
        print(f"  warm {times.line()} [fetcher: no download]", flush=True)
    print(f"  operator after the cold scale-up: {cold_p95}", flush=True)
    print(f"  operator after the warm return:   {_p95(state)}", flush=True)


@dataclass
class Availability:
    """The fleet's Ready pods (not being deleted), sampled until stopped; the fewest seen."""

    state: Scaled
    fewest: int = 99
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            self.fewest = min(self.fewest, sum(_ready(p) for p in _pods(self.state).values()))
            self.stop.wait(0.5)


def test_drain_of_the_node_refuses_to_break_the_disruption_budget(scaled: Scaled) -> None:
    """`kubectl drain` of the real node holding all 3 pods: the operator's PodDisruptionBudget
    (maxUnavailable 1) lets one eviction through and refuses the others for as long as drain
    retries (the evicted pod cannot come back: the only real node is cordoned).

    The drain is limited to the fleet's pods (--pod-selector): the model server is a bare Pod, which
    drain refuses to evict without --force before evicting anything, and evicting the operator's
    pod would leave it Pending on the cordoned node (no other node runs containers) with nobody to
    reconcile the fleet. A real cluster's operator runs elsewhere; what is under test is the budget."""
    state = scaled
    node = state.cluster.real_nodes[0]
    before = _wait_fleet(state, 3, what=f"fleet {NAME} with 3 Ready pods before the drain")
    assert all(p["spec"]["nodeName"] == node for p in before.values())

    def budget_settled() -> dict[str, Any] | None:
        pdb = real_fleet.get(state.cluster, state.namespace, "pdb", NAME)
        status = pdb.get("status", {})
        return pdb if (status.get("currentHealthy"), status.get("disruptionsAllowed")) == (3, 1) else None

    pdb = wait_for(budget_settled, what=f"PodDisruptionBudget {NAME}: 3 healthy, 1 disruption allowed", timeout=120)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["metadata"]["ownerReferences"][0]["kind"] == "TTSDeployment"

    watch = Availability(state)
    watcher = threading.Thread(target=watch.run, daemon=True)
    watcher.start()
    try:
        drain = state.cluster.kubectl(
            "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", f"--pod-selector={INSTANCE}",
            "--timeout=45s", check=False, timeout=180,
        )  # fmt: skip
    finally:
        watch.stop.set()
        watcher.join(30)
        state.cluster.kubectl("uncordon", node)
    output = drain.stdout + drain.stderr
    evicted = sorted({p for p in before if f"pod/{p} evicted" in output})
    refusals = [line for line in output.splitlines() if REFUSAL in line]
    refused = sorted({p for p in before if any(f'pods/"{p}"' in line for line in refusals)})
    print(
        f"\ndrain of {node} with 3 pods (PDB maxUnavailable 1): exit {drain.returncode}, evicted {evicted}, "
        f"refused {refused}; fewest Ready pods during the drain: {watch.fewest}\n{output.strip()[-1500:]}",
        flush=True,
    )
    assert drain.returncode != 0, "drain must not complete while the budget forbids evicting the rest"
    assert REFUSAL in output
    assert len(evicted) <= 1 and len(refused) >= 2, output
    assert watch.fewest >= 2, "the fleet dropped below its budget's minimum available"
    kept = _pods(state)
    assert sum(kept[p]["metadata"]["uid"] == before[p]["metadata"]["uid"] for p in before if p in kept) >= 2

    # Uncordoned, the evicted ordinal comes back on the node (its warm start is measured in the
    # scale test; waiting for Ready here would only add minutes to the suite).
    def rescheduled() -> bool:
        pods = _pods(state)
        return all(
            p in pods and pods[p]["metadata"]["uid"] != before[p]["metadata"]["uid"] and pods[p]["spec"].get("nodeName")
            for p in evicted
        )

    wait_for(rescheduled, what=f"evicted {evicted} recreated on {node} after uncordon", timeout=300, interval=2)
