"""The operator's event-loop gauges: tasks and the watch streams among them, read from another
thread as the metrics server does."""

from __future__ import annotations

import asyncio
import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ttsfleet.operator.metrics import WATCH_THREAD_PREFIX, LoopCollector

pytestmark = pytest.mark.unit


def _scrape(collector: LoopCollector) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    values = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            values[name] = float(value)
    return values


def test_tasks_and_watch_streams_of_a_running_loop_are_counted_from_another_thread() -> None:
    collector = LoopCollector()
    assert _scrape(collector) == {}  # no loop yet: nothing to report, nothing invented
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        names = ["watcher for tts.ttsfleet.io/v1alpha1/ttsdeployments@ns", "watcher for v1/pods@ns"]
        names += ["peering observer for ns", "resource observer", "ttsfleet-worker-0"]
        tasks = [asyncio.create_task(stop.wait(), name=name) for name in names]
        collector.loop = asyncio.get_running_loop()
        ready.set()
        await asyncio.gather(*tasks)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
    thread.start()
    # One of the operator's own streams (streams.py), on a thread of its own.
    stream_done = threading.Event()
    stream = threading.Thread(target=stream_done.wait, name=f"{WATCH_THREAD_PREFIX}statefulsets")
    stream.start()
    try:
        assert ready.wait(30)
        # Five named tasks plus main() itself; four of them hold a watch stream in kopf, and the
        # operator runs one more.
        assert _scrape(collector) == {"ttsfleet_operator_asyncio_tasks": 6.0, "ttsfleet_operator_watch_streams": 5.0}
        stream_done.set()
        stream.join(30)
        assert _scrape(collector)["ttsfleet_operator_watch_streams"] == 4.0  # an ended stream is not counted
    finally:
        stream_done.set()
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
    assert _scrape(collector) == {}  # a closed loop is not read
