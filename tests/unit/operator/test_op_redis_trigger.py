"""The redis trigger: a Redis list or Stream of pending jobs in front of the fleet, its password
only ever a Secret reference (a TriggerAuthentication the operator owns; KEDA reads the Secret)."""

from __future__ import annotations

from typing import Any

import pytest
from fixtures_operator import OWNER, FakeKube, fleet_body, minimal_spec

from ttsfleet.operator import desired, kinds, naming
from ttsfleet.operator.desired import scaledobject, triggerauthentication
from ttsfleet.operator.reconcile import Reconciler
from ttsfleet.operator.spec import parse_spec

NOW = "2026-01-01T00:00:00Z"
ADDRESS = "redis.jobs.svc.cluster.local:6379"


def spec_with(redis: dict[str, Any], **autoscaling: Any) -> Any:
    scaling = {"enabled": True, "minReplicas": 0, "maxReplicas": 5, "redis": redis, **autoscaling}
    return parse_spec(minimal_spec(autoscaling=scaling))


def triggers(spec: Any) -> dict[str, dict[str, Any]]:
    obj = scaledobject.build(OWNER, spec, {})
    assert obj is not None
    return {t["name"]: t for t in obj["spec"]["triggers"]}


def test_a_list_becomes_keda_redis_trigger_with_a_per_replica_target() -> None:
    spec = spec_with({"address": ADDRESS, "listName": "tts-jobs", "targetLength": 3, "activationLength": 1})
    redis = triggers(spec)["redis-queue"]
    assert redis["type"] == "redis"
    assert redis["metricType"] == "AverageValue"  # jobs / targetLength = replicas
    assert redis["metadata"] == {
        "address": ADDRESS,
        "databaseIndex": "0",
        "listName": "tts-jobs",
        "listLength": "3",
        "activationListLength": "1",
    }
    assert "authenticationRef" not in redis
    assert triggerauthentication.build(OWNER, spec) is None


def test_a_stream_scales_on_its_consumer_groups_pending_entries() -> None:
    spec = spec_with(
        {"address": "10.0.0.7:6380", "stream": {"name": "jobs", "consumerGroup": "tts"}, "databaseIndex": 2}
    )
    redis = triggers(spec)["redis-queue"]
    assert redis["type"] == "redis-streams"
    assert redis["metadata"] == {
        "address": "10.0.0.7:6380",
        "databaseIndex": "2",
        "stream": "jobs",
        "consumerGroup": "tts",
        "pendingEntriesCount": "5",
        "activationLagCount": "0",
    }


def test_tls_and_acl_user_are_passed_to_keda() -> None:
    metadata = triggers(spec_with({"address": ADDRESS, "listName": "q", "enableTLS": True, "username": "tts"}))[
        "redis-queue"
    ]["metadata"]
    assert (metadata["enableTLS"], metadata["username"]) == ("true", "tts")


def test_the_password_is_a_secret_reference_in_an_owned_triggerauthentication() -> None:
    spec = spec_with({"address": ADDRESS, "listName": "q", "passwordSecretRef": {"name": "redis", "key": "pw"}})
    auth = triggerauthentication.build(OWNER, spec)
    assert auth is not None
    assert (auth["kind"], auth["metadata"]["name"]) == ("TriggerAuthentication", "fleet-redis")
    assert naming.is_owned_by(auth, OWNER)
    assert auth["spec"] == {"secretTargetRef": [{"parameter": "password", "name": "redis", "key": "pw"}]}
    redis = triggers(spec)["redis-queue"]
    assert redis["authenticationRef"] == {"name": "fleet-redis", "kind": "TriggerAuthentication"}
    assert "password" not in redis["metadata"]
    # Applied before the ScaledObject that names it.
    order = [c["kind"] for c in desired.build_all(OWNER, spec)]
    assert order.index("TriggerAuthentication") < order.index("ScaledObject")


def test_no_triggerauthentication_without_autoscaling() -> None:
    scaling = {
        "enabled": False,
        "redis": {"address": ADDRESS, "listName": "q", "passwordSecretRef": {"name": "r", "key": "k"}},
    }
    spec = parse_spec(minimal_spec(autoscaling=scaling))
    assert triggerauthentication.build(OWNER, spec) is None
    assert not [c for c in desired.build_all(OWNER, spec) if c["kind"] in ("ScaledObject", "TriggerAuthentication")]


@pytest.mark.parametrize(
    ("service_monitor", "expected"), [(False, {"redis-queue"}), (True, {"queue-length", "redis-queue"})]
)
def test_the_per_pod_queue_trigger_only_where_something_scrapes_it(service_monitor: bool, expected: set[str]) -> None:
    """An unscraped (or unreachable) Prometheus trigger would hold off every scale-down."""
    scaling = {"enabled": True, "minReplicas": 1, "redis": {"address": ADDRESS, "listName": "q"}}
    spec = parse_spec(minimal_spec(autoscaling=scaling, monitoring={"serviceMonitor": service_monitor}))
    assert set(triggers(spec)) == expected


def test_schedules_keep_their_cron_triggers_next_to_redis() -> None:
    spec = spec_with(
        {"address": ADDRESS, "listName": "q"},
        schedules=[{"name": "am", "start": "0 8 * * *", "end": "0 12 * * *", "replicas": 2}],
    )
    assert list(triggers(spec)) == ["redis-queue", "schedule-am"]


def reconciled(spec: dict[str, Any]) -> FakeKube:
    kube = FakeKube()
    kube.put(fleet_body(spec))
    Reconciler(kube, now=lambda: NOW, instance="test").reconcile(OWNER.namespace, OWNER.name)  # type: ignore[arg-type]
    return kube


def test_reconcile_applies_the_triggerauthentication_and_prunes_it_when_the_password_goes() -> None:
    redis = {"address": ADDRESS, "listName": "q", "passwordSecretRef": {"name": "redis", "key": "pw"}}
    spec = minimal_spec(autoscaling={"enabled": True, "minReplicas": 0, "redis": redis})
    kube = reconciled(spec)
    key = (kinds.TRIGGERAUTHENTICATION, OWNER.namespace, "fleet-redis")
    assert key in kube.objects
    body = kube.get(kinds.TTSDEPLOYMENT, OWNER.namespace, OWNER.name)
    assert body is not None
    autoscaling = next(c for c in body["status"]["conditions"] if c["type"] == "Autoscaling")
    # No ServiceMonitor, but the Redis queue is a real signal: not "schedules only".
    assert (autoscaling["status"], autoscaling["reason"]) == ("True", "ScaledObjectApplied")
    assert "Redis" in autoscaling["message"]

    del redis["passwordSecretRef"]
    kube.put(fleet_body(spec, generation=2))
    Reconciler(kube, now=lambda: NOW, instance="test").reconcile(OWNER.namespace, OWNER.name)  # type: ignore[arg-type]
    assert key not in kube.objects
    assert (kinds.SCALEDOBJECT, OWNER.namespace, OWNER.name) in kube.objects


@pytest.mark.parametrize(
    ("keda_status", "keda_reason", "reason"),
    [
        ("False", "ScaledObjectCheckFailed", "ScaledObjectNotReady"),
        ("Unknown", "PartialTriggerError", "PartialTriggerError"),
    ],
)
def test_keda_unable_to_use_a_trigger_shows_on_the_fleet(keda_status: str, keda_reason: str, reason: str) -> None:
    """KEDA's Ready=False on the ScaledObject (e.g. Redis refused the password), or Unknown with
    one trigger failing, becomes the fleet's Autoscaling condition, with KEDA's message."""
    redis = {"address": ADDRESS, "listName": "q", "passwordSecretRef": {"name": "redis", "key": "pw"}}
    kube = reconciled(minimal_spec(autoscaling={"enabled": True, "minReplicas": 0, "redis": redis}))
    said = "error establishing redis connection: WRONGPASS invalid username-password pair"

    def keda_refuses(obj: dict[str, Any]) -> None:
        ready = {"type": "Ready", "status": keda_status, "reason": keda_reason, "message": said}
        obj["status"] = {"conditions": [ready]}

    kube.edit(kinds.SCALEDOBJECT, OWNER.namespace, OWNER.name, keda_refuses)
    Reconciler(kube, now=lambda: NOW, instance="test").reconcile(OWNER.namespace, OWNER.name)  # type: ignore[arg-type]
    body = kube.get(kinds.TTSDEPLOYMENT, OWNER.namespace, OWNER.name)
    assert body is not None
    autoscaling = next(c for c in body["status"]["conditions"] if c["type"] == "Autoscaling")
    assert (autoscaling["status"], autoscaling["reason"]) == ("False", reason)
    assert autoscaling["message"].startswith(f"KEDA: {said}")


def test_keda_still_deciding_is_not_a_problem() -> None:
    kube = reconciled(minimal_spec(autoscaling={"enabled": True, "redis": {"address": ADDRESS, "listName": "q"}}))

    def keda_starting(obj: dict[str, Any]) -> None:
        obj["status"] = {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "ScaledObjectCheckPending"}]}

    kube.edit(kinds.SCALEDOBJECT, OWNER.namespace, OWNER.name, keda_starting)
    Reconciler(kube, now=lambda: NOW, instance="test").reconcile(OWNER.namespace, OWNER.name)  # type: ignore[arg-type]
    body = kube.get(kinds.TTSDEPLOYMENT, OWNER.namespace, OWNER.name)
    assert body is not None
    autoscaling = next(c for c in body["status"]["conditions"] if c["type"] == "Autoscaling")
    assert (autoscaling["status"], autoscaling["reason"]) == ("True", "ScaledObjectApplied")
