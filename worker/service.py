"""Serving requests: validate each one, schedule ChatTTS calls, stream chunks in order.

Triton-agnostic (the model file adapts Triton's request/response objects to ``Stream``), so the
serving rules are unit-testable without a server:

* every request ends exactly once: its last chunk carries FINAL, or it gets one in-band error
  (which also ends the Triton request), or, when its client went away, a bare end flag;
* bad input, a full worker (backpressure) and a failed engine call are in-band errors for the
  requests concerned only; a failed ``send`` ends only the request it was for;
* the scheduler thread sleeps when there is nothing to synthesize.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from ttsfleet.contract import AUDIO_FORMATS, OVERLOADED_PREFIX, UNAVAILABLE_PREFIX, ServingConfig
from ttsfleet.worker.audio import DEFAULT_FORMAT, duration_seconds, encode
from ttsfleet.worker.planner import Progress, Step, next_step
from ttsfleet.worker.streaming import Piece
from ttsfleet.worker.text import InputError, decode_text, split_sentences, validate_text
from ttsfleet.worker.voices import resolve_voice

log = logging.getLogger("ttsfleet.worker.service")

SHUTTING_DOWN = f"{UNAVAILABLE_PREFIX}: the worker is shutting down; retry on another replica"

# What an in-band error is, so the model can give it Triton's matching code: the caller's input
# (INVALID_ARG: HTTP 400), this replica cannot take it now (UNAVAILABLE: retry elsewhere), or a
# failure inside the worker (INTERNAL).
ErrorKind = Literal["invalid", "unavailable", "internal"]
INVALID: ErrorKind = "invalid"
UNAVAILABLE: ErrorKind = "unavailable"
INTERNAL: ErrorKind = "internal"


class Synthesizer(Protocol):
    def synthesize(self, texts: list[str], voice_id: str) -> list[np.ndarray]: ...


@runtime_checkable
class StreamingSynthesizer(Protocol):
    """An engine that streams within sentences (``Engine.stream``): pieces of each text as they
    become final, each text ending with one final piece."""

    def stream(self, texts: list[str], voice_id: str) -> Iterator[list[Piece]]: ...


def whole_sentences(engine: Synthesizer, texts: list[str], voice_id: str) -> Iterator[list[Piece]]:
    """An engine without sub-sentence streaming: one final piece per text when its call returns."""
    clips = engine.synthesize(texts, voice_id)
    if len(clips) != len(texts):
        raise RuntimeError(f"the engine returned {len(clips)} clips for {len(texts)} texts")
    yield [Piece(index, clip, True, 0) for index, clip in enumerate(clips)]


class Stream(Protocol):
    """Where a request's responses go (Triton's response sender, adapted)."""

    def send_chunk(self, audio: bytes, index: int, final: bool) -> None: ...

    def send_error(self, message: str, kind: ErrorKind = INTERNAL) -> None: ...

    def is_cancelled(self) -> bool:
        """True once the client has gone away (Triton's request cancellation)."""
        ...

    def send_cancelled(self) -> None:
        """End a cancelled request (Triton still needs its final flag)."""
        ...


class Observer(Protocol):
    def request_started(self) -> None: ...

    def first_audio(self, voice: str, seconds: float) -> None: ...

    def request_finished(self, voice: str, seconds: float, audio_seconds: float, ok: bool) -> None: ...

    def pending_sentences(self, count: int) -> None: ...

    def batch_ran(self, sentences: int) -> None: ...


class NullObserver:
    def request_started(self) -> None:
        pass

    def first_audio(self, voice: str, seconds: float) -> None:
        pass

    def request_finished(self, voice: str, seconds: float, audio_seconds: float, ok: bool) -> None:
        pass

    def pending_sentences(self, count: int) -> None:
        pass

    def batch_ran(self, sentences: int) -> None:
        pass


@dataclass
class RawRequest:
    text: bytes | str | None
    voice: bytes | str | None
    audio_format: bytes | str | None
    stream: Stream
    received: float = field(default_factory=time.monotonic)


@dataclass
class Job:
    stream: Stream
    voice: str
    audio_format: str
    sentences: list[str]
    received: float
    progress: Progress = field(init=False)
    sent: int = 0  # chunks sent: the next chunk's index
    spoken: int = 0  # sentences whose audio has been sent in full
    audio_seconds: float = 0.0
    done: bool = False

    def __post_init__(self) -> None:
        self.progress = Progress(self.voice, len(self.sentences))


def _as_str(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return decode_text(value)


def parse(raw: RawRequest, config: ServingConfig) -> Job:
    if raw.text is None:
        raise InputError("the request has no TEXT input")
    text = validate_text(decode_text(raw.text), config.max_text_chars)
    voice = resolve_voice(config, _as_str(raw.voice))
    audio_format = (_as_str(raw.audio_format) or DEFAULT_FORMAT).strip().lower() or DEFAULT_FORMAT
    if audio_format not in AUDIO_FORMATS:
        raise InputError(f"unknown audio format {audio_format!r}; use one of {', '.join(AUDIO_FORMATS)}")
    sentences = split_sentences(text, config.max_sentence_chars)
    if not sentences:
        raise InputError("text has nothing to speak")
    return Job(raw.stream, voice.id, audio_format, sentences, raw.received)


def overloaded_message(limit: int) -> str:
    return f"{OVERLOADED_PREFIX}: this replica already holds {limit} open requests; retry on another replica"


def unhealthy_message(problem: str) -> str:
    return f"{UNAVAILABLE_PREFIX}: the speech engine is unhealthy ({problem}); retry on another replica"


@dataclass
class EngineHealth:
    """Whether ChatTTS still answers: too many failed calls in a row, or one call running past the
    bound, turn it unhealthy (the model then reports not-ready); the next good call heals it."""

    max_consecutive_failures: int
    call_timeout_seconds: float
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    call_started: float | None = None

    def started(self) -> None:
        self.call_started = self.clock()

    def ended(self, ok: bool) -> None:
        self.call_started = None
        self.failures = 0 if ok else self.failures + 1

    def problem(self) -> str | None:
        """Why the engine is unhealthy now; None while it is healthy."""
        if self.max_consecutive_failures and self.failures >= self.max_consecutive_failures:
            return f"{self.failures} ChatTTS calls in a row failed"
        started = self.call_started
        if started is not None and self.call_timeout_seconds:
            running = self.clock() - started
            if running > self.call_timeout_seconds:
                return f"a ChatTTS call has been running for {running:.0f}s (bound {self.call_timeout_seconds:.0f}s)"
        return None


class Scheduler:
    """Continuous batching over all open requests, one ChatTTS call per step.

    Triton's dynamic batcher gathers concurrent arrivals (``max_batch_size``, ``max_queue_delay``)
    and hands them to ``submit``; the model's ``execute`` returns at once and this loop streams
    the answers. Requests that arrive while a call runs join the next call instead of waiting
    for a whole earlier batch to finish, so closed-loop clients do not settle into two
    half-full alternating batches.
    """

    def __init__(
        self,
        engine: Synthesizer | StreamingSynthesizer,
        config: ServingConfig,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self._stream: Callable[[list[str], str], Iterator[list[Piece]]] = (
            engine.stream if isinstance(engine, StreamingSynthesizer) else functools.partial(whole_sentences, engine)
        )
        self.config = config
        self.observer = observer or NullObserver()
        self.clock = clock
        self.limit = config.open_request_limit()
        self.health = EngineHealth(
            config.engine_max_consecutive_failures, float(config.engine_call_timeout_seconds), clock
        )
        self._jobs: list[Job] = []
        # Guards _jobs, each job's ``done`` and _stopping; never held while sending or synthesizing.
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- intake ---------------------------------------------------------------------------------

    def submit(self, requests: list[RawRequest]) -> None:
        """Accept a Triton batch: bad requests and those over the bound are answered now, the
        rest queue for synthesis."""
        refused: list[tuple[RawRequest, str, ErrorKind]] = []
        for raw in requests:
            self.observer.request_started()
            try:
                job = parse(raw, self.config)
            except InputError as error:
                refused.append((raw, str(error), INVALID))
                continue
            problem = self.health.problem()
            with self._wake:
                if self._stopping:
                    refused.append((raw, SHUTTING_DOWN, UNAVAILABLE))
                elif problem is not None:
                    refused.append((raw, unhealthy_message(problem), UNAVAILABLE))
                elif len(self._jobs) >= self.limit:
                    refused.append((raw, overloaded_message(self.limit), UNAVAILABLE))
                else:
                    self._jobs.append(job)
                    self._wake.notify()
        for raw, message, kind in refused:
            _quietly(raw.stream.send_error, message, kind)
            self.observer.request_finished("", self.clock() - raw.received, 0.0, ok=False)
        self.observer.pending_sentences(self.open_requests())

    def open_requests(self) -> int:
        with self._wake:
            return len(self._jobs)

    # -- one step -------------------------------------------------------------------------------

    def step(self) -> bool:
        """Run one ChatTTS call over the open requests; False when there was nothing to do."""
        try:
            return self._step()
        finally:
            self._reap()

    def _step(self) -> bool:
        self._drop_cancelled()
        with self._wake:
            jobs = [job for job in self._jobs if not job.done]
        step = next_step([job.progress for job in jobs], self.config.max_batch_size)
        if step is None:
            return False
        texts = [jobs[item.job].sentences[item.sentence] for item in step.items]
        self.observer.batch_ran(len(texts))
        self.health.started()
        try:
            self._run_call(step, jobs, texts)
        except Exception as error:  # one failed call fails its requests, not the instance
            self.health.ended(ok=False)
            log.exception("synthesis failed", extra={"voice": step.voice, "texts": len(texts)})
            for item in step.items:
                self._fail(jobs[item.job], f"synthesis failed: {error}")
            return True
        self.health.ended(ok=True)
        return True

    def _run_call(self, step: Step, jobs: list[Job], texts: list[str]) -> None:
        """One (streaming) ChatTTS call: pieces go out as they come, in each request's order.

        A request with two sentences in the call gets pieces of both interleaved; those of a later
        sentence wait here until the earlier one has had its final piece. Between yields, requests
        whose client went away leave, and once nobody in the call is left the call stops.
        """
        position = {(item.job, item.sentence): index for index, item in enumerate(step.items)}
        waiting: dict[int, list[Piece]] = {index: [] for index in range(len(step.items))}
        members = [jobs[index] for index in dict.fromkeys(item.job for item in step.items)]
        pieces_of_call = self._stream(texts, step.voice)
        try:
            for pieces in pieces_of_call:
                self.health.started()  # still answering: the hang bound counts from here
                for piece in pieces:
                    waiting[piece.index].append(piece)
                    self._flush(step.items[piece.index].job, jobs, position, waiting)
                self._drop_cancelled(members)
                if all(job.done for job in members):
                    return  # everyone left mid-call: stop generating
        finally:
            close = getattr(pieces_of_call, "close", None)
            if close is not None:
                close()  # ends ChatTTS's generation if we left early
        missing = [item for item in step.items if not jobs[item.job].done and jobs[item.job].spoken <= item.sentence]
        if missing:
            raise RuntimeError(f"the engine ended the call without the final audio of {len(missing)} sentences")

    def _flush(self, job_index: int, jobs: list[Job], position: dict[tuple[int, int], int],
               waiting: dict[int, list[Piece]]) -> None:  # fmt: skip
        """Send what a request can take now: pieces of its current sentence, in order."""
        job = jobs[job_index]
        while not job.done:
            index = position.get((job_index, job.spoken))
            if index is None or not waiting[index]:
                return
            piece = waiting[index].pop(0)
            self._deliver(job, piece.audio, piece.final)

    def _deliver(self, job: Job, audio: np.ndarray, sentence_end: bool) -> None:
        if job.done:  # cancelled or failed while the call ran
            return
        final = sentence_end and job.spoken == len(job.sentences) - 1
        if audio.size or final:  # an empty piece of a sentence has nothing to send
            try:
                job.stream.send_chunk(encode(audio, job.audio_format), job.sent, final)
            except Exception as error:  # a broken stream ends its own request only
                log.warning("sending a chunk failed", extra={"chunk": job.sent, "error": str(error)})
                self._fail(job, f"sending audio failed: {error}")
                return
            if job.sent == 0:
                self.observer.first_audio(job.voice, self.clock() - job.received)
            job.sent += 1
            job.audio_seconds += duration_seconds(audio.size)
        if sentence_end:
            job.spoken += 1
        if final:
            self._end(job, ok=True)

    def _drop_cancelled(self, among: list[Job] | None = None) -> None:
        """Requests whose client went away leave before the next call takes their slots (and,
        between the pieces of a streaming call, stop getting audio)."""
        with self._wake:
            jobs = [job for job in (self._jobs if among is None else among) if not job.done]
        for job in jobs:
            try:
                cancelled = job.stream.is_cancelled()
            except Exception:  # cannot even ask: treat the stream as gone
                log.exception("checking for cancellation failed")
                cancelled = True
            if cancelled and self._end(job, ok=False):
                _quietly(job.stream.send_cancelled)

    def _reap(self) -> None:
        """Remove ended requests, and end any the step left behind (a sentence planned but never
        delivered, or nothing left to plan): no request waits forever, none is counted twice."""
        with self._wake:
            stranded = [
                job
                for job in self._jobs
                if not job.done and (job.spoken < job.progress.planned or not job.progress.pending)
            ]
        for job in stranded:
            log.error("request stranded by the scheduler; failing it", extra={"spoken": job.spoken})
            self._fail(job, "internal error in the worker's scheduler; retry")
        with self._wake:
            self._jobs = [job for job in self._jobs if not job.done]
            remaining = len(self._jobs)
        self.observer.pending_sentences(remaining)

    def _end(self, job: Job, ok: bool) -> bool:
        """Mark ``job`` ended; True only for the one caller that ended it."""
        with self._wake:
            if job.done:
                return False
            job.done = True
        self.observer.request_finished(job.voice, self.clock() - job.received, job.audio_seconds, ok=ok)
        return True

    def _fail(self, job: Job, message: str, kind: ErrorKind = INTERNAL) -> None:
        if self._end(job, ok=False):
            _quietly(job.stream.send_error, message, kind)

    # -- the thread -----------------------------------------------------------------------------

    def _has_work(self) -> bool:
        return any(not job.done and job.progress.pending for job in self._jobs)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._has_work() and not self._stopping:
                    self._wake.wait()
                if self._stopping and not self._has_work():
                    return
            try:
                self.step()
            except Exception:  # the loop must outlive any single bad step
                log.exception("scheduler step failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ttsfleet-scheduler", daemon=True)
        self._thread.start()

    def stop(self, drain_seconds: float) -> None:
        """Finish open requests for up to ``drain_seconds``, then fail what is left."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(drain_seconds)
        with self._wake:
            leftovers = list(self._jobs)
        for job in leftovers:
            self._fail(job, SHUTTING_DOWN, UNAVAILABLE)
        self._reap()


def _quietly(send: Callable[..., None], *args: object) -> None:
    """Send on a stream that may already be broken; nothing more can be told to its client."""
    try:
        send(*args)
    except Exception as error:
        log.warning("could not reach a client", extra={"error": str(error)})


def serve_batch(
    requests: list[RawRequest],
    engine: Synthesizer,
    config: ServingConfig,
    observer: Observer | None = None,
) -> None:
    """Answer ``requests`` synchronously (no background thread): for tests and in-process use."""
    scheduler = Scheduler(engine, config, observer)
    scheduler.submit(requests)
    while scheduler.step():
        pass
