"""The operator's Prometheus metrics."""

from __future__ import annotations

from fixtures_operator import OWNER, FakeKube, fleet_body, minimal_spec
from prometheus_client import REGISTRY

from ttsfleet.operator.metrics import FleetTracker
from ttsfleet.operator.reconcile import Reconciler


def sample(metric: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, labels)


def ready(status: str) -> dict:
    return {"readyReplicas": 2, "conditions": [{"type": "Ready", "status": status}]}


def test_fleets_by_condition_and_replicas() -> None:
    tracker = FleetTracker()
    tracker.observe("m-ns", "a", 3, ready("True"))
    tracker.observe("m-ns", "b", 1, ready("False"))
    assert sample("ttsfleet_operator_fleets", condition="Ready", status="True") == 1
    assert sample("ttsfleet_operator_fleets", condition="Ready", status="False") == 1
    assert sample("ttsfleet_operator_replicas_desired", namespace="m-ns", name="a") == 3
    assert sample("ttsfleet_operator_replicas_ready", namespace="m-ns", name="a") == 2
    tracker.observe("m-ns", "b", 1, ready("True"))
    assert sample("ttsfleet_operator_fleets", condition="Ready", status="True") == 2
    assert sample("ttsfleet_operator_fleets", condition="Ready", status="False") == 0
    tracker.forget("m-ns", "a")
    assert sample("ttsfleet_operator_fleets", condition="Ready", status="True") == 1
    assert sample("ttsfleet_operator_replicas_desired", namespace="m-ns", name="a") is None


def test_reconcile_is_timed() -> None:
    before = sample("ttsfleet_operator_reconcile_duration_seconds_count") or 0
    kube = FakeKube()
    kube.put(fleet_body(minimal_spec()))
    Reconciler(kube, now=lambda: "2026-01-01T00:00:00Z").reconcile(OWNER.namespace, OWNER.name)  # type: ignore[arg-type]
    assert sample("ttsfleet_operator_reconcile_duration_seconds_count") == before + 1


def test_retain_forgets_every_other_fleet() -> None:
    tracker = FleetTracker()
    tracker.observe("r-ns", "kept", 2, ready("True"))
    tracker.observe("r-ns", "gone", 3, ready("True"))
    tracker.retain([("r-ns", "kept")])
    assert sample("ttsfleet_operator_replicas_desired", namespace="r-ns", name="kept") == 2
    assert sample("ttsfleet_operator_replicas_desired", namespace="r-ns", name="gone") is None
    tracker.retain([])  # gone standby: nothing per fleet, and no fleet counted
    assert sample("ttsfleet_operator_replicas_desired", namespace="r-ns", name="kept") is None
    assert sample("ttsfleet_operator_fleets", condition="Ready", status="True") == 0
