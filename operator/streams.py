"""Watch streams of the fleets' children and pods, run by the operator itself rather than kopf.

At a burst of new fleets most watch events are children and pods: the echo of every child the
operator applies, the controllers' status reports on StatefulSets and PDBs, every pod moving.
kopf spent about 1 ms of its event loop's CPU on each (handler machinery, per-object workers,
indexes), as much as the passes that apply the children; a stream here parses, trims and packs
an event on its own thread and hands the result to the event loop in one call. kopf still
watches the fleets, the add-ons' kinds (their CRDs come and go: kopf rescans them, see
discovery.py) and the CRDs, and runs the peering.

One stream per kind and namespace (None: every namespace), with the operator's server-side label
selector. Its thread lists, then watches from the list's resourceVersion with bookmarks; a watch
the API server ends is resumed from the last version seen; an expired version (410 Gone) is
listed again, and what changed in between is handed over as events (a child deleted meanwhile
arrives as DELETED). What a stream shows is kept per fleet, trimmed and packed (cache.py), and
changed only on the event loop, where passes read it.

Streams keep running while kopf pauses a standby replica: its cache is current when it takes
over, and their events never mark it active (only kopf's events do: controller.saw_event).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kopf._cogs.structs.references import NamespaceName, match_namespace, select_specific_namespaces

from ttsfleet.operator import cache, kinds, metrics, naming
from ttsfleet.operator.cache import Key, Packed
from ttsfleet.operator.kinds import Kind
from ttsfleet.operator.kube import ApiError, Kube

log = logging.getLogger(__name__)

# The API server ends each watch after this long (kopf asks for the same); the stream goes on
# from where it was.
WATCH_SECONDS = 600
_FIRST_RETRY_SECONDS = 0.5
_LAST_RETRY_SECONDS = 30.0

# Server-side label selectors: the API server sends only our children and the fleets' pods.
CHILD_SELECTOR = f"{naming.LABEL_MANAGED_BY}={naming.FIELD_MANAGER}"
POD_SELECTOR = f"{naming.LABEL_NAME}={naming.APP_NAME}"

# (type, namespace, fleet, trimmed object); type None never reaches a handler.
Handler = Callable[[str, str, str, dict[str, Any]], None]


@dataclass(frozen=True)
class Feed:
    """What one kind's streams watch, which label names the fleet, and what of an object is kept."""

    kind: Kind
    selector: str
    fleet_label: str
    trim: Callable[[Mapping[str, Any]], dict[str, Any]]


# The children every cluster serves; the add-ons' kinds stay with kopf (see above).
CHILD_FEEDS = tuple(
    Feed(kind, CHILD_SELECTOR, naming.LABEL_DEPLOYMENT, cache.trim_object)
    for kind in kinds.CHILD_KINDS
    if kind not in kinds.OPTIONAL_CHILD_KINDS
)
# The StatefulSet's selector labels: immutable, so every pod of a fleet carries them.
POD_FEED = Feed(kinds.POD, POD_SELECTOR, naming.LABEL_INSTANCE, cache.trim_pod)
STREAMED_KINDS = frozenset(feed.kind for feed in (*CHILD_FEEDS, POD_FEED))


class Stream:
    """One kind in one namespace (or all): a thread that lists and watches, a store the event
    loop owns."""

    def __init__(
        self,
        kube: Kube,
        feed: Feed,
        namespace: str | None,
        in_scope: Callable[[str], bool],
        loop: asyncio.AbstractEventLoop,
        handler: Handler,
        on_listed: Callable[[Stream], None],
    ) -> None:
        self.kube = kube
        self.feed = feed
        self.namespace = namespace
        self._in_scope = in_scope
        self._loop = loop
        self._handler = handler
        self._on_listed = on_listed
        self.objects: dict[Key, dict[str, Packed]] = {}  # fleet -> object name -> object
        self._fleet_of: dict[tuple[str, str], Key] = {}  # (namespace, object name) -> fleet
        self.listed = False
        self.relists = 0
        self._stopping = threading.Event()
        where = f" in {namespace}" if namespace else ""
        self.name = f"{feed.kind.plural}{where}"
        self._thread = threading.Thread(
            target=self._run, name=f"{metrics.WATCH_THREAD_PREFIX}{feed.kind.plural}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    # -- on the stream's thread ----------------------------------------------------------------

    def _run(self) -> None:
        version: str | None = None
        delay = _FIRST_RETRY_SECONDS
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._list()
                began = time.monotonic()
                version = self._watch(version)
                delay = _FIRST_RETRY_SECONDS
                if version is not None and time.monotonic() - began < _FIRST_RETRY_SECONDS:
                    # A watch ended as soon as it began (a proxy closing it?): not in a hot loop.
                    self._stopping.wait(_FIRST_RETRY_SECONDS)
            except ApiError as err:
                if err.status == 410:
                    version = None  # expired before the watch began: list again, at once
                    continue
                delay = self._retry_after(err, delay)
            except Exception as err:  # a dropped connection, the API server restarting
                delay = self._retry_after(err, delay)

    def _retry_after(self, err: Exception, delay: float) -> float:
        if self._stopping.is_set():
            return delay
        # Before the first listing every pass waits for this stream: say so each time.
        level = logging.WARNING if not self.listed or delay >= _LAST_RETRY_SECONDS else logging.DEBUG
        log.log(level, "watch of %s failed, again in %.1f s: %s", self.name, delay, err)
        self._stopping.wait(delay)
        return min(delay * 2, _LAST_RETRY_SECONDS)

    def _entry(self, obj: Mapping[str, Any]) -> tuple[str, str, str | None, Packed, dict[str, Any]] | None:
        """(namespace, name, fleet, packed, trimmed); fleet None: the object names no fleet (any
        more: a hand edit of its label), so it leaves whichever fleet it was kept under."""
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace")
        if not namespace or not self._in_scope(namespace):
            return None
        trimmed = self.feed.trim(obj)
        fleet = (meta.get("labels") or {}).get(self.feed.fleet_label) or None
        return namespace, meta.get("name", ""), fleet, Packed.of(trimmed), trimmed

    def _list(self) -> str:
        items, version = self.kube.list_versioned(self.feed.kind, self.namespace, self.feed.selector)
        fresh: dict[Key, dict[str, Packed]] = {}
        for item in items:
            if (entry := self._entry(item)) is not None:
                namespace, name, fleet, packed, _ = entry
                if fleet is not None:
                    fresh.setdefault((namespace, fleet), {})[name] = packed
        self._to_loop(self._replace, fresh)
        return version

    def _watch(self, version: str) -> str | None:
        """Events from ``version`` on; the version to go on from, or None to list again."""
        for event in self.kube.watch(self.feed.kind, self.namespace, self.feed.selector, version, WATCH_SECONDS):
            if self._stopping.is_set():
                break
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return None
                raise ApiError(int(obj.get("code") or 500), str(obj.get("reason", "")), str(obj.get("message", "")))
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED", "DELETED") and (entry := self._entry(obj)) is not None:
                self._to_loop(self._deliver, kind, *entry)
        return version

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the operator is exiting
            self._stopping.set()

    # -- on the event loop ---------------------------------------------------------------------

    def _deliver(
        self, kind: str, namespace: str, name: str, fleet: str | None, packed: Packed, trimmed: dict[str, Any]
    ) -> None:
        key = (namespace, fleet) if fleet is not None else None
        before = self._fleet_of.pop((namespace, name), None)
        if before is not None:
            named = self.objects.get(before, {})
            named.pop(name, None)
            if not named:
                self.objects.pop(before, None)
            if before != key:
                # Relabelled by hand: the fleet it was kept under has lost it (and repairs that).
                self._handler("DELETED", before[0], before[1], trimmed)
        if key is None:
            return
        if kind != "DELETED":
            self.objects.setdefault(key, {})[name] = packed
            self._fleet_of[(namespace, name)] = key
        self._handler(kind, namespace, key[1], trimmed)

    def _replace(self, fresh: dict[Key, dict[str, Packed]]) -> None:
        old, self.objects = self.objects, fresh
        self._fleet_of = {(key[0], name): key for key, named in fresh.items() for name in named}
        if not self.listed:
            # The first listing: the fleets' own initial listing runs every fleet once anyway.
            self.listed = True
            self._on_listed(self)
            return
        self.relists += 1
        changes = 0
        for key, named in old.items():
            for name, packed in named.items():
                if name not in fresh.get(key, {}):
                    changes += 1
                    self._handler("DELETED", key[0], key[1], packed.unpack())
        for key, named in fresh.items():
            for name, packed in named.items():
                before = old.get(key, {}).get(name)
                if before is None or before.data != packed.data:
                    changes += 1
                    self._handler("ADDED" if before is None else "MODIFIED", key[0], key[1], packed.unpack())
        log.info("watch of %s had expired; listed again, %d changes missed meanwhile", self.name, changes)


def scopes(namespaces: Iterable[str], clusterwide: bool) -> tuple[list[str | None], Callable[[str], bool]]:
    """Where the streams watch, and which namespaces they keep: kopf's own namespace patterns
    (globs, ``!negations``) are watched cluster-wide and filtered here."""
    patterns = list(namespaces)
    if clusterwide or not patterns:
        return [None], lambda _: True
    exact: list[str | None] = [str(name) for name in sorted(select_specific_namespaces(patterns))]
    if len(exact) == len(set(patterns)):
        return exact, lambda _: True
    return [None], lambda namespace: any(match_namespace(NamespaceName(namespace), pattern) for pattern in patterns)


class Streams:
    """Every stream of the operator; reads what they keep for one fleet."""

    def __init__(self, kube: Kube, namespaces: Iterable[str], clusterwide: bool) -> None:
        self.kube = kube
        self._where, self._in_scope = scopes(namespaces, clusterwide)
        self._streams: list[Stream] = []
        self._children: list[Stream] = []
        self._pods: list[Stream] = []
        self._listed = asyncio.Event()
        self._started = 0.0

    @staticmethod
    def connections(namespaces: Iterable[str], clusterwide: bool) -> int:
        """How many connections the streams hold open at once."""
        return len(scopes(namespaces, clusterwide)[0]) * (len(CHILD_FEEDS) + 1)

    def start(self, on_child: Handler, on_pod: Handler) -> None:
        loop = asyncio.get_running_loop()
        self._started = time.monotonic()
        for namespace in self._where:
            for feed in CHILD_FEEDS:
                self._children.append(
                    Stream(self.kube, feed, namespace, self._in_scope, loop, on_child, self._stream_listed)
                )
            self._pods.append(Stream(self.kube, POD_FEED, namespace, self._in_scope, loop, on_pod, self._stream_listed))
        self._streams = self._children + self._pods
        for stream in self._streams:
            stream.start()

    def stop(self) -> None:
        for stream in self._streams:
            stream.stop()

    def _stream_listed(self, _: Stream) -> None:
        if all(stream.listed for stream in self._streams):
            count = sum(len(named) for stream in self._streams for named in stream.objects.values())
            log.info(
                "listed %d children and pods of %d streams in %.1f s",
                count,
                len(self._streams),
                time.monotonic() - self._started,
            )
            self._listed.set()

    async def wait_listed(self) -> None:
        await self._listed.wait()

    @staticmethod
    def _of(streams: list[Stream], key: Key) -> list[Packed]:
        return [packed for stream in streams for packed in stream.objects.get(key, {}).values()]

    def children(self, key: Key) -> list[Packed]:
        return self._of(self._children, key)

    def pods(self, key: Key) -> list[Packed]:
        return self._of(self._pods, key)
