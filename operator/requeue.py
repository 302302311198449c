"""When to try a fleet again after a pass that failed: exponential backoff per fleet.

kopf's event handlers are fire-and-forget and the periodic resync may be minutes away; a pass that
hit a transient API failure (a 5xx, a conflict, admission not yet knowing a new CRD) is retried
after 1, 2, 4 ... seconds, capped, and the backoff resets after the first clean pass.
"""

from __future__ import annotations

import threading
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
