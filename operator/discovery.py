"""Following an add-on's CRD until the API server's discovery agrees with it.

A CRD's watch events, the one that says Established included, reach us before discovery lists
the new kind (or drops a deleted one): the API server's discovery controller syncs from the same
informer a moment later, so "Established" does not mean "discoverable" (kube-rs documents the
same race). kopf rescans discovery only on CRD events, and the operator caches discovery answers
for a minute: after the last event of an install that lost this race, kopf would never watch
ServiceMonitors (a deleted one would not come back until a restart) and fleets would wait for
the cache to expire. So every event of an optional CRD starts a follower that polls discovery
until it says what the CRD says, then has kopf rescan the group and every fleet reconciled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ttsfleet.operator.kinds import Kind

log = logging.getLogger(__name__)

# Discovery normally catches up within a second; past this, act on what it says anyway.
FOLLOW_LIMIT_SECONDS = 60.0
FIRST_DELAY_SECONDS = 0.1
MAX_DELAY_SECONDS = 2.0


def expected_served(kind: Kind, crd: Mapping[str, Any] | None) -> bool:
    """Whether discovery should list ``kind`` given its CRD as last seen (None: deleted)."""
    if crd is None or (crd.get("metadata") or {}).get("deletionTimestamp"):
        return False
    version = kind.api_version.rpartition("/")[2]
    spec = crd.get("spec") or {}
    served = any(v.get("name") == version and v.get("served") for v in spec.get("versions") or [])
    conditions = (crd.get("status") or {}).get("conditions") or []
    established = any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)
    return served and established


@dataclass(frozen=True)
class Agreement:
    kind: Kind
    served: bool
    waited_seconds: float
    # False when discovery still disagreed after FOLLOW_LIMIT_SECONDS.
    agreed: bool


class DiscoveryFollower:
    """One follower per CRD: a newer event of the same CRD replaces the running one. Acts only
    when the kind's served state changed (not on every edit of an installed CRD, e.g. each
    Argo CD or Helm sync of the add-on); a kind is taken as not served until noted otherwise."""

    def __init__(
        self,
        discover: Callable[[Kind], bool],
        on_agreement: Callable[[Agreement], Awaitable[None]],
        *,
        limit: float = FOLLOW_LIMIT_SECONDS,
        first_delay: float = FIRST_DELAY_SECONDS,
        max_delay: float = MAX_DELAY_SECONDS,
    ) -> None:
        self._discover = discover
        self._on_agreement = on_agreement
        self._limit = limit
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._served: dict[str, bool] = {}

    def note(self, kind: Kind, crd: Mapping[str, Any] | None) -> None:
        """The CRD as the initial listing showed it: what kopf and the first passes already saw."""
        self._served[kind.crd_name] = expected_served(kind, crd)

    def follow(self, kind: Kind, crd: Mapping[str, Any] | None) -> None:
        expected = expected_served(kind, crd)
        previous = self._tasks.pop(kind.crd_name, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.get_running_loop().create_task(self._follow(kind, expected), name=f"discovery-{kind.crd_name}")
        self._tasks[kind.crd_name] = task
        task.add_done_callback(lambda done: self._forget(kind.crd_name, done))

    def _forget(self, name: str, done: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is done:
            del self._tasks[name]
        if not done.cancelled() and done.exception() is not None:
            log.error("following CRD %s into discovery failed", name, exc_info=done.exception())

    async def _follow(self, kind: Kind, expected: bool) -> None:
        start = time.monotonic()
        delay = self._first_delay
        while True:
            served: bool | None
            try:
                served = await asyncio.to_thread(self._discover, kind)
            except Exception as err:  # a refused look is retried like a stale one
                log.debug("looking up %s in discovery: %s", kind.crd_name, err)
                served = None
            waited = time.monotonic() - start
            if served == expected:
                await self._agreed(Agreement(kind, expected, waited, True))
                return
            if waited >= self._limit:
                believed = expected if served is None else served
                log.warning(
                    "discovery still disagrees with CRD %s after %.0f s; going by %s",
                    kind.crd_name,
                    waited,
                    "discovery" if served is not None else "the CRD",
                )
                await self._agreed(Agreement(kind, believed, waited, False))
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_delay)

    async def _agreed(self, agreement: Agreement) -> None:
        name = agreement.kind.crd_name
        if self._served.get(name, False) == agreement.served:
            return
        await self._on_agreement(agreement)
        # Only once acted on: a follower cancelled half-way leaves the change to the next one.
        self._served[name] = agreement.served

    async def idle(self) -> None:
        """Wait for the running followers (tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
