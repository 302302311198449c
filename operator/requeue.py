"""When to try a fleet again after a pass that failed: exponential backoff per fleet.

kopf's event handlers are fire-and-forget and the periodic resync may be minutes away; a pass that
hit a transient API failure (a 5xx, a conflict, admission not yet knowing a new CRD) is retried
after 1, 2, 4 ... seconds, capped, and the backoff resets after the first clean pass. The work
queue the passes are drained from lives here too.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Hashable
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

    def due(self, now: float) -> list[K]:
        """The keys whose time has come; each is handed out once per failure."""
        with self._lock:
            ready = [key for key, at in self._due.items() if at <= now]
            for key in ready:
                del self._due[key]
            return ready

    def pending(self, key: K) -> float | None:
        with self._lock:
            return self._due.get(key)


class WorkQueue(Generic[K]):
    """Keys waiting for a pass, on the event loop: a key is queued at most once and handed to one
    worker at a time; a key added while a worker holds it is handed out again once it is done, so
    the newest event is never lost and two passes of one fleet never overlap.

    Two lanes: urgent keys (a new or changed fleet, a child edited or deleted, a retry) are handed
    out before the rest (pods moving, the resync), so that a burst of new fleets gets its children
    before the status updates of fleets already converging."""

    def __init__(self) -> None:
        self._urgent: deque[K] = deque()
        self._later: deque[K] = deque()
        self._queued: dict[K, bool] = {}  # key -> in the urgent lane
        self._active: set[K] = set()
        self._dirty: dict[K, bool] = {}
        self._items = asyncio.Semaphore(0)

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: K, urgent: bool = True) -> None:
        if key in self._active:
            self._dirty[key] = self._dirty.get(key, False) or urgent
        elif key not in self._queued:
            self._queued[key] = urgent
            (self._urgent if urgent else self._later).append(key)
            self._items.release()
        elif urgent and not self._queued[key]:
            self._later.remove(key)
            self._urgent.append(key)
            self._queued[key] = True

    def add_after(self, key: K, delay: float, urgent: bool = True) -> None:
        asyncio.get_running_loop().call_later(delay, self.add, key, urgent)

    async def get(self) -> K:
        await self._items.acquire()
        key = self._urgent.popleft() if self._urgent else self._later.popleft()
        del self._queued[key]
        self._active.add(key)
        return key

    def done(self, key: K) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self.add(key, self._dirty.pop(key))

    def urgent_waiting(self) -> bool:
        """Whether keys wait in the urgent lane (new or edited fleets, repairs)."""
        return bool(self._urgent)

    def idle(self) -> bool:
        return not self._queued and not self._active
