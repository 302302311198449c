"""The fleet's measured cold start: pod creation to Ready, as a rolling p95 over recent pods.

Schedules given as ``readyBy`` start that much (plus a margin) earlier. Each pod is sampled once,
by uid, the first time it is seen Ready, so restarts of a warm pod do not count as cold starts.

Only the newest ``KEEP_SAMPLES`` pods of a fleet are ever candidates. That keeps the window
bounded and makes sampling idempotent: sampling the same pods twice gives the same answer, so a
fleet larger than the window does not re-sample its older pods (and rewrite its status, whose
write triggers the next pass) on every pass.
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


def _age_key(pod: dict[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata", {})
    # RFC 3339 in UTC sorts as text; the uid breaks ties between pods created in the same second.
    return (meta.get("creationTimestamp") or "", meta.get("uid") or "")


def sample(
    samples: tuple[float, ...], sampled_uids: tuple[str, ...], pods: list[dict[str, Any]]
) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """Add the cold starts of the newest pods not sampled yet; keep at most ``KEEP_SAMPLES``.

    Entries of the newest pods are never dropped in favour of older ones, so a second call with
    the same pods changes nothing (the property the status write depends on).
    """
    newest = sorted((p for p in pods if p.get("metadata", {}).get("uid")), key=_age_key)[-KEEP_SAMPLES:]
    newest_uids = {p["metadata"]["uid"] for p in newest}
    entries = list(zip(sampled_uids, samples, strict=False))
    known = set(sampled_uids)
    for pod in newest:
        uid = pod["metadata"]["uid"]
        if uid in known:
            continue
        seconds = pod_cold_start(pod)
        if seconds is None:
            continue
        entries.append((uid, round(seconds, 1)))
        known.add(uid)
    if len(entries) > KEEP_SAMPLES:
        # Keep every entry of a current newest pod; fill what is left with the most recent others.
        room = KEEP_SAMPLES - sum(1 for uid, _ in entries if uid in newest_uids)
        others = [i for i, (uid, _) in enumerate(entries) if uid not in newest_uids]
        dropped = set(others[: max(0, len(others) - room)])
        entries = [entry for i, entry in enumerate(entries) if i not in dropped]
    return tuple(s for _, s in entries), tuple(uid for uid, _ in entries)


def p95(samples: tuple[float, ...]) -> float | None:
    """Nearest-rank p95: an actually observed value, never an interpolation."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = math.ceil(0.95 * len(ordered))
    return ordered[rank - 1]
