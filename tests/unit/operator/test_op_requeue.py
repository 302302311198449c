"""The work queue (lanes, one pass per key at a time, coalescing, the burst hold) and the backoff
for fleets whose pass failed."""

from __future__ import annotations

import asyncio
import math

import pytest

from ttsfleet.operator.requeue import Backoff, WorkQueue


def test_delays_double_up_to_the_limit_and_reset_on_success() -> None:
    backoff: Backoff[str] = Backoff(first=1, limit=5)
    assert [backoff.failed("a", 0) for _ in range(5)] == [1, 2, 4, 5, 5]
    assert backoff.pending("a") == 5
    backoff.succeeded("a")
    assert backoff.pending("a") is None
    assert backoff.failed("a", 100) == 1
    assert backoff.pending("a") == 101


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_queue_hands_out_urgent_keys_first_and_never_one_key_twice_at_once() -> None:
    queue: WorkQueue[str] = WorkQueue(clock=Clock())
    queue.add("pod-moved", urgent=False)
    queue.add("resynced", urgent=False)
    queue.add("new-fleet")
    queue.add("resynced")  # an event with real work for a key already waiting: moves up
    queue.add("new-fleet")  # already queued: once
    assert len(queue) == 3
    assert queue.get_nowait() == ("new-fleet", True)
    queue.add("new-fleet")  # while a worker holds it: again after it is done, not now
    assert queue.get_nowait() == ("resynced", True)
    assert queue.get_nowait() == 30  # the later lane waits for the urgent passes (at most 30 s)
    queue.done("resynced")
    queue.done("new-fleet")
    assert queue.get_nowait() == ("new-fleet", True)
    queue.done("new-fleet")
    assert queue.get_nowait() == ("pod-moved", False)
    queue.done("pod-moved")
    assert queue.idle() and len(queue) == 0
    assert queue.get_nowait() == math.inf  # nothing queued: wait for an add


def test_a_report_waits_out_the_gaps_between_the_fleets_of_a_burst() -> None:
    """Fleets of a burst arrive with gaps between them; a status write or report run in a gap
    would compete with the children of the fleets still to come."""
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(quiet_seconds=0.5, hold_limit_seconds=30, clock=clock)
    queue.add("first")
    assert queue.get_nowait() == ("first", True)
    queue.add("pods-moved", urgent=False)
    assert queue.get_nowait() == 30  # a worker is free, but the first fleet's pass runs
    queue.done("first")
    assert queue.get_nowait() == 0.5  # the pass just ended: the next fleet may be on its way
    clock.now += 0.3
    queue.add("second")
    assert queue.get_nowait() == ("second", True)
    clock.now += 0.4
    queue.done("second")
    clock.now += 0.4
    assert queue.get_nowait() == pytest.approx(0.1)  # quiet since the second fleet's pass
    clock.now += 0.1
    assert queue.get_nowait() == ("pods-moved", False)


def test_a_burst_is_seen_from_its_last_fleet_too_and_ends_with_the_quiet() -> None:
    """A pass leaves its status for later while a burst is on (reconcile): with other fleets
    waiting or running, and also when it is the only one, right after another ended (an operator
    that keeps pace with a burst finds the lane empty between its fleets)."""
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(quiet_seconds=0.5, hold_limit_seconds=30, clock=clock)
    queue.add("alone")
    assert queue.get_nowait() == ("alone", True)
    assert not queue.in_burst()  # one fleet, nothing before it: its status goes out at once
    queue.add("second")
    assert queue.in_burst()  # another waits
    assert queue.get_nowait() == ("second", True)
    assert queue.in_burst()  # another runs
    queue.done("alone")
    clock.now += 0.4
    assert queue.in_burst()  # the only one, but "alone" ended 0.4 s ago
    queue.done("second")
    clock.now += 0.5
    queue.add("later")
    assert queue.get_nowait() == ("later", True)
    assert not queue.in_burst()  # quiet for 0.5 s: a new burst, if any, starts with this one


def test_an_endless_burst_does_not_starve_a_report_past_the_hold_limit() -> None:
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(quiet_seconds=0.5, hold_limit_seconds=30, clock=clock)
    queue.add("pods-moved", urgent=False)
    for second in range(30):
        queue.add(f"edit-{second}")
        assert queue.get_nowait() == (f"edit-{second}", True)
        assert queue.get_nowait() == 30 - second  # the report's hold limit comes first
        clock.now += 1
        queue.done(f"edit-{second}")
        queue.add(f"next-{second}")  # a new edit is always running when the report looks
        assert queue.get_nowait() == (f"next-{second}", True)
        queue.done(f"next-{second}")
    queue.add("edit-30")
    assert queue.get_nowait() == ("edit-30", True)  # urgent keys still go first
    assert queue.get_nowait() == ("pods-moved", False)  # 30 s waited: out despite the burst


def test_a_waiting_worker_gets_a_report_once_the_urgent_pass_ends_and_the_quiet_is_over() -> None:
    async def run() -> str:
        queue: WorkQueue[str] = WorkQueue(quiet_seconds=0.05)
        queue.add("new-fleet")
        assert await queue.get() == "new-fleet"
        queue.add("pods-moved", urgent=False)
        waiting = asyncio.create_task(queue.get())  # a free worker: waits for a change
        await asyncio.sleep(0)
        queue.done("new-fleet")  # the change it waits for; then the quiet, on the loop's timer
        return await asyncio.wait_for(waiting, 5)

    assert asyncio.run(run()) == "pods-moved"


def test_a_burst_of_reports_on_one_fleet_makes_one_pass_after_the_delay_and_real_work_does_not_wait() -> None:
    async def burst() -> None:
        queue: WorkQueue[str] = WorkQueue()
        for _ in range(5):  # one pod starting: scheduled, initialised, running, ready, STS status
            queue.add_coalesced("pods-moving", 0.05)
        assert len(queue) == 1 and not queue.idle()  # waiting counts: a resync waits for it too
        queue.add_coalesced("edited", 60)
        queue.add("edited")  # then real work for the same fleet: now, and only once
        assert await queue.get() == "edited"
        queue.done("edited")
        assert await asyncio.wait_for(queue.get(), 5) == "pods-moving"
        queue.add_coalesced("pods-moving", 0.05)  # while its pass runs: that pass may have missed it
        queue.done("pods-moving")
        assert await asyncio.wait_for(queue.get(), 5) == "pods-moving"
        queue.done("pods-moving")
        assert queue.idle() and len(queue) == 0

    asyncio.run(burst())


class CountingQueue(WorkQueue[str]):
    """Counts how often a worker looked for a key: each look is a worker woken."""

    looks = 0

    def get_nowait(self) -> tuple[str, bool] | float:
        self.looks += 1
        return super().get_nowait()


def test_an_add_wakes_one_waiting_worker_not_all_of_them() -> None:
    async def run() -> None:
        queue = CountingQueue()
        workers = [asyncio.create_task(queue.get()) for _ in range(8)]
        await asyncio.sleep(0)
        assert queue.looks == 8  # each looked once and waits
        queue.add("edited")
        got = await asyncio.wait_for(next(asyncio.as_completed(workers)), 5)
        await asyncio.sleep(0)
        assert got == "edited"
        assert queue.looks == 9  # one worker woke for it; the other seven slept on
        queue.add("new-a")
        queue.add("new-b")
        for _ in range(3):
            await asyncio.sleep(0)
        assert sorted(w.result() for w in workers if w.done()) == ["edited", "new-a", "new-b"]
        assert queue.looks == 11
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    asyncio.run(run())


def test_reports_that_become_due_together_each_reach_a_waiting_worker() -> None:
    """The urgent pass ending wakes one worker; when the quiet is over it takes one report and
    wakes the next worker for the others, which are due as well."""

    async def run() -> list[str]:
        queue: WorkQueue[str] = WorkQueue(quiet_seconds=0.05)
        queue.add("new-fleet")
        assert await queue.get() == "new-fleet"
        for name in ("pods-moved-a", "pods-moved-b", "pods-moved-c"):
            queue.add(name, urgent=False)
        waiting = [asyncio.create_task(queue.get()) for _ in range(3)]
        await asyncio.sleep(0)
        queue.done("new-fleet")
        return sorted(await asyncio.wait_for(asyncio.gather(*waiting), 5))

    assert asyncio.run(run()) == ["pods-moved-a", "pods-moved-b", "pods-moved-c"]
