"""The controller loop: events enqueue a fleet key; a bounded pool of workers drains the queue,
one pass per fleet at a time (requeue.WorkQueue), each pass reading the fleet from the watch-fed
cache; a failed pass comes back after its backoff; a periodic resync enqueues every known fleet
from memory (no listing) to catch what no event announces. No pass runs before the cache has
listed.

Only the active replica of a kopf peering acts. kopf pauses its watches on a standby (the
fleets'), and a pass runs only for a namespace this replica is active in; the resync is ours, so
once per period it reads the peering object and applies kopf's rule (peering.is_active).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ttsfleet.operator import heap, kinds, metrics, peering
from ttsfleet.operator.cache import Cache, Key
from ttsfleet.operator.kube import ApiError, Kube
from ttsfleet.operator.peering import DEFAULT_LIFETIME_SECONDS
from ttsfleet.operator.reconcile import Reconciler
from ttsfleet.operator.requeue import WorkQueue

log = logging.getLogger(__name__)

# How often the resync looks whether the passes it enqueued are all done.
_DRAIN_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Options:
    namespaces: tuple[str, ...] = ()
    clusterwide: bool = False
    resync_seconds: float = 30.0
    max_workers: int = 8
    # How long a fleet's pass waits after a pod or a child's status moved, gathering the rest of
    # the burst: its status follows a pod that late, and a pod's start costs one pass, not several.
    coalesce_seconds: float = 1.0
    # A burst of new or edited fleets arrives as many urgent passes with short gaps between them;
    # the other passes (status writes, reports, the resync) wait until none has ended for this
    # long, and run anyway once they have waited ``burst_hold_limit_seconds``.
    burst_quiet_seconds: float = 0.5
    burst_hold_limit_seconds: float = 30.0
    # HA: the kopf peering this replica belongs to (None: standalone), its identity and priority.
    peering: str | None = None
    identity: str = ""
    priority: int = 0
    peering_lifetime: int = DEFAULT_LIFETIME_SECONDS


def _exact(namespaces: tuple[str, ...]) -> list[str]:
    return [ns for ns in namespaces if not any(ch in ns for ch in "*?[!")]


def active_namespaces(kube: Kube, options: Options, namespaces: set[str]) -> set[str] | None:
    """The namespaces this replica is active for; None means every namespace (no peering, or
    the active replica of a cluster-wide peering)."""
    if options.peering is None:
        return None
    now = datetime.now(UTC)
    if options.clusterwide:
        # One cluster-wide peering decides for every namespace.
        obj = kube.get(kinds.CLUSTER_PEERING, None, options.peering)
        return None if peering.is_active(obj, options.identity, options.priority, now) else set()
    return {
        ns
        for ns in namespaces | set(_exact(options.namespaces))
        if peering.is_active(kube.get(kinds.PEERING, ns, options.peering), options.identity, options.priority, now)
    }


def _peering_targets(options: Options) -> list[tuple[kinds.Kind, str | None]]:
    if options.clusterwide:
        return [(kinds.CLUSTER_PEERING, None)]
    return [(kinds.PEERING, ns) for ns in _exact(options.namespaces)]


def mark_paused(kube: Kube, options: Options, paused: bool) -> None:
    """Say in our own peering entry whether this replica may still be acting."""
    assert options.peering is not None
    patch = {"status": {options.identity: {peering.PAUSED_MARK: paused}}}
    for kind, namespace in _peering_targets(options):
        try:
            kube.merge_patch(kind, namespace, options.peering, patch)
        except ApiError as err:
            if err.status != 404:
                raise


def replicas_still_acting(kube: Kube, options: Options) -> list[str]:
    """Outranked peers that have not yet said they stopped (peering.still_acting)."""
    assert options.peering is not None
    now = datetime.now(UTC)
    found: list[str] = []
    for kind, namespace in _peering_targets(options):
        obj = kube.get(kind, namespace, options.peering)
        found += peering.still_acting(obj, options.identity, options.priority, now)
    return found


class Controller:
    def __init__(self, reconciler: Reconciler, cache: Cache, options: Options) -> None:
        self.reconciler = reconciler
        self.cache = cache
        self.options = options
        self.queue: WorkQueue[Key] = WorkQueue(options.burst_quiet_seconds, options.burst_hold_limit_seconds)
        # None: active everywhere. kopf delivers events only to an active replica (see saw_event).
        self._active: set[str] | None = None if options.peering is None else set()
        # kopf paused this replica (a peer outranks it): no pass at all until kopf resumes it,
        # whatever is queued or retried, and stale events do not make it active again.
        self._paused = False
        # Resumed, but a replica we outranked may still be acting: no pass until it says it stopped.
        self._taking_over = False
        self._running = 0  # passes in flight
        self._none_running = asyncio.Event()
        self._none_running.set()
        self._pause_listener = peering.KopfPauseListener(self.paused, self.resumed) if options.peering else None
        self._executor = ThreadPoolExecutor(max_workers=options.max_workers, thread_name_prefix="ttsfleet-pass")
        self._tasks: list[asyncio.Task[None]] = []

    # -- inputs --------------------------------------------------------------------------------

    def enqueue(self, key: Key, urgent: bool = True) -> None:
        self.queue.add(key, urgent)
        metrics.QUEUE_DEPTH.set(len(self.queue))

    def enqueue_report(self, key: Key) -> None:
        """Something the fleet reports on moved (a pod, a controller's status on a child): a
        pass after ``Options.coalesce_seconds``, one for the whole burst (requeue.WorkQueue)."""
        self.queue.add_coalesced(key, self.options.coalesce_seconds)
        metrics.QUEUE_DEPTH.set(len(self.queue))

    @property
    def passes_running(self) -> int:
        return self._running

    def saw_event(self, namespace: str | None) -> None:
        """kopf delivers watch events only while this replica is active (for that namespace)."""
        if self._paused:
            return  # an event kopf queued before it paused us
        if self._active is not None:
            if self.options.clusterwide:
                self._active = None
            elif namespace:
                self._active.add(namespace)
        metrics.ACTIVE.set(1)

    def paused(self) -> None:
        """kopf paused this replica: stop acting now, not at the next resync. (For namespaced
        peerings kopf does not say which namespace; all pause until kopf resumes one, and the
        resync then sorts the namespaces out.)"""
        self._paused = True
        if self._active is None or self._active:
            log.info("outranked in the peering: no further passes until kopf resumes this replica")
        self._active = set()
        metrics.ACTIVE.set(0)
        self._spawn(self._say_paused(), "ttsfleet-paused")

    def resumed(self) -> None:
        """kopf resumed this replica; its watch events (a fresh listing) make it active again,
        once no replica it outranked is still acting."""
        self._paused = False
        self._taking_over = True
        self._spawn(self._take_over(), "ttsfleet-take-over")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            loop = asyncio.get_running_loop()  # kopf decides (and logs) on its event loop
        except RuntimeError:
            coro.close()  # not running (shutting down): nothing to hand over
            return
        self._tasks.append(loop.create_task(coro, name=name))

    async def _say_paused(self) -> None:
        """Once the passes in flight are done, tell the replica taking over that we stopped."""
        await self._none_running.wait()
        if self._paused:
            await asyncio.to_thread(mark_paused, self.reconciler.kube, self.options, True)

    async def _take_over(self) -> None:
        kube, options = self.reconciler.kube, self.options
        try:
            # First take back our own mark: from now on this replica may be acting.
            await asyncio.to_thread(mark_paused, kube, options, False)
            # A replica that says nothing within a peering lifetime is hung or of an older
            # version: kopf's own rule (the newcomer acts) applies then.
            deadline = time.monotonic() + options.peering_lifetime
            while waiting := await asyncio.to_thread(replicas_still_acting, kube, options):
                if time.monotonic() > deadline:
                    log.warning("taking over although %s did not say it stopped", waiting)
                    break
                await asyncio.sleep(_DRAIN_POLL_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handover check failed; acting as kopf decided")
        finally:
            self._taking_over = False
        self.enqueue_all()  # what was skipped while waiting

    def enqueue_all(self) -> int:
        fleets = self.cache.fleets()
        for key in fleets:
            self.enqueue(key)
        return len(fleets)

    # -- the loop ------------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._work(), name=f"ttsfleet-worker-{i}") for i in range(self.options.max_workers)
        ]
        self._tasks.append(loop.create_task(self._resync_forever(), name="ttsfleet-resync"))
        if self._pause_listener is not None:
            self._pause_listener.install()

    async def stop(self) -> None:
        if self._pause_listener is not None:
            self._pause_listener.uninstall()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _is_active(self, namespace: str) -> bool:
        return not self._paused and not self._taking_over and (self._active is None or namespace in self._active)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        # A pass before the children are listed would find none: it would apply every child
        # again and prune nothing.
        await self.cache.wait_listed()
        while True:
            # Status writes and reports come out of the queue only once the urgent passes (new
            # and edited fleets, repairs) are over: their requests would slow those down.
            key, urgent = await self.queue.get_with_lane()
            try:
                if self._is_active(key[0]):
                    # Read the cache here, on the loop that kopf updates it from.
                    observed = self.cache.observe(*key)
                    # Other new or edited fleets still wait for (or are getting) their children.
                    # Passes from the later lane always write: the burst cannot starve the status.
                    others_wait = urgent and self.queue.in_burst()
                    self._running += 1
                    self._none_running.clear()
                    try:
                        result = await loop.run_in_executor(
                            self._executor, self.reconciler.reconcile, key[0], key[1], observed, others_wait
                        )
                    finally:
                        self._running -= 1
                        if not self._running:
                            self._none_running.set()
                    if result is not None and result.status_deferred:
                        self.queue.add(key, urgent=False)  # back once the burst is over
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pass of %s/%s failed", *key)
            finally:
                self.queue.done(key)
                due = self.reconciler.retries.pending(key)
                if due is not None:
                    self.queue.add_after(key, max(0.0, due - time.monotonic()))
                metrics.QUEUE_DEPTH.set(len(self.queue))

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.resync_seconds)
            try:
                await self.resync()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("resync failed")

    async def resync(self) -> None:
        fleets = self.cache.fleets()
        namespaces = {ns for ns, _ in fleets}
        active = await asyncio.get_running_loop().run_in_executor(
            self._executor, active_namespaces, self.reconciler.kube, self.options, namespaces
        )
        self._active = set() if self._paused else active
        mine = [key for key in fleets if self._is_active(key[0])]
        metrics.ACTIVE.set(1 if self._active is None or self._active else 0)
        # Only the active replica reports per-fleet figures.
        self.reconciler.fleets.retain(mine)
        for key in mine:
            self.enqueue(key, urgent=False)
        deadline = time.monotonic() + self.options.resync_seconds
        while not self.queue.idle():
            if time.monotonic() > deadline:
                return  # still busy a whole period later: not a completed resync
            await asyncio.sleep(_DRAIN_POLL_SECONDS)
        heap.release_free_memory()  # a few ms, once a period: RSS tracks what is held (see heap)
        metrics.RESYNCS.inc()
