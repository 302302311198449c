"""No finalizer strands a fleet: deleting it while the operator is down completes at once."""

from __future__ import annotations

from typing import Any

from fleet_helpers import apply, fleet, items, ready_fleet, wait_for

from ttsfleet.operator import naming

NAME = "orphan-check"


def test_delete_while_operator_is_stopped(cluster: Any, namespace: str, running_operator: Any) -> None:
    apply(cluster, namespace, fleet(NAME, replicas=1))
    ttsd = ready_fleet(cluster, namespace, NAME)
    assert not ttsd["metadata"].get("finalizers")

    running_operator.stop()
    try:
        # Completes without the operator: nothing blocks the deletion.
        cluster.kubectl("delete", "ttsd", NAME, "-n", namespace, "--timeout=20s")
    finally:
        running_operator.start()

    selector = f"{naming.LABEL_INSTANCE}={NAME}"
    wait_for(
        "the children of the deleted fleet to be garbage-collected",
        lambda: not items(cluster, namespace, "statefulsets,services,configmaps,pods", "-l", selector),
        60,
    )
    # The restarted operator must not resurrect anything.
    assert not items(cluster, namespace, "statefulsets,services,configmaps", "-l", selector)
