"""Status computation, conditions, problems, cold starts and schedule lead times."""

from __future__ import annotations

from typing import Any

import pytest
from fixtures_operator import minimal_spec

from ttsfleet.operator import coldstart, conditions, problems, schedules, status
from ttsfleet.operator.conditions import Condition
from ttsfleet.operator.spec import parse_spec

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:01:00Z"


def statefulset(
    replicas: int,
    ready: int,
    updated: int,
    *,
    current: str = "r1",
    update: str = "r1",
    caught_up: bool = True,
) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "status": {
            "observedGeneration": 2 if caught_up else 1,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "currentRevision": current,
            "updateRevision": update,
        },
    }


def compute(
    spec_overrides: dict[str, Any],
    sts: dict[str, Any] | None,
    previous: dict[str, Any] | None = None,
    **obs: Any,
):
    spec = parse_spec(minimal_spec(**spec_overrides))
    observation = status.Observation(generation=3, selector="a=b", statefulset=sts, **obs)
    return status.compute(spec, observation, previous or {}, now=T1)


def cond(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == type_)


def test_all_ready() -> None:
    st, flips = compute({"replicas": 3}, statefulset(3, 3, 3))
    assert cond(st, "Ready")["status"] == "True"
    assert cond(st, "Ready")["reason"] == "AllReplicasReady"
    assert cond(st, "Progressing")["status"] == "False"
    assert cond(st, "Degraded")["status"] == "False"
    assert st["replicas"] == 3 and st["readyReplicas"] == 3 and st["updatedReplicas"] == 3
    assert st["replicasSummary"] == "3/3"
    assert st["observedGeneration"] == 3
    assert st["selector"] == "a=b"
    assert st["currentRevision"] == "r1"
    assert {f.type for f in flips} == {"Ready", "Progressing", "Degraded"}


def test_warming_up() -> None:
    st, _ = compute({"replicas": 3}, statefulset(3, 1, 3))
    assert cond(st, "Ready")["status"] == "False"
    assert cond(st, "Ready")["message"] == "1/3 pods ready"
    assert cond(st, "Progressing")["reason"] == "WarmingUp"


def test_rollout_with_partition() -> None:
    rolling, _ = compute({"replicas": 4, "rollout": {"partition": 2}}, statefulset(4, 4, 1, update="r2"))
    assert cond(rolling, "Progressing")["reason"] == "RollingOut"
    assert cond(rolling, "Progressing")["message"] == "1/2 pods at the new revision"
    done, _ = compute({"replicas": 4, "rollout": {"partition": 2}}, statefulset(4, 4, 2, update="r2"))
    assert cond(done, "Progressing")["status"] == "False"
    assert cond(done, "Progressing")["reason"] == "PartitionRolledOut"
    assert cond(done, "Ready")["status"] == "True"


def test_on_delete_waits() -> None:
    st, _ = compute({"replicas": 2, "rollout": {"strategy": "OnDelete"}}, statefulset(2, 2, 0, update="r2"))
    assert cond(st, "Progressing")["reason"] == "WaitingForPodDeletion"


def test_scaling_and_catching_up() -> None:
    st, _ = compute({"replicas": 3}, statefulset(2, 2, 2))
    assert cond(st, "Progressing")["reason"] == "Scaling"
    st, _ = compute({"replicas": 2}, statefulset(2, 2, 2, caught_up=False))
    assert cond(st, "Progressing")["reason"] == "Reconciling"
    assert cond(st, "Ready")["status"] == "False"


def test_scaled_to_zero_is_ready() -> None:
    st, _ = compute({"replicas": 0}, statefulset(0, 0, 0))
    assert cond(st, "Ready")["reason"] == "ScaledToZero"


def test_problems_make_the_fleet_not_ready_and_degraded() -> None:
    found = [problems.missing_secret("creds", "ns")]
    st, _ = compute({"replicas": 1}, statefulset(1, 1, 1), problems=found)
    assert cond(st, "Ready")["status"] == "False"
    assert cond(st, "Ready")["reason"] == "SecretNotFound"
    assert cond(st, "Degraded")["status"] == "True"
    assert "creds" in cond(st, "Degraded")["message"]


def test_missing_statefulset() -> None:
    st, _ = compute({}, None)
    assert cond(st, "Ready")["reason"] == "StatefulSetMissing"
    assert st["replicas"] == 0


def test_last_transition_time_moves_only_on_a_flip() -> None:
    first, _ = compute({"replicas": 2}, statefulset(2, 1, 2))
    for c in first["conditions"]:
        c["lastTransitionTime"] = T0
    second, flips = compute({"replicas": 2}, statefulset(2, 1, 2), previous=first)
    assert [c["lastTransitionTime"] for c in second["conditions"]] == [T0, T0, T0]
    assert flips == []
    assert not status.differs(first, second)
    third, flips = compute({"replicas": 2}, statefulset(2, 2, 2), previous=first)
    assert cond(third, "Ready")["lastTransitionTime"] == T1
    assert cond(third, "Degraded")["lastTransitionTime"] == T0
    assert [(f.type, f.status, f.previous) for f in flips] == [
        ("Ready", "True", "False"),
        ("Progressing", "False", "True"),
    ]


def test_message_change_without_flip_keeps_transition_time_but_rewrites_status() -> None:
    first, _ = compute({"replicas": 3}, statefulset(3, 1, 3))
    second, flips = compute({"replicas": 3}, statefulset(3, 2, 3), previous=first)
    assert flips == []
    assert cond(second, "Ready")["lastTransitionTime"] == cond(first, "Ready")["lastTransitionTime"]
    assert status.differs(first, second)


def test_extra_conditions_are_kept_in_order() -> None:
    extra = [Condition(conditions.MONITORING, False, "ServiceMonitorCRDMissing", "x")]
    st, _ = compute({}, statefulset(1, 1, 1), extra=extra)
    assert [c["type"] for c in st["conditions"]] == ["Ready", "Progressing", "Degraded", "Monitoring"]


def pod(name: str, **status_fields: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"uid-{name}"}, "status": status_fields}


def test_pod_problems() -> None:
    pods = [
        pod(
            "a-0",
            conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}],
        ),
        pod(
            "a-1",
            initContainerStatuses=[
                {
                    "name": "fetch-model",
                    "state": {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "x" not found'}},
                }
            ],
        ),
        pod(
            "a-2",
            containerStatuses=[{"name": "worker", "state": {"waiting": {"reason": "ContainerCreating"}}}],
        ),
    ]
    found = problems.pod_problems(pods)
    # The kubelet's "secret not found" is how the operator, which cannot read Secrets, sees one missing.
    assert [p.reason for p in found] == ["Unschedulable", "SecretNotFound"]
    assert "a-0" in found[0].message and "0/3 nodes" in found[0].message
    assert "Secret /x" not in found[1].message and 'secret "x" not found' in found[1].message
    key_missing = pod(
        "a-3",
        initContainerStatuses=[
            {
                "name": "fetch-model",
                "state": {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": "couldn't find key HF_TOKEN in Secret ns/x",
                    }
                },
            }
        ],
    )
    assert [p.reason for p in problems.pod_problems([key_missing])] == ["CreateContainerConfigError"]


def ready_pod(uid: str, created: str, ready_at: str) -> dict[str, Any]:
    return {
        "metadata": {"name": uid, "uid": uid, "creationTimestamp": created},
        "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready_at}]},
    }


def test_cold_start_sampling_counts_each_pod_once() -> None:
    pods = [ready_pod("p1", T0, "2026-01-01T00:02:00Z"), ready_pod("p2", T0, "2026-01-01T00:00:30Z")]
    samples, uids = coldstart.sample((), (), pods)
    assert sorted(samples) == [30.0, 120.0]
    again = coldstart.sample(samples, uids, pods)
    assert again == (samples, uids)
    assert coldstart.p95(samples) == 120.0
    assert coldstart.p95(()) is None


def test_cold_start_in_status() -> None:
    st, _ = compute({}, statefulset(1, 1, 1), pods=[ready_pod("p1", T0, "2026-01-01T00:01:30Z")])
    assert st["coldStartP95Seconds"] == 90.0
    assert st["sampledPods"] == ["p1"]


@pytest.mark.parametrize(
    ("ready_by", "lead", "start"),
    [
        ("0 19 * * *", 600, "50 18 * * *"),
        ("30 19 * * 1-5", 3600, "30 18 * * 1-5"),
        ("10 0 * * 1-5", 1200, "50 23 * * 0-4"),
        ("5 0 * * 0", 600, "55 23 * * 6"),
        ("0 0 * * SUN-TUE", 60, "59 23 * * 6-6,0-1"),
    ],
)
def test_derive_start(ready_by: str, lead: int, start: str) -> None:
    assert schedules.derive_start(ready_by, lead) == start


def test_lead_time_uses_the_measured_p95_or_the_warmup_budget() -> None:
    spec = parse_spec(minimal_spec(warmup={"timeoutSeconds": 900}, autoscaling={"leadTimeMarginSeconds": 60}))
    assert schedules.lead_seconds(spec.autoscaling, spec.warmup, 100.2) == 161
    assert schedules.lead_seconds(spec.autoscaling, spec.warmup, None) == 960


def test_cold_start_sampling_of_a_fleet_larger_than_the_window_is_idempotent() -> None:
    """More Ready pods than samples kept: a second look at the same pods must change nothing,
    or every pass rewrites the status and the write's own watch event runs the next pass."""
    pods = [ready_pod(f"p{i:02d}", f"2026-01-01T00:{i:02d}:00Z", f"2026-01-01T00:{i:02d}:{i:02d}Z") for i in range(50)]
    first = coldstart.sample((), (), pods)
    assert len(first[0]) == coldstart.KEEP_SAMPLES
    assert set(first[1]) == {f"p{i:02d}" for i in range(30, 50)}  # the newest pods
    assert coldstart.sample(*first, pods) == first
    # A new pod replaces the oldest sample, once.
    pods.append(ready_pod("p50", "2026-01-01T00:50:00Z", "2026-01-01T00:50:07Z"))
    second = coldstart.sample(*first, pods)
    assert second[1] == (*first[1][1:], "p50") and second[0][-1] == 7.0
    assert coldstart.sample(*second, pods) == second
    # Status computed twice from the same pods: nothing to write the second time.
    st, _ = compute({"replicas": 51}, statefulset(51, 51, 51), pods=pods)
    again, _ = compute({"replicas": 51}, statefulset(51, 51, 51), previous=st, pods=pods)
    assert not status.differs(st, again)
