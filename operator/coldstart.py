"""The fleet's measured cold start: pod creation to Ready, as a rolling p95 over recent pods.

Schedules given as ``readyBy`` start that much (plus a margin) earlier. Each pod is sampled once,
by uid, the first time it is seen Ready, so restarts of a warm pod do not count as cold starts.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

KEEP_SAMPLES = 20


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def pod_cold_start(pod: dict[str, Any]) -> float | None:
    created = pod.get("metadata", {}).get("creationTimestamp")
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True" and created:
            ready_at = cond.get("lastTransitionTime")
            if ready_at:
                return max(0.0, (_parse_time(ready_at) - _parse_time(created)).total_seconds())
    return None


def sample(
    samples: tuple[float, ...], sampled_uids: tuple[str, ...], pods: list[dict[str, Any]]
) -> tuple[tuple[float, ...], tuple[str, ...]]:
    new_samples = list(samples)
    new_uids = list(sampled_uids)
    for pod in sorted(pods, key=lambda p: p.get("metadata", {}).get("creationTimestamp") or ""):
        uid = pod.get("metadata", {}).get("uid")
        if not uid or uid in new_uids:
            continue
        seconds = pod_cold_start(pod)
        if seconds is None:
            continue
        new_samples.append(round(seconds, 1))
        new_uids.append(uid)
    return tuple(new_samples[-KEEP_SAMPLES:]), tuple(new_uids[-KEEP_SAMPLES:])


def p95(samples: tuple[float, ...]) -> float | None:
    """Nearest-rank p95: an actually observed value, never an interpolation."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = math.ceil(0.95 * len(ordered))
    return ordered[rank - 1]
