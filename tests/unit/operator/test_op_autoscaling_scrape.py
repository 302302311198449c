"""Autoscaling that cannot silently do nothing: a queue trigger with no scrape path is reported in
the fleet's Autoscaling condition; the trigger states how KEDA treats "no data"."""

from __future__ import annotations

from typing import Any

import pytest
from fixtures_operator import OWNER, FakeKube, fleet_body, minimal_spec

from ttsfleet.operator import kinds
from ttsfleet.operator.desired import scaledobject
from ttsfleet.operator.reconcile import Reconciler
from ttsfleet.operator.spec import parse_spec

NOW = "2026-01-01T00:00:00Z"
AUTOSCALING = {"enabled": True, "minReplicas": 1, "maxReplicas": 3}


def autoscaling_condition(monitoring: dict[str, Any], served: dict[kinds.Kind, bool]) -> dict[str, Any]:
    kube = FakeKube(served=served)
    kube.put(fleet_body(minimal_spec(replicas=1, autoscaling=AUTOSCALING, monitoring=monitoring)))
    Reconciler(kube, now=lambda: NOW, instance="test").reconcile(OWNER.namespace, OWNER.name)  # type: ignore[arg-type]
    body = kube.get(kinds.TTSDEPLOYMENT, OWNER.namespace, OWNER.name)
    assert body is not None
    return next(c for c in body["status"]["conditions"] if c["type"] == "Autoscaling")


@pytest.mark.parametrize(
    ("monitoring", "servicemonitor_served"),
    [({"serviceMonitor": False}, True), ({"serviceMonitor": True}, False)],
    ids=["servicemonitor-off", "servicemonitor-crd-missing"],
)
def test_queue_scaling_without_a_scrape_path_says_so(monitoring: dict[str, Any], servicemonitor_served: bool) -> None:
    cond = autoscaling_condition(monitoring, {kinds.SCALEDOBJECT: True, kinds.SERVICEMONITOR: servicemonitor_served})
    assert (cond["status"], cond["reason"]) == ("False", "QueueMetricNotScraped")
    assert "spec.monitoring.serviceMonitor" in cond["message"]
    assert "schedules only" in cond["message"]


def test_queue_scaling_with_a_servicemonitor_is_applied() -> None:
    cond = autoscaling_condition({"serviceMonitor": True}, {kinds.SCALEDOBJECT: True, kinds.SERVICEMONITOR: True})
    assert (cond["status"], cond["reason"]) == ("True", "ScaledObjectApplied")


def test_keda_missing_still_wins_over_the_scrape_path() -> None:
    cond = autoscaling_condition({"serviceMonitor": False}, {kinds.SCALEDOBJECT: False, kinds.SERVICEMONITOR: True})
    assert cond["reason"] == "KEDANotInstalled"


def test_queue_trigger_counts_no_series_as_zero_in_the_trigger_not_in_promql() -> None:
    spec = parse_spec(minimal_spec(replicas=1, autoscaling=AUTOSCALING))
    scaled = scaledobject.build(OWNER, spec, {})
    assert scaled is not None
    queue = next(t for t in scaled["spec"]["triggers"] if t["name"] == "queue-length")
    assert "vector(0)" not in queue["metadata"]["query"]
    assert queue["metadata"]["ignoreNullValues"] == "true"
