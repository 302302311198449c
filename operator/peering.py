"""Whether this replica is the active one in an HA (kopf peering) deployment.

kopf pauses the watch streams of a replica when a live peer has a higher or equal priority; it
keeps that state to itself. The periodic resync is ours, not kopf's, so it reads the same
peering object and applies the same rule, and standby replicas stay quiet.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

# kopf's default: a replica counts as alive this long after its last keep-alive (sent every
# lifetime minus 5-10 s). A standby therefore takes over at most this long after the active one
# dies without a goodbye (SIGKILL, node loss); a graceful exit removes the record at once.
DEFAULT_LIFETIME_SECONDS = 60


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def is_active(peering: dict[str, Any] | None, identity: str, priority: int, now: datetime) -> bool:
    """kopf's rule: active unless another live peer has a priority >= ours."""
    if peering is None:
        return False  # kopf has not registered us yet: we are not serving either
    for peer, info in (peering.get("status") or {}).items():
        if peer == identity or not isinstance(info, dict):
            continue
        lastseen = info.get("lastseen")
        if not lastseen:
            continue
        alive = _parse(lastseen) + timedelta(seconds=int(info.get("lifetime", DEFAULT_LIFETIME_SECONDS))) > now
        if alive and int(info.get("priority", 0)) >= priority:
            return False
    return True
