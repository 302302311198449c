"""Status conditions: merge freshly computed ones into the previous list so that
``lastTransitionTime`` moves only when a condition's status flips, and list the flips."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
AUTOSCALING = "Autoscaling"
MONITORING = "Monitoring"
ORDER = (READY, PROGRESSING, DEGRADED, AUTOSCALING, MONITORING)


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        return "True" if self.status else "False"


@dataclass(frozen=True)
class Transition:
    """A condition whose status changed (or appeared); worth one Kubernetes Event."""

    type: str
    status: str
    reason: str
    message: str
    previous: str | None


def merge(
    previous: list[dict[str, Any]], current: list[Condition], *, now: str, generation: int | None
) -> list[dict[str, Any]]:
    old = {c.get("type"): c for c in previous}
    merged: list[dict[str, Any]] = []
    for cond in sorted(current, key=lambda c: ORDER.index(c.type) if c.type in ORDER else len(ORDER)):
        before = old.get(cond.type)
        unchanged = before is not None and before.get("status") == cond.status_text
        entry: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status_text,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": before["lastTransitionTime"]
            if unchanged and before and before.get("lastTransitionTime")
            else now,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        merged.append(entry)
    return merged


def transitions(previous: list[dict[str, Any]], merged: list[dict[str, Any]]) -> list[Transition]:
    old = {c.get("type"): c.get("status") for c in previous}
    return [
        Transition(c["type"], c["status"], c["reason"], c["message"], old.get(c["type"]))
        for c in merged
        if old.get(c["type"]) != c["status"]
    ]
