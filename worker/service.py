"""Serving requests: validate each one, schedule ChatTTS calls, stream chunks in order.

Triton-agnostic (the model file adapts Triton's request/response objects to ``Job``), so the
rules "bad input gets an in-band error" and "an engine failure fails only the requests in that
call" are unit-testable without a server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ttsfleet.contract import AUDIO_FORMATS, ServingConfig
from ttsfleet.worker.audio import DEFAULT_FORMAT, duration_seconds, encode
from ttsfleet.worker.planner import Progress, next_step
from ttsfleet.worker.text import InputError, decode_text, split_sentences, validate_text
from ttsfleet.worker.voices import resolve_voice

log = logging.getLogger("ttsfleet.worker.service")


class Synthesizer(Protocol):
    def synthesize(self, texts: list[str], voice_id: str) -> list[np.ndarray]: ...


class Stream(Protocol):
    """Where a request's responses go (Triton's response sender, adapted)."""

    def send_chunk(self, audio: bytes, index: int, final: bool) -> None: ...

    def send_error(self, message: str) -> None: ...


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
    sent: int = 0
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
        engine: Synthesizer,
        config: ServingConfig,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.config = config
        self.observer = observer or NullObserver()
        self.clock = clock
        self._jobs: list[Job] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def submit(self, requests: list[RawRequest]) -> None:
        """Accept a Triton batch: bad requests are answered now, the rest queue for synthesis."""
        accepted = []
        for raw in requests:
            self.observer.request_started()
            try:
                accepted.append(parse(raw, self.config))
            except InputError as error:
                raw.stream.send_error(str(error))
                self.observer.request_finished("", self.clock() - raw.received, 0.0, ok=False)
        with self._wake:
            self._jobs.extend(accepted)
            self._wake.notify()
        self.observer.pending_sentences(self.open_requests())

    def open_requests(self) -> int:
        with self._wake:
            return len(self._jobs)

    def step(self) -> bool:
        """Run one ChatTTS call over the open requests; False when there was nothing to do."""
        with self._wake:
            jobs = list(self._jobs)
        step = next_step([job.progress for job in jobs], self.config.max_batch_size)
        if step is None:
            return False
        texts = [jobs[item.job].sentences[item.sentence] for item in step.items]
        self.observer.batch_ran(len(texts))
        try:
            clips = self.engine.synthesize(texts, step.voice)
        except Exception as error:  # one failed call fails its requests, not the instance
            log.exception("synthesis failed", extra={"voice": step.voice, "texts": len(texts)})
            for item in step.items:
                self._finish(jobs[item.job], ok=False, error=f"synthesis failed: {error}")
        else:
            for item, clip in zip(step.items, clips, strict=True):
                job = jobs[item.job]
                final = item.sentence == len(job.sentences) - 1
                job.stream.send_chunk(encode(clip, job.audio_format), job.sent, final)
                if job.sent == 0:
                    self.observer.first_audio(job.voice, self.clock() - job.received)
                job.sent += 1
                job.audio_seconds += duration_seconds(clip.size)
                if final:
                    self._finish(job, ok=True)
        with self._wake:
            self._jobs = [job for job in self._jobs if not job.done]
        self.observer.pending_sentences(self.open_requests())
        return True

    def _finish(self, job: Job, ok: bool, error: str | None = None) -> None:
        if job.done:
            return
        job.done = True
        if error is not None:
            job.stream.send_error(error)
        self.observer.request_finished(job.voice, self.clock() - job.received, job.audio_seconds, ok=ok)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._jobs and not self._stopping:
                    self._wake.wait()
                if self._stopping and not self._jobs:
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
            leftovers, self._jobs = self._jobs, []
        for job in leftovers:
            self._finish(job, ok=False, error="the worker is shutting down; retry on another replica")


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
