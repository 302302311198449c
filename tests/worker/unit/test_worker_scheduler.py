"""The scheduler under faults: failing sends, failing engine calls, cancelled clients, a full
replica. A stand-in synthesizer (no torch, no server); every request must end exactly once."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

from ttsfleet.contract import OVERLOADED_PREFIX, UNAVAILABLE_PREFIX, ServingConfig, Voice
from ttsfleet.worker.service import EngineHealth, RawRequest, Scheduler

pytestmark = pytest.mark.unit

CONFIG = ServingConfig(voices=(Voice("default", seed=1), Voice("calm", seed=2)), max_batch_size=4, max_text_chars=500)


class SendFailed(RuntimeError):
    pass


@dataclass
class Stream:
    """A response sender that can break: ``fail_chunk`` raises on that chunk index, ``fail_error``
    makes error sends raise too, ``cancel_after`` reports the client gone after that many chunks."""

    fail_chunk: int | None = None
    fail_error: bool = False
    cancel_after: int | None = None
    events: list[tuple] = field(default_factory=list)
    ended: int = 0  # terminal events: final chunk, error, cancelled (attempted, even if they raised)

    def send_chunk(self, audio: bytes, index: int, final: bool) -> None:
        if index == self.fail_chunk:
            if final:
                self.ended += 1
            raise SendFailed(f"stream broke at chunk {index}")
        self.events.append(("chunk", index, final))
        if final:
            self.ended += 1

    def send_error(self, message: str, kind: str = "internal") -> None:
        self.ended += 1
        if self.fail_error:
            raise SendFailed("error send failed too")
        self.events.append(("error", kind, message))

    def is_cancelled(self) -> bool:
        chunks = sum(1 for event in self.events if event[0] == "chunk")
        return self.cancel_after is not None and chunks >= self.cancel_after

    def send_cancelled(self) -> None:
        self.ended += 1
        self.events.append(("cancelled",))

    @property
    def chunks(self) -> list[int]:
        return [event[1] for event in self.events if event[0] == "chunk"]


@dataclass
class Synth:
    calls: list[list[str]] = field(default_factory=list)
    fail_when: str | None = None
    short_by: int = 0  # return this many clips too few

    def synthesize(self, texts: list[str], voice_id: str) -> list[np.ndarray]:
        self.calls.append(list(texts))
        if self.fail_when and any(self.fail_when in text for text in texts):
            raise RuntimeError("engine exploded")
        clips = [np.full(240, 0.1, dtype=np.float32) for _ in texts]
        return clips[: len(clips) - self.short_by]


@dataclass
class Counts:
    started: int = 0
    finished: int = 0
    ok: int = 0
    pending: list[int] = field(default_factory=list)

    def request_started(self) -> None:
        self.started += 1

    def first_audio(self, voice: str, seconds: float) -> None:
        pass

    def request_finished(self, voice: str, seconds: float, audio_seconds: float, ok: bool) -> None:
        self.finished += 1
        self.ok += ok

    def pending_sentences(self, count: int) -> None:
        self.pending.append(count)

    def batch_ran(self, sentences: int) -> None:
        pass


def _sentences(tag: str, count: int) -> str:
    return " ".join(f"Sentence {i} of {tag}." for i in range(count))


def _run(scheduler: Scheduler) -> None:
    steps = 0
    while scheduler.step():
        steps += 1
        assert steps < 1_000, "the scheduler never ran out of work"


def _scheduler(synth: Synth, config: ServingConfig = CONFIG) -> tuple[Scheduler, Counts]:
    counts = Counts()
    return Scheduler(synth, config, counts), counts


def test_failed_send_fails_only_that_request_and_everyone_ends_once() -> None:
    streams = [Stream(), Stream(fail_chunk=0), Stream(), Stream(fail_chunk=1)]
    scheduler, counts = _scheduler(Synth())
    scheduler.submit([RawRequest(_sentences(str(i), 3), None, None, s) for i, s in enumerate(streams)])
    _run(scheduler)
    assert streams[0].chunks == [0, 1, 2] and streams[2].chunks == [0, 1, 2]  # neighbours lose nothing
    assert streams[1].chunks == [] and streams[1].events[-1][:2] == ("error", "internal")
    assert streams[3].chunks == [0] and "sending audio failed" in streams[3].events[-1][2]
    assert [stream.ended for stream in streams] == [1, 1, 1, 1]
    assert scheduler.open_requests() == 0
    assert (counts.started, counts.finished, counts.ok) == (4, 4, 2)
    assert counts.pending[-1] == 0  # tts_queue_length is back to zero


def test_a_stream_that_cannot_even_take_its_error_still_ends_and_frees_its_slot() -> None:
    broken = Stream(fail_chunk=0, fail_error=True)
    fine = Stream()
    scheduler, counts = _scheduler(Synth())
    scheduler.submit([RawRequest("One. Two.", None, None, broken), RawRequest("One. Two.", None, None, fine)])
    _run(scheduler)
    assert broken.ended == 1 and fine.chunks == [0, 1]
    assert scheduler.open_requests() == 0 and counts.finished == counts.started == 2


def test_engine_failure_fails_its_requests_once_and_the_next_call_works() -> None:
    doomed, fine, later = Stream(), Stream(), Stream()
    synth = Synth(fail_when="doom")
    scheduler, counts = _scheduler(synth)
    scheduler.submit([RawRequest("doom now. And more.", None, None, doomed), RawRequest("Fine.", "calm", None, fine)])
    _run(scheduler)
    scheduler.submit([RawRequest("Later.", None, None, later)])
    _run(scheduler)
    assert doomed.events == [("error", "internal", "synthesis failed: engine exploded")]
    assert fine.chunks == [0] and later.chunks == [0]
    assert [s.ended for s in (doomed, fine, later)] == [1, 1, 1] and counts.finished == 3


def test_an_engine_answer_with_missing_clips_fails_the_call_instead_of_stranding_requests() -> None:
    streams = [Stream(), Stream()]
    scheduler, counts = _scheduler(Synth(short_by=1))
    scheduler.submit([RawRequest("One.", None, None, s) for s in streams])
    _run(scheduler)
    assert all(stream.ended == 1 and stream.events[-1][0] == "error" for stream in streams)
    assert scheduler.open_requests() == 0 and counts.finished == 2


def test_cancelled_request_leaves_before_the_next_call_and_frees_its_slot() -> None:
    gone = Stream(cancel_after=1)
    staying = Stream()
    synth = Synth()
    scheduler, counts = _scheduler(synth)
    scheduler.submit(
        [RawRequest(_sentences("gone", 6), None, None, gone), RawRequest(_sentences("stay", 6), None, None, staying)]
    )
    _run(scheduler)
    assert gone.chunks == [0] and gone.events[-1] == ("cancelled",) and gone.ended == 1
    assert staying.chunks == list(range(6))
    assert not any("Sentence 1 of gone" in text for call in synth.calls for text in call)
    assert scheduler.open_requests() == 0 and counts.finished == 2


def test_beyond_the_bound_new_requests_are_refused_at_once_with_a_retryable_error() -> None:
    config = ServingConfig(voices=CONFIG.voices, max_batch_size=2, max_open_requests=2)
    streams = [Stream() for _ in range(3)]
    synth = Synth()
    scheduler, counts = _scheduler(synth, config)
    scheduler.submit([RawRequest(f"Request {i}.", None, None, s) for i, s in enumerate(streams)])
    assert streams[2].ended == 1 and synth.calls == []  # refused before any synthesis
    kind, message = streams[2].events[0][1:]
    assert kind == "unavailable" and message.startswith(OVERLOADED_PREFIX) and "2 open requests" in message
    _run(scheduler)
    assert streams[0].chunks == [0] and streams[1].chunks == [0]
    scheduler.submit([RawRequest("Room again.", None, None, again := Stream())])  # slots freed
    _run(scheduler)
    assert again.chunks == [0] and counts.finished == counts.started == 4


def test_default_bound_comes_from_max_batch_size() -> None:
    assert ServingConfig(max_batch_size=8).open_request_limit() == 32
    assert ServingConfig(max_batch_size=8, max_open_requests=5).open_request_limit() == 5


def test_new_request_gets_ahead_of_later_sentences_of_older_ones() -> None:
    synth = Synth()
    config = ServingConfig(voices=CONFIG.voices, max_batch_size=2)
    scheduler, _ = _scheduler(synth, config)
    old = [Stream(), Stream()]
    scheduler.submit([RawRequest(_sentences(f"old{i}", 8), None, None, s) for i, s in enumerate(old)])
    scheduler.step()  # both old requests are streaming now
    scheduler.submit([RawRequest("Newcomer here.", None, None, new := Stream())])
    scheduler.step()
    assert "Newcomer here." in synth.calls[-1]
    _run(scheduler)
    assert new.chunks == [0] and all(stream.chunks == list(range(8)) for stream in old)


def test_random_faults_every_request_ends_exactly_once_and_the_queue_drains() -> None:
    rng = random.Random(12)
    synth = Synth(fail_when="boom")
    config = ServingConfig(voices=CONFIG.voices, max_batch_size=4, max_open_requests=12, max_text_chars=500)
    scheduler, counts = _scheduler(synth, config)
    streams: list[Stream] = []
    for _ in range(40):
        batch = []
        for _ in range(rng.randint(1, 4)):
            sentences = rng.randint(1, 5)
            stream = Stream(
                fail_chunk=rng.choice([None, None, None, 0, sentences - 1]),
                fail_error=rng.random() < 0.3,
                cancel_after=rng.choice([None, None, None, 1, 2]),
            )
            text = _sentences("boom" if rng.random() < 0.1 else "ok", sentences)
            batch.append(RawRequest(rng.choice([text, text, "   "]), None, None, stream))
            streams.append(stream)
        scheduler.submit(batch)
        for _ in range(rng.randint(0, 3)):
            scheduler.step()
    _run(scheduler)
    assert [stream.ended for stream in streams] == [1] * len(streams)
    assert scheduler.open_requests() == 0 and counts.pending[-1] == 0
    assert counts.started == counts.finished == len(streams)


def test_stop_fails_what_is_left_once_with_a_retry_elsewhere_error() -> None:
    scheduler, counts = _scheduler(Synth())
    streams = [Stream(), Stream()]
    scheduler.submit([RawRequest(_sentences("x", 4), None, None, s) for s in streams])
    scheduler.stop(drain_seconds=0)  # no thread: nothing drains
    assert all(s.ended == 1 and s.events[-1][2].startswith(UNAVAILABLE_PREFIX) for s in streams)
    scheduler.submit([RawRequest("Too late.", None, None, late := Stream())])
    assert late.events[-1][1] == "unavailable" and counts.finished == 3


class CountingCondition(threading.Condition):
    """Counts how often the scheduler thread went to sleep: the positive signal that it is idle."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.sleeps += 1
        self.notify_all()  # wake a test waiting for this sleep
        return super().wait(timeout)


def _wait_for(condition: CountingCondition, predicate) -> None:  # type: ignore[no-untyped-def]
    with condition:
        assert condition.wait_for(predicate, timeout=60), "the scheduler thread never got there"


def test_idle_scheduler_thread_sleeps_instead_of_spinning() -> None:
    synth = Synth(fail_when="boom")
    scheduler, counts = _scheduler(synth)
    wake = CountingCondition()
    scheduler._wake = wake
    steps = [0]
    real_step = scheduler.step

    def counted_step() -> bool:
        steps[0] += 1
        return real_step()

    scheduler.step = counted_step  # type: ignore[method-assign]
    scheduler.start()
    try:
        broken = Stream(fail_chunk=0, fail_error=True)
        scheduler.submit([RawRequest("boom. Two.", None, None, Stream()), RawRequest("Hi.", None, None, broken)])
        _wait_for(wake, lambda: counts.finished == 2 and scheduler.open_requests() == 0)
        _wait_for(wake, lambda: wake.sleeps > 0)
        sleeps, done_steps = wake.sleeps, steps[0]
        with wake:
            wake.notify_all()  # a spurious wake-up with nothing to do
        _wait_for(wake, lambda: wake.sleeps > sleeps)
        assert steps[0] == done_steps, "the thread ran steps with nothing to do"
    finally:
        scheduler.stop(drain_seconds=5)


def test_engine_health_turns_on_failures_and_hangs_and_heals() -> None:
    now = [0.0]
    health = EngineHealth(max_consecutive_failures=2, call_timeout_seconds=10, clock=lambda: now[0])
    health.started()
    health.ended(ok=False)
    assert health.problem() is None
    health.started()
    health.ended(ok=False)
    assert "2 ChatTTS calls in a row failed" in (health.problem() or "")
    health.started()
    health.ended(ok=True)
    assert health.problem() is None
    health.started()
    now[0] = 11.0
    assert "running for 11s" in (health.problem() or "")
    health.ended(ok=True)
    assert health.problem() is None


def test_unhealthy_engine_refuses_new_requests_as_retryable() -> None:
    synth = Synth(fail_when="boom")
    config = ServingConfig(voices=CONFIG.voices, engine_max_consecutive_failures=2)
    scheduler, _ = _scheduler(synth, config)
    for _ in range(2):
        scheduler.submit([RawRequest("boom.", None, None, Stream())])
        _run(scheduler)
    scheduler.submit([RawRequest("Fine words.", None, None, refused := Stream())])
    assert refused.events[0][1] == "unavailable" and "unhealthy" in refused.events[0][2]
