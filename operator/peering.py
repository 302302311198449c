"""Whether this replica is the active one in an HA (kopf peering) deployment.

kopf pauses the watch streams of a replica when a live peer has a higher or equal priority; it
keeps that state to itself. The periodic resync is ours, not kopf's, so it reads the same
peering object and applies the same rule, and standby replicas stay quiet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

# kopf's default: a replica counts as alive this long after its last keep-alive (sent every
# lifetime minus 5-10 s). A standby therefore takes over at most this long after the active one
# dies without a goodbye (SIGKILL, node loss); a graceful exit removes the record at once.
DEFAULT_LIFETIME_SECONDS = 60


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# Our own mark in a replica's peering entry (kopf keeps unknown fields of an entry): true once
# the replica, outranked, has no pass running any more. A replica taking over from a live peer
# waits for it, so the two never act at once (kopf resumes the newcomer before the old replica
# has even seen it, and the old one's pass in flight would still be writing).
PAUSED_MARK = "ttsfleetPaused"


def _alive(info: dict[str, Any], now: datetime) -> bool:
    lastseen = info.get("lastseen")
    if not lastseen:
        return False
    return _parse(lastseen) + timedelta(seconds=int(info.get("lifetime", DEFAULT_LIFETIME_SECONDS))) > now


def still_acting(peering: dict[str, Any] | None, identity: str, priority: int, now: datetime) -> list[str]:
    """Live peers below our priority that have not marked themselves paused: a replica we
    outranked that may still be acting."""
    return [
        peer
        for peer, info in ((peering or {}).get("status") or {}).items()
        if peer != identity
        and isinstance(info, dict)
        and _alive(info, now)
        and int(info.get("priority", 0)) < priority
        and info.get(PAUSED_MARK) is not True
    ]


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


# kopf announces its pause and resume decisions only in its log, from this logger (kopf 1.45:
# "Pausing operations in favour of [...]", "Pausing all operators, including self: ...",
# "Resuming operations after the pause. ..."); tests/unit/operator pins the wording.
KOPF_PEERING_LOGGER = "kopf._core.engines.peering"
KOPF_PAUSING = "Pausing "
KOPF_RESUMING = "Resuming operations"


class KopfPauseListener(logging.Handler):
    """Tells the controller the moment kopf pauses or resumes this replica.

    kopf stops its watch streams when a peer outranks this replica, but the controller's own
    queue (and a pass in flight) would keep acting until the next resync reads the peering
    object: two replicas acting at once for up to a resync period. kopf makes the decision on
    its event loop and logs it there; this handler hears it in the same instant."""

    def __init__(self, on_pause: Callable[[], None], on_resume: Callable[[], None]) -> None:
        super().__init__(logging.INFO)
        self._on_pause = on_pause
        self._on_resume = on_resume

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        if message.startswith(KOPF_PAUSING):
            self._on_pause()
        elif message.startswith(KOPF_RESUMING):
            self._on_resume()

    def install(self) -> None:
        logger = logging.getLogger(KOPF_PEERING_LOGGER)
        # Hear the decisions whatever the log level (they are two lines per handover).
        if not logger.isEnabledFor(logging.INFO):
            logger.setLevel(logging.INFO)
        logger.addHandler(self)

    def uninstall(self) -> None:
        logging.getLogger(KOPF_PEERING_LOGGER).removeHandler(self)
