"""The operator's own Prometheus metrics: reconcile latency and errors, writes it made, resyncs
and queue depth, fleets by condition, desired and ready replicas per fleet, and what its event
loop holds (tasks, watch streams), so a leak shows on a dashboard before it shows as memory."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RECONCILE_SECONDS = Histogram(
    "ttsfleet_operator_reconcile_duration_seconds",
    "Duration of one reconcile pass of one fleet.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter(
    "ttsfleet_operator_reconcile_errors_total",
    "Reconcile passes that failed or reported a problem, by reason.",
    ["reason"],
)
FLEETS = Gauge(
    "ttsfleet_operator_fleets",
    "Fleets by condition type and status.",
    ["condition", "status"],
)
REPLICAS_DESIRED = Gauge("ttsfleet_operator_replicas_desired", "spec.replicas per fleet.", ["namespace", "name"])
REPLICAS_READY = Gauge("ttsfleet_operator_replicas_ready", "Ready pods per fleet.", ["namespace", "name"])
APPLIES = Counter(
    "ttsfleet_operator_applies_total",
    "Server-side applies of children (only children that differ from what is wanted are applied).",
    ["kind"],
)
STATUS_WRITES = Counter("ttsfleet_operator_status_writes_total", "Fleet status writes (only on change).")
RESYNCS = Counter(
    "ttsfleet_operator_resyncs_total",
    "Periodic resyncs whose passes all finished: every fleet was looked at once more.",
)
QUEUE_DEPTH = Gauge("ttsfleet_operator_queue_depth", "Fleets waiting for a pass.")
ACTIVE = Gauge(
    "ttsfleet_operator_active",
    "1 while this replica is the active one of its peering (always 1 without peering), 0 on standby.",
)


class FleetTracker:
    """Keeps the last known conditions per fleet, to export counts across fleets."""

    def __init__(self) -> None:
        self._conditions: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()
        self._exported: set[tuple[str, str]] = set()

    def observe(self, namespace: str, name: str, desired: int, status: dict[str, Any]) -> None:
        REPLICAS_DESIRED.labels(namespace, name).set(desired)
        REPLICAS_READY.labels(namespace, name).set(status.get("readyReplicas") or 0)
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        with self._lock:
            self._conditions[(namespace, name)] = conditions
            self._export()

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            if self._conditions.pop((namespace, name), None) is None:
                return
            self._export()
        for gauge in (REPLICAS_DESIRED, REPLICAS_READY):
            gauge.remove(namespace, name)

    def retain(self, fleets: Iterable[tuple[str, str]]) -> None:
        """Forget every fleet but these: deleted ones the watch missed, and all of them on a
        replica that went standby, so only the active replica reports per-fleet figures."""
        keep = set(fleets)
        with self._lock:
            gone = [key for key in self._conditions if key not in keep]
        for namespace, name in gone:
            self.forget(namespace, name)

    def _export(self) -> None:
        counts = Tally(pair for conds in self._conditions.values() for pair in conds.items())
        for pair in self._exported - set(counts):
            FLEETS.labels(*pair).set(0)
        for (condition, status), count in counts.items():
            FLEETS.labels(condition, status).set(count)
        self._exported |= set(counts)


# kopf names the task behind each watch stream: "watcher for <resource>@<namespace>" (one per
# watched resource and namespace), "peering observer for ...", and the observers of CRDs and
# namespaces, which keep a watch of their own.
_WATCH_TASK_PREFIXES = ("watcher for ", "peering observer for ", "resource observer", "namespace observer")
# The operator's own streams (streams.py) run each on a thread of this name.
WATCH_THREAD_PREFIX = "ttsfleet-watch-"


class LoopCollector(Collector):
    """Tasks on the operator's event loop and the watch streams among them, read at scrape time
    (from the metrics server's thread: ``asyncio.all_tasks`` copes with a set changing meanwhile)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        names = [task.get_name() for task in asyncio.all_tasks(loop)]
        yield GaugeMetricFamily("ttsfleet_operator_asyncio_tasks", "Tasks on the operator's event loop.", len(names))
        own = [thread for thread in threading.enumerate() if thread.name.startswith(WATCH_THREAD_PREFIX)]
        yield GaugeMetricFamily(
            "ttsfleet_operator_watch_streams",
            "Watch streams the operator runs (kopf's watcher tasks and the operator's stream threads: one "
            "per resource and namespace).",
            sum(name.startswith(_WATCH_TASK_PREFIXES) for name in names) + sum(t.is_alive() for t in own),
        )


LOOP = LoopCollector()
REGISTRY.register(LOOP)


def watch_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Report this loop's tasks (called once the operator's loop runs)."""
    LOOP.loop = loop
