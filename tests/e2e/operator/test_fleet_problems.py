"""Runtime problems the schema cannot catch: one bad fleet never disturbs another."""

from __future__ import annotations

from typing import Any

import kubelet_reports
from fleet_helpers import (
    HANG_GUARD_SECONDS,
    PINNED_REVISION,
    apply,
    condition,
    fleet,
    get,
    items,
    ready_fleet,
    wait_for,
)


def test_missing_secret_is_reported_while_another_fleet_stays_ready(
    cluster: Any, namespace: str, running_operator: Any
) -> None:
    apply(
        cluster,
        namespace,
        fleet("healthy"),
        fleet(
            "needs-secret",
            model={"source": "hf://org/private", "revision": PINNED_REVISION, "secretRef": "model-credentials"},
        ),
    )
    ready_fleet(cluster, namespace, "healthy")
    # The operator cannot read Secrets: it learns of the missing one from the kubelet's report on
    # the pod (kubelet_reports explains why the test writes it on kwok nodes).
    kubelet_reports.missing_secret(cluster, namespace, "needs-secret-0", "model-credentials")

    def not_ready_for_secret() -> dict[str, Any] | None:
        ready = condition(get(cluster, namespace, "ttsd", "needs-secret"), "Ready")
        return ready if ready.get("status") == "False" and ready.get("reason") == "SecretNotFound" else None

    ready = wait_for("needs-secret to report Ready=False reason SecretNotFound", not_ready_for_secret, 60)
    assert "model-credentials" in ready["message"]
    degraded = condition(get(cluster, namespace, "ttsd", "needs-secret"), "Degraded")
    assert degraded["status"] == "True"

    def warning_event() -> list[dict[str, Any]]:
        return [
            e
            for e in items(cluster, namespace, "events", "--field-selector", "involvedObject.name=needs-secret")
            if e.get("reason") == "SecretNotFound" and e.get("type") == "Warning"
        ]

    found = wait_for("a SecretNotFound warning Event", warning_event, HANG_GUARD_SECONDS)
    # One Event per condition that flipped (Ready, Degraded), not one per reconcile pass.
    assert sorted(e["message"].split(" is ")[0] for e in found) in (
        ["Degraded", "Ready"],
        ["Ready"],
        ["Degraded"],
    )
    assert condition(get(cluster, namespace, "ttsd", "healthy"), "Ready")["status"] == "True"

    # The Secret appears and the pod starts (a kubelet retries on every sync; here the stuck pod is
    # replaced, and kwok starts the new one): the fleet turns Ready without any change to it.
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "model-credentials",
        "-n",
        namespace,
        "--from-literal=HF_TOKEN=x",
    )
    cluster.kubectl("delete", "pod", "needs-secret-0", "-n", namespace, "--wait=false")
    ready_fleet(cluster, namespace, "needs-secret", timeout=60)


def test_no_matching_nodes_is_reported(cluster: Any, namespace: str, running_operator: Any) -> None:
    apply(cluster, namespace, fleet("nowhere", nodeSelector={"pool": "does-not-exist"}))

    def unschedulable() -> dict[str, Any] | None:
        ready = condition(get(cluster, namespace, "ttsd", "nowhere"), "Ready")
        return ready if ready.get("reason") == "Unschedulable" else None

    ready = wait_for("Ready=False reason Unschedulable", unschedulable, 60)
    assert ready["status"] == "False"
    assert "nowhere-0" in ready["message"]
