"""Numbers for the people on call: the operator's /metrics, its liveness endpoint, and the
fleet's ServiceMonitor."""

from __future__ import annotations

import json
from typing import Any

from fleet_helpers import HANG_GUARD_SECONDS, apply, condition, fleet, get, ready_fleet, wait_for
from operator_process import OperatorProcess

from ttsfleet import contract

NAME = "oncall"


def test_operator_metrics_liveness_and_service_monitor(
    cluster: Any, namespace: str, running_operator: OperatorProcess
) -> None:
    apply(cluster, namespace, fleet(NAME, replicas=2, monitoring={"serviceMonitor": True, "interval": "30s"}))
    ready_fleet(cluster, namespace, NAME)

    # The ServiceMonitor CRD is installed here: the monitor exists and the condition says so.
    monitor = wait_for(
        "the ServiceMonitor", lambda: get(cluster, namespace, "servicemonitor", NAME), HANG_GUARD_SECONDS
    )
    assert monitor["spec"]["endpoints"][0]["port"] == contract.METRICS_PORT_NAME
    assert monitor["spec"]["endpoints"][0]["interval"] == "30s"
    monitoring = condition(get(cluster, namespace, "ttsd", NAME), "Monitoring")
    assert (monitoring.get("status"), monitoring.get("reason")) == ("True", "ServiceMonitorApplied"), monitoring

    fleet_labels = frozenset({("namespace", namespace), ("name", NAME)})

    def settled() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        samples = running_operator.samples()
        desired = samples.get(("ttsfleet_operator_replicas_desired", fleet_labels))
        ready = samples.get(("ttsfleet_operator_replicas_ready", fleet_labels))
        return samples if (desired, ready) == (2, 2) else None

    samples = wait_for("replicas desired/ready 2/2 for the fleet in /metrics", settled, HANG_GUARD_SECONDS)
    assert samples[("ttsfleet_operator_reconcile_duration_seconds_count", frozenset())] > 0
    assert samples[("ttsfleet_operator_reconcile_duration_seconds_sum", frozenset())] > 0
    ready_fleets = samples[("ttsfleet_operator_fleets", frozenset({("condition", "Ready"), ("status", "True")}))]
    assert ready_fleets >= 1
    assert ("ttsfleet_operator_fleets", frozenset({("condition", "Monitoring"), ("status", "True")})) in samples

    # Scaling moves the per-fleet gauges.
    cluster.kubectl("scale", "ttsd", NAME, "-n", namespace, "--replicas=3")
    wait_for(
        "replicas desired/ready 3/3 in /metrics",
        lambda: (
            (
                running_operator.samples().get(("ttsfleet_operator_replicas_desired", fleet_labels)),
                running_operator.samples().get(("ttsfleet_operator_replicas_ready", fleet_labels)),
            )
            == (3, 3)
        ),
        30,
    )

    # kopf's liveness endpoint answers (what the Deployment's livenessProbe calls).
    health = json.loads(running_operator.get("/healthz"))
    assert isinstance(health, dict)
