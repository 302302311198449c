"""An operator that leaves converged fleets alone: no write request while nothing changes, not
with more Ready pods than the cold-start sampler keeps, and not after a restart.

The operator runs as its own ServiceAccount, and the API server's priority-and-fairness counters
count that identity's reads and writes (ttsfleet.devcluster.traffic), so "no write" is what the
API server saw, not what the operator believes it did. "Nothing happened" is read after the
operator's own positive signal that it looked: ``ttsfleet_operator_resyncs_total`` counts resyncs
whose passes over every fleet all finished.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fleet_helpers import apply, condition, fleet, get, items, wait_for
from operator_process import OperatorProcess

from ttsfleet.devcluster import traffic

# No GPU (the three kwok nodes have 12), small requests: 25 pods fit, each with its local PV.
SMALL = {"gpu": 0, "cpu": "100m", "memory": "128Mi"}
QUIET_RESYNCS = 3  # idle resync periods watched (5 s each: tests/support/operator_process.py)
RESYNCS: tuple[str, frozenset[tuple[str, str]]] = ("ttsfleet_operator_resyncs_total", frozenset())
STATUS_WRITES: tuple[str, frozenset[tuple[str, str]]] = ("ttsfleet_operator_status_writes_total", frozenset())


@pytest.fixture(scope="module")
def identity(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> traffic.Identity:
    path = tmp_path_factory.mktemp("identity") / "operator.kubeconfig"
    return traffic.issue(cluster, "ttsfleet-quiet-operator", "ttsfleet-quiet", path)


@pytest.fixture
def counted_operator(
    cluster: Any, crds: None, namespace: str, identity: traffic.Identity, operator: OperatorProcess
) -> Iterator[OperatorProcess]:
    """The operator for this test's namespace alone, under the counted identity (the module's
    cluster-wide operator is stopped meanwhile, so it writes nothing here either)."""
    operator.stop()
    proc = OperatorProcess(
        {**cluster.env, "KUBECONFIG": str(identity.kubeconfig)},
        cluster.logs_dir / f"operator-quiet-{namespace}.log",
        namespace=namespace,
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def resyncs(proc: OperatorProcess) -> float:
    return proc.samples().get(RESYNCS, 0.0)


def wait_resyncs(proc: OperatorProcess, count: int, what: str) -> None:
    start = resyncs(proc)
    wait_for(f"{count} completed resyncs {what}", lambda: resyncs(proc) >= start + count, 20 * count)


def settled(cluster: Any, namespace: str, names: list[str], replicas: int) -> bool:
    fleets = {f["metadata"]["name"]: f for f in items(cluster, namespace, "ttsd")}
    for name in names:
        obj = fleets.get(name)
        status = (obj or {}).get("status") or {}
        if condition(obj, "Ready").get("status") != "True" or condition(obj, "Progressing").get("status") != "False":
            return False
        if status.get("readyReplicas") != replicas or len(status.get("sampledPods") or []) != min(replicas, 20):
            return False
    return True


def test_a_fleet_of_25_ready_pods_writes_nothing_while_idle(
    cluster: Any, namespace: str, identity: traffic.Identity, counted_operator: OperatorProcess
) -> None:
    """More Ready pods than the 20 cold-start samples kept: the sampler used to re-sample the
    older pods on every pass, and each status write triggered the next pass."""
    apply(cluster, namespace, fleet("crowd", replicas=25, resources=SMALL))
    wait_for("25 Ready pods and a settled status", lambda: settled(cluster, namespace, ["crowd"], 25), 240)
    wait_resyncs(counted_operator, 1, "after the fleet settled")

    version = (get(cluster, namespace, "ttsd", "crowd") or {})["metadata"]["resourceVersion"]
    writes = counted_operator.samples().get(STATUS_WRITES, 0.0)
    before = traffic.requests(cluster, identity)
    wait_resyncs(counted_operator, QUIET_RESYNCS, "while idle")
    during = traffic.requests(cluster, identity) - before

    assert during.writes == 0, f"the operator made {during.writes:.0f} write requests to an idle fleet"
    assert counted_operator.samples().get(STATUS_WRITES, 0.0) == writes
    assert (get(cluster, namespace, "ttsd", "crowd") or {})["metadata"]["resourceVersion"] == version


def test_a_restart_with_converged_fleets_makes_no_writes(
    cluster: Any, namespace: str, identity: traffic.Identity, counted_operator: OperatorProcess
) -> None:
    names = [f"calm-{i}" for i in range(12)]
    apply(cluster, namespace, *(fleet(name, replicas=1, resources=SMALL) for name in names))
    wait_for(f"{len(names)} fleets settled", lambda: settled(cluster, namespace, names, 1), 240)
    wait_resyncs(counted_operator, 1, "after the fleets settled")

    counted_operator.stop()
    before = traffic.requests(cluster, identity)
    counted_operator.start()
    # The first completed resync comes after the start-up passes over every fleet.
    wait_resyncs(counted_operator, 1 + QUIET_RESYNCS, "after the restart")
    during = traffic.requests(cluster, identity) - before

    assert during.writes == 0, f"the restarted operator made {during.writes:.0f} write requests"
    assert during.reads > 0  # the counter sees this identity at all (its lists and watches)
    assert settled(cluster, namespace, names, 1)


def test_drift_of_every_child_kind_is_repaired_with_the_cache(
    cluster: Any, namespace: str, counted_operator: OperatorProcess
) -> None:
    """Each child kind edited by hand comes back; deleted, it is recreated."""
    apply(cluster, namespace, fleet("drift", replicas=1, resources=SMALL))
    wait_for("the fleet settled", lambda: settled(cluster, namespace, ["drift"], 1), 120)
    children = items(cluster, namespace, "statefulsets,services,configmaps,poddisruptionbudgets,networkpolicies")
    owned = [
        c
        for c in children
        if any(ref.get("kind") == "TTSDeployment" for ref in c["metadata"].get("ownerReferences") or [])
    ]
    assert {c["kind"] for c in owned} >= {"StatefulSet", "Service", "ConfigMap"}
    for child in owned:
        kind, name = child["kind"].lower(), child["metadata"]["name"]
        labels = child["metadata"]["labels"]
        key = next(k for k in labels if k.endswith("/managed-by"))
        # Taking a label the operator sets (the one its watches select on): it is put back.
        cluster.kubectl("label", "--overwrite", kind, name, "-n", namespace, f"{key}=someone-else")
        wait_for(
            f"{kind}/{name}'s label to be repaired",
            lambda k=kind, n=name, label=key, v=labels[key]: (
                (get(cluster, namespace, k, n) or {}).get("metadata", {}).get("labels", {}).get(label) == v
            ),
            10,
        )
    for child in owned:
        kind, name, uid = child["kind"].lower(), child["metadata"]["name"], child["metadata"]["uid"]
        cluster.kubectl("delete", kind, name, "-n", namespace, "--wait=true")
        wait_for(
            f"{kind}/{name} to be recreated",
            lambda k=kind, n=name, u=uid: (get(cluster, namespace, k, n) or {}).get("metadata", {}).get("uid", u) != u,
            10,
        )
