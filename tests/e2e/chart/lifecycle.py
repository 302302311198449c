"""A compact fleet lifecycle that touches every permission the operator's Role grants, reported
as named expectations so that a test can say which part broke when a rule is missing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fleet_helpers import PINNED_REVISION, apply, condition, fleet, get, items

from ttsfleet.devcluster.cluster import ClusterHandle

NAME = "rbac-probe"
SECRET = "model-credentials"
CHILDREN = (
    ("statefulset", NAME),
    ("service", NAME),
    ("service", f"{NAME}-pods"),
    ("configmap", f"{NAME}-serving"),
    ("poddisruptionbudget", NAME),
    ("networkpolicy", NAME),
    ("scaledobject", NAME),
    ("servicemonitor", NAME),
)


def probe_fleet() -> dict[str, Any]:
    """A fleet whose reconcile reads a Secret and writes every kind of child."""
    return fleet(
        NAME,
        replicas=2,
        model={"source": "hf://2Noise/ChatTTS", "revision": PINNED_REVISION, "secretRef": SECRET},
        autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 3},
        monitoring={"serviceMonitor": True},
    )


def secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET},
        "stringData": {"token": "not-a-real-token"},
    }


@dataclass
class Outcome:
    """What a person would check: children, status, readiness, events, a quiet operator log."""

    missing: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.missing

    def __str__(self) -> str:
        return "; ".join(f"{name}: {why}" for name, why in sorted(self.missing.items())) or "all met"


def observe(cluster: ClusterHandle, namespace: str, permission_errors: list[str], running: bool) -> Outcome:
    outcome = Outcome()
    absent = [f"{kind}/{name}" for kind, name in CHILDREN if get(cluster, namespace, kind, name) is None]
    if absent:
        outcome.missing["children"] = "absent: " + ", ".join(absent)
    obj = get(cluster, namespace, "ttsd", NAME)
    if not (obj or {}).get("status", {}).get("observedGeneration"):
        outcome.missing["status"] = "the operator wrote no status"
    ready = condition(obj, "Ready")
    if ready.get("status") != "True":
        outcome.missing["ready"] = f"Ready={ready.get('status')} ({ready.get('reason')}: {ready.get('message')})"
    events = [
        e
        for e in items(cluster, namespace, "events")
        if e["involvedObject"].get("kind") == "TTSDeployment" and e["involvedObject"]["name"] == NAME
    ]
    if not events:
        outcome.missing["events"] = "no Event about the fleet"
    if not running:
        outcome.missing["operator"] = "the operator process exited"
    if permission_errors:
        outcome.missing["permissions"] = permission_errors[0][:300]
    return outcome


def run(cluster: ClusterHandle, namespace: str, operator: Any, timeout: float) -> Outcome:
    """Apply the probe fleet and wait until every expectation holds or the time is up."""
    apply(cluster, namespace, secret(), probe_fleet())
    deadline = time.monotonic() + timeout
    while True:
        outcome = observe(cluster, namespace, operator.permission_errors(), operator.running)
        if outcome.passed or time.monotonic() >= deadline:
            return outcome
        time.sleep(1)


def refused_apply_reported(cluster: ClusterHandle, namespace: str) -> bool:
    """The operator's own report of a child the API server refused: ``Ready=False ApplyFailed`` on
    the fleet (with a Warning Event). Admission refusals (an owner reference whose finalizers the
    operator may not set) arrive that way, not as a permission error in its log."""
    return condition(get(cluster, namespace, "ttsd", NAME), "Ready").get("reason") == "ApplyFailed"


def run_until_refused(cluster: ClusterHandle, namespace: str, operator: Any, timeout: float) -> Outcome:
    """Apply the probe fleet and wait for the operator to show that it tried and was refused: a
    refusal in its log, a refused apply reported on the fleet, or its exit. Everything it was
    refused stays missing after that, so the outcome observed then is final; no allowance of
    seconds decides what "failed" means.

    An operator that neither logs a refusal nor exits within ``timeout`` is itself a failure (a
    missing permission must not go unsaid), reported as the ``refusal`` expectation."""
    apply(cluster, namespace, secret(), probe_fleet())
    deadline = time.monotonic() + timeout
    while operator.running and not operator.permission_errors() and not refused_apply_reported(cluster, namespace):
        if time.monotonic() >= deadline:
            outcome = observe(cluster, namespace, [], True)
            outcome.missing["refusal"] = f"the operator logged no refusal and kept running for {timeout:.0f} s"
            return outcome
        time.sleep(0.5)
    return observe(cluster, namespace, operator.permission_errors(), operator.running)
