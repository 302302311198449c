"""Status computation: what the fleet looks like, from the observed StatefulSet and pods.

Pure: takes observations and the previous status, returns the new status and the condition
flips. ``Ready`` says every desired pod serves the warmed model; ``Progressing`` says the
StatefulSet is still moving towards the spec (rollout, scaling, pods warming up); ``Degraded``
says something needs a human (a missing Secret, no node fits, a stuck container).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ttsfleet.operator import coldstart, conditions
from ttsfleet.operator.conditions import Condition, Transition
from ttsfleet.operator.problems import Problem
from ttsfleet.operator.spec import TTSDeploymentSpec


@dataclass(frozen=True)
class Observation:
    generation: int | None
    selector: str
    statefulset: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Conditions about optional add-ons (autoscaling, monitoring); they never gate Ready.
    extra: list[Condition] = field(default_factory=list)
    schedule_starts: dict[str, tuple[str, int | None]] = field(default_factory=dict)


def _statefulset_numbers(sts: dict[str, Any]) -> dict[str, Any]:
    status = sts.get("status") or {}
    generation = sts.get("metadata", {}).get("generation") or 0
    return {
        "replicas": int(status.get("replicas") or 0),
        "ready": int(status.get("readyReplicas") or 0),
        "updated": int(status.get("updatedReplicas") or 0),
        "current_revision": status.get("currentRevision"),
        "update_revision": status.get("updateRevision"),
        "caught_up": (status.get("observedGeneration") or 0) >= generation,
    }


def _ready(spec: TTSDeploymentSpec, obs: Observation, n: dict[str, Any] | None) -> Condition:
    if obs.problems:
        return Condition(conditions.READY, False, obs.problems[0].reason, obs.problems[0].message)
    if n is None:
        return Condition(conditions.READY, False, "StatefulSetMissing", "the StatefulSet does not exist yet")
    desired = spec.replicas
    if desired == 0:
        return Condition(conditions.READY, True, "ScaledToZero", "no pods are desired")
    message = f"{n['ready']}/{desired} pods ready"
    if n["ready"] >= desired and n["caught_up"]:
        return Condition(conditions.READY, True, "AllReplicasReady", message)
    return Condition(conditions.READY, False, "ReplicasNotReady", message)


def _progressing(spec: TTSDeploymentSpec, n: dict[str, Any] | None) -> Condition:
    if n is None:
        return Condition(conditions.PROGRESSING, True, "Creating", "creating the StatefulSet")
    desired = spec.replicas
    if not n["caught_up"]:
        message = "the StatefulSet controller is catching up"
        return Condition(conditions.PROGRESSING, True, "Reconciling", message)
    if n["replicas"] != desired:
        return Condition(conditions.PROGRESSING, True, "Scaling", f"{n['replicas']} pods, {desired} desired")
    new_revision = n["update_revision"] and n["update_revision"] != n["current_revision"]
    if spec.rollout.strategy == "RollingUpdate" and new_revision:
        target = max(0, desired - spec.rollout.partition)
        if n["updated"] < target:
            message = f"{n['updated']}/{target} pods at the new revision"
            return Condition(conditions.PROGRESSING, True, "RollingOut", message)
    if n["ready"] < desired:
        return Condition(conditions.PROGRESSING, True, "WarmingUp", f"{n['ready']}/{desired} pods ready")
    if new_revision and spec.rollout.strategy == "RollingUpdate":
        return Condition(
            conditions.PROGRESSING,
            False,
            "PartitionRolledOut",
            f"pods with ordinal >= {spec.rollout.partition} run revision {n['update_revision']}",
        )
    if new_revision:
        return Condition(
            conditions.PROGRESSING,
            False,
            "WaitingForPodDeletion",
            f"{n['updated']}/{desired} pods at the new revision; OnDelete waits for pods to be deleted",
        )
    return Condition(conditions.PROGRESSING, False, "RolloutComplete", "all pods run the current revision")


def _degraded(obs: Observation) -> Condition:
    if obs.problems:
        message = "; ".join(p.message for p in obs.problems)
        return Condition(conditions.DEGRADED, True, obs.problems[0].reason, message)
    return Condition(conditions.DEGRADED, False, "AsExpected", "")


def compute(
    spec: TTSDeploymentSpec, obs: Observation, previous: dict[str, Any], *, now: str
) -> tuple[dict[str, Any], list[Transition]]:
    n = _statefulset_numbers(obs.statefulset) if obs.statefulset is not None else None
    current = [_ready(spec, obs, n), _progressing(spec, n), _degraded(obs), *obs.extra]
    old_conditions = list(previous.get("conditions") or [])
    merged = conditions.merge(old_conditions, current, now=now, generation=obs.generation)

    samples, uids = coldstart.sample(
        tuple(previous.get("coldStartSamples") or ()), tuple(previous.get("sampledPods") or ()), obs.pods
    )
    status: dict[str, Any] = {
        "observedGeneration": obs.generation,
        "replicas": n["replicas"] if n else 0,
        "readyReplicas": n["ready"] if n else 0,
        "updatedReplicas": n["updated"] if n else 0,
        "replicasSummary": f"{n['ready'] if n else 0}/{spec.replicas}",
        "selector": obs.selector,
        "conditions": merged,
    }
    if n and n["current_revision"]:
        status["currentRevision"] = n["current_revision"]
    if n and n["update_revision"]:
        status["updateRevision"] = n["update_revision"]
    if samples:
        status["coldStartSamples"] = list(samples)
        status["sampledPods"] = list(uids)
        status["coldStartP95Seconds"] = coldstart.p95(samples)
    if obs.schedule_starts:
        status["schedules"] = [
            {"name": name, "start": start, **({"leadSeconds": lead} if lead is not None else {})}
            for name, (start, lead) in sorted(obs.schedule_starts.items())
        ]
    if status["observedGeneration"] is None:
        del status["observedGeneration"]
    return status, conditions.transitions(old_conditions, merged)


def differs(previous: dict[str, Any], new: dict[str, Any]) -> bool:
    """Only fields we own count; anything else in status is someone else's business."""
    return any(previous.get(key) != value for key, value in new.items()) or any(
        key in previous and key not in new for key in OWNED_KEYS
    )


OWNED_KEYS = (
    "observedGeneration",
    "replicas",
    "readyReplicas",
    "updatedReplicas",
    "replicasSummary",
    "currentRevision",
    "updateRevision",
    "selector",
    "coldStartP95Seconds",
    "coldStartSamples",
    "sampledPods",
    "schedules",
    "conditions",
)
