"""A scripted API for the operator's watch streams: listings and watch events in the order the
API server would send them (the streams' own logic under test; e2e runs them against a real one)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from ttsfleet.operator.kinds import Kind


class ScriptedKube:
    """``lists[plural]``: (items, resourceVersion) per listing; ``watches[plural]``: one list of
    events (or an exception to raise) per watch. A watch with nothing left waits until ``close``."""

    def __init__(
        self,
        lists: dict[str, list[tuple[list[dict[str, Any]], str]]] | None = None,
        watches: dict[str, list[list[dict[str, Any]] | Exception]] | None = None,
    ) -> None:
        self.lists = lists or {}
        self.watches = watches or {}
        self.listings: list[str] = []
        self.watched_from: list[str] = []
        self._closed = threading.Event()
        self.parked = threading.Event()  # a watch waits with nothing left to send

    def list_versioned(
        self, kind: Kind, namespace: str | None, label_selector: str
    ) -> tuple[list[dict[str, Any]], str]:
        self.listings.append(kind.plural)
        scripted = self.lists.get(kind.plural) or [([], "1")]
        return scripted.pop(0) if len(scripted) > 1 else scripted[0]

    def watch(
        self, kind: Kind, namespace: str | None, label_selector: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[dict[str, Any]]:
        self.watched_from.append(resource_version)
        scripted = self.watches.get(kind.plural) or []
        if not scripted:
            self.parked.set()
            self._closed.wait()
            return
        step = scripted.pop(0)
        if isinstance(step, Exception):
            raise step
        yield from step

    def close(self) -> None:
        self._closed.set()
