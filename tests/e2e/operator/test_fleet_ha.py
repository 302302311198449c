"""HA: two operator replicas in one kopf peering; only the higher priority acts, and when it dies
without a goodbye (SIGKILL) the standby takes over within the peering lifetime."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from fleet_helpers import apply, fleet, get, ready_fleet, wait_for
from operator_process import OperatorProcess

NAME = "ha"
PEERING = "ttsfleet-ha"
LIFETIME_SECONDS = 10
# kopf re-lists every watched resource on resuming; then one reconcile pass.
TAKEOVER_SLACK_SECONDS = 10
RESUMED = "Resuming operations after the pause"
DEMOTED_NAME = "handover"

log = logging.getLogger(__name__)


def peers(cluster: Any, namespace: str) -> dict[str, Any]:
    return dict(((get(cluster, namespace, "kopfpeering", PEERING) or {}).get("status")) or {})


def peering_replica(cluster: Any, namespace: str, role: str, priority: int) -> OperatorProcess:
    """One replica of the HA pair, with its own log (this run's lines only)."""
    log_path = cluster.logs_dir / f"operator-{role}.log"
    log_path.unlink(missing_ok=True)
    args = ("--peering", PEERING, "--peering-lifetime", str(LIFETIME_SECONDS), "--priority", str(priority))
    return OperatorProcess(cluster.env, log_path, args, namespace)


def test_standby_takes_over_when_the_active_replica_dies(
    cluster: Any, namespace: str, running_operator: OperatorProcess
) -> None:
    running_operator.stop()  # the module's standalone operator would act on this fleet too
    active = peering_replica(cluster, namespace, "ha-active", 100)
    standby = peering_replica(cluster, namespace, "ha-standby", 50)
    try:
        # The first replica creates the (namespaced) peering object itself.
        active.start()
        wait_for("the active replica in the peering", lambda: len(peers(cluster, namespace)) == 1, 20)
        standby.start()
        wait_for(
            "both replicas in the peering with their priorities",
            lambda: sorted(p.get("priority") for p in peers(cluster, namespace).values()) == [50, 100],
            20,
        )
        apply(cluster, namespace, fleet(NAME, replicas=1))
        ready_fleet(cluster, namespace, NAME, timeout=60)
        # Only the active replica acted. kopf starts a peering replica paused and resumes it only
        # when no live peer has a higher priority: the standby never resumed, never logged the fleet.
        assert f"{namespace}/{NAME}" in active.log_path.read_text(errors="replace")
        standby_log = standby.log_path.read_text(errors="replace")
        assert f"{namespace}/{NAME}" not in standby_log
        assert RESUMED not in standby_log
        assert standby.get("/healthz")

        # The active replica dies without removing itself from the peering; a change follows.
        active.kill()
        killed = time.monotonic()
        cluster.kubectl(
            "patch", "ttsd", NAME, "-n", namespace, "--type", "merge", "-p", json.dumps({"spec": {"replicas": 2}})
        )
        bound = LIFETIME_SECONDS + TAKEOVER_SLACK_SECONDS
        wait_for(
            "the standby to take over and scale the StatefulSet",
            lambda: (get(cluster, namespace, "sts", NAME) or {}).get("spec", {}).get("replicas") == 2,
            bound,
            interval=0.2,
        )
        takeover = time.monotonic() - killed
        log.info("HA takeover after SIGKILL: %.1f s (peering lifetime %d s)", takeover, LIFETIME_SECONDS)
        print(f"HA takeover after SIGKILL: {takeover:.1f} s (peering lifetime {LIFETIME_SECONDS} s)")
        assert RESUMED in standby.log_path.read_text(errors="replace")
        ready_fleet(cluster, namespace, NAME, timeout=60)
    finally:
        active.stop()
        standby.stop()
        running_operator.start()


def fleet_gauge(operator: OperatorProcess, namespace: str) -> float | None:
    labels = frozenset({("namespace", namespace), ("name", DEMOTED_NAME)})
    return operator.samples().get(("ttsfleet_operator_replicas_desired", labels))


def active_gauge(operator: OperatorProcess) -> float | None:
    return operator.samples().get(("ttsfleet_operator_active", frozenset()))


def reconciles(operator: OperatorProcess) -> float | None:
    return operator.samples().get(("ttsfleet_operator_reconcile_duration_seconds_count", frozenset()))


def test_a_replica_outranked_by_a_new_one_hands_over_and_stops_reporting(
    cluster: Any, namespace: str, running_operator: OperatorProcess
) -> None:
    """A rolling upgrade of the operator: the new pod joins with a higher priority, the old one
    pauses while it still runs. Only one replica may act, and only one may report the fleet."""
    running_operator.stop()
    old = peering_replica(cluster, namespace, "handover-old", 50)
    new = peering_replica(cluster, namespace, "handover-new", 100)
    try:
        old.start()
        wait_for("the old replica in the peering", lambda: len(peers(cluster, namespace)) == 1, 20)
        apply(cluster, namespace, fleet(DEMOTED_NAME, replicas=1))
        ready_fleet(cluster, namespace, DEMOTED_NAME, timeout=60)
        wait_for("the old replica to report the fleet", lambda: fleet_gauge(old, namespace) == 1, 20)
        assert active_gauge(old) == 1

        new.start()
        wait_for(
            "the new replica to report the fleet as the active one",
            lambda: fleet_gauge(new, namespace) == 1 and active_gauge(new) == 1,
            30,
        )
        wait_for(
            "the old replica to go standby and stop reporting the fleet",
            lambda: fleet_gauge(old, namespace) is None and active_gauge(old) == 0,
            30,
        )
        assert "Pausing operations in favour of" in old.log_path.read_text(errors="replace")

        # The old replica still runs, paused: a change is made by the new one alone.
        passes = reconciles(old)
        cluster.kubectl(
            "patch", "ttsd", DEMOTED_NAME, "-n", namespace, "--type", "merge", "-p", '{"spec": {"replicas": 2}}'
        )
        wait_for(
            "the new replica to scale the StatefulSet",
            lambda: (get(cluster, namespace, "sts", DEMOTED_NAME) or {}).get("spec", {}).get("replicas") == 2,
            20,
        )
        ready_fleet(cluster, namespace, DEMOTED_NAME, timeout=60)
        # The paused replica keeps resyncing (looking) without acting: two more of its resyncs.
        old.wait_for_resyncs()
        assert reconciles(old) == passes, "the paused replica reconciled"
        assert fleet_gauge(old, namespace) is None
    finally:
        old.stop()
        new.stop()
        running_operator.start()
