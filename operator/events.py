"""Kubernetes Events for condition flips: one Event per transition, never one per pass."""

from __future__ import annotations

from typing import Any

from ttsfleet.operator import conditions
from ttsfleet.operator.conditions import Transition
from ttsfleet.operator.naming import FIELD_MANAGER

# Not ready because pods are still being created or warming up: expected, not a warning.
_ROUTINE_NOT_READY = frozenset({"ReplicasNotReady", "StatefulSetMissing"})


def is_warning(transition: Transition) -> bool:
    if transition.type == conditions.DEGRADED:
        return transition.status == "True"
    if transition.type == conditions.PROGRESSING:
        return False
    return transition.status == "False" and transition.reason not in _ROUTINE_NOT_READY


def worth_an_event(transition: Transition) -> bool:
    """A flip, or a condition that appears in a bad state; a fleet born healthy needs no Event
    saying it is not degraded."""
    return transition.previous is not None or is_warning(transition) or transition.type == conditions.READY


def build(body: dict[str, Any], transition: Transition, *, now: str, instance: str) -> dict[str, Any]:
    meta = body["metadata"]
    message = f"{transition.type} is {transition.status} ({transition.reason})"
    if transition.message:
        message += f": {transition.message}"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": "Warning" if is_warning(transition) else "Normal",
        "reason": transition.reason,
        "message": message[:1024],
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
