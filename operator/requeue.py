"""When to try a fleet again after a pass that failed: exponential backoff per fleet.

kopf's event handlers are fire-and-forget and the periodic resync may be minutes away; a pass that
hit a transient API failure (a 5xx, a conflict, admission not yet knowing a new CRD) is retried
after 1, 2, 4 ... seconds, capped, and the backoff resets after the first clean pass. The work
queue the passes are drained from lives here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Backoff(Generic[K]):
    def __init__(self, first: float = 1.0, limit: float = 30.0) -> None:
        self.first = first
        self.limit = limit
        self._delays: dict[K, float] = {}
        self._due: dict[K, float] = {}
        self._lock = threading.Lock()

    def failed(self, key: K, now: float) -> float:
        """Schedule the next try; returns the delay."""
        with self._lock:
            previous = self._delays.get(key)
            delay = self.first if previous is None else min(self.limit, previous * 2)
            self._delays[key] = delay
            self._due[key] = now + delay
            return delay

    def succeeded(self, key: K) -> None:
        with self._lock:
            self._delays.pop(key, None)
            self._due.pop(key, None)

    def pending(self, key: K) -> float | None:
        with self._lock:
            return self._due.get(key)


class WorkQueue(Generic[K]):
    """Keys waiting for a pass, on the event loop: a key is queued at most once and handed to one
    worker at a time; a key added while a worker holds it is handed out again once it is done, so
    the newest event is never lost and two passes of one fleet never overlap.

    Two lanes: urgent keys (a new or changed fleet, a child edited or deleted, a retry) go before
    the rest (pods moving, status left for later, the resync), so that a burst of new fleets gets
    its children before the status updates of fleets already converging. The later lane also
    waits out the burst itself: its keys are handed out only once no urgent pass runs and none
    has ended for ``quiet_seconds`` (the fleets of a burst arrive with short gaps, and a status
    write run in a gap slows the children of the fleets still to come), or once a key has waited
    ``hold_limit_seconds``, so that an endless stream of edits cannot starve the status.

    What a fleet only reports on (its pods moving, a controller's status on a child) is coalesced
    (``add_coalesced``): one pod's start is a burst of events (scheduled, initialised, running,
    ready), each followed by the StatefulSet's and the PodDisruptionBudget's status; the key waits
    a moment from the first of them, and the burst makes one pass instead of one each."""

    def __init__(
        self,
        quiet_seconds: float = 0.0,
        hold_limit_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._quiet = quiet_seconds
        self._hold_limit = hold_limit_seconds
        self._clock = clock
        self._urgent: deque[K] = deque()
        self._later: deque[K] = deque()
        self._queued: dict[K, bool] = {}  # key -> in the urgent lane
        self._later_since: dict[K, float] = {}  # when each later-lane key was queued
        self._active: dict[K, bool] = {}  # key handed out -> it came from the urgent lane
        self._urgent_in_flight = 0
        self._urgent_ended = -math.inf  # when the last urgent pass ended
        self._dirty: dict[K, bool] = {}
        self._settling: dict[K, asyncio.TimerHandle] = {}  # coalesced keys, until their delay ends
        # Workers waiting for a key, oldest first. An add or an urgent pass ending wakes one of
        # them (waking all cost every idle worker a look per event); a worker that found the
        # later lane not due yet also wakes when it is, and one that takes a key from there
        # wakes the next for the rest.
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._queued) + len(self._settling)

    def add(self, key: K, urgent: bool = True) -> None:
        # Added now: a coalesced add of the same key has nothing left to do.
        if (settling := self._settling.pop(key, None)) is not None:
            settling.cancel()
        if key in self._active:
            self._dirty[key] = self._dirty.get(key, False) or urgent
            return
        if key not in self._queued:
            self._queued[key] = urgent
            if urgent:
                self._urgent.append(key)
            else:
                self._later.append(key)
                self._later_since[key] = self._clock()
        elif urgent and not self._queued[key]:
            self._later.remove(key)
            del self._later_since[key]
            self._urgent.append(key)
            self._queued[key] = True
        else:
            return
        self._notify()

    def add_after(self, key: K, delay: float, urgent: bool = True) -> None:
        asyncio.get_running_loop().call_later(delay, self.add, key, urgent)

    def add_coalesced(self, key: K, delay: float) -> None:
        """Add ``key`` to the later lane ``delay`` seconds from now, unless it is already waiting
        (queued, or coalescing since an earlier event): the pass reads the cache when it runs, so
        it sees every event of the burst. A key whose pass is running is added again: that pass
        may have read the cache before this event."""
        if key in self._queued or key in self._settling:
            return
        self._settling[key] = asyncio.get_running_loop().call_later(delay, self._settled, key)

    def _settled(self, key: K) -> None:
        if self._settling.pop(key, None) is not None:
            self.add(key, urgent=False)

    async def get(self) -> K:
        return (await self.get_with_lane())[0]

    async def get_with_lane(self) -> tuple[K, bool]:
        """The next key, and whether it came from the urgent lane; waits while there is none, or
        while the later lane waits out a burst."""
        loop = asyncio.get_running_loop()
        while True:
            taken = self.get_nowait()
            if isinstance(taken, tuple):
                if not taken[1] and self._later:
                    self._notify()  # the rest of the later lane may be due too: the next looks
                return taken
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            # The later lane's head may go in ``taken`` seconds: this worker looks again then.
            timer = None if taken == math.inf else loop.call_later(taken, _wake, waiter)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                with contextlib.suppress(ValueError):  # not there once _notify took it out
                    self._waiters.remove(waiter)

    def get_nowait(self) -> tuple[K, bool] | float:
        """The next key and its lane if one may be handed out now; else how many seconds until
        the later lane's first key may go, unless something changes first (inf: only a change)."""
        if self._urgent:
            return self._hand_out(self._urgent.popleft(), urgent=True)
        if not self._later:
            return math.inf
        now = self._clock()
        head = self._later[0]
        limit_left = self._later_since[head] + self._hold_limit - now
        quiet_left = math.inf if self._urgent_in_flight else self._urgent_ended + self._quiet - now
        if quiet_left <= 0 or limit_left <= 0:
            del self._later_since[head]
            return self._hand_out(self._later.popleft(), urgent=False)
        return min(quiet_left, limit_left)

    def _hand_out(self, key: K, urgent: bool) -> tuple[K, bool]:
        del self._queued[key]
        self._active[key] = urgent
        if urgent:
            self._urgent_in_flight += 1
        return key, urgent

    def done(self, key: K) -> None:
        if self._active.pop(key, False):
            self._urgent_in_flight -= 1
            self._urgent_ended = self._clock()
            self._notify()  # the later lane's wait starts now
        if key in self._dirty:
            self.add(key, self._dirty.pop(key))

    def _notify(self) -> None:
        while self._waiters:
            if _wake(self._waiters.popleft()):
                return

    def in_burst(self) -> bool:
        """Whether urgent passes come in a burst, as seen from one of them: others wait or run,
        or one ended less than ``quiet_seconds`` ago (an operator that keeps pace with a burst
        finds the lane empty between its fleets)."""
        recent = self._clock() - self._urgent_ended < self._quiet
        return bool(self._urgent) or self._urgent_in_flight > 1 or recent

    def idle(self) -> bool:
        return not self._queued and not self._active and not self._settling


def _wake(waiter: asyncio.Future[None]) -> bool:
    """Wake a waiting worker; False if it is no longer waiting (woken already, or cancelled)."""
    if waiter.done():
        return False
    waiter.set_result(None)
    return True
