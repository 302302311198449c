"""Custom TTS metrics, exported on Triton's own metrics endpoint (python-backend metrics API).

``tts_queue_length`` is what KEDA scales on, so it counts all the work a pod has not answered
yet: requests Triton still holds in its scheduler queue (its own
``nv_inference_pending_request_count``, read from the local metrics endpoint) plus requests the
model has accepted and not finished. GPU figures come from NVML when there is a GPU; without one
they are simply not exported.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ttsfleet.contract import (
    METRIC_ACTIVE_STREAMS,
    METRIC_AUDIO_SECONDS,
    METRIC_BATCH_SIZE,
    METRIC_ENGINE_HEALTHY,
    METRIC_GPU_MEMORY_USED,
    METRIC_GPU_UTILIZATION,
    METRIC_QUEUE_LENGTH,
    METRIC_REQUEST_DURATION,
    METRIC_TIME_TO_FIRST_AUDIO,
)

log = logging.getLogger("ttsfleet.worker.metrics")

LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64]
TRITON_PENDING = "nv_inference_pending_request_count"


def pending_from_exposition(text: str, model: str) -> int | None:
    """Triton's pending-request gauge for ``model`` from a Prometheus text exposition."""
    pattern = re.compile(rf'^{TRITON_PENDING}\{{[^}}]*model="{re.escape(model)}"[^}}]*\}}\s+(\S+)', re.M)
    values = [float(match) for match in pattern.findall(text)]
    return int(sum(values)) if values else None


@dataclass(frozen=True)
class GpuSample:
    memory_used_bytes: int
    utilization_ratio: float


class GpuSampler:
    """NVML reader; ``sample()`` is None on machines without an NVIDIA GPU."""

    def __init__(self, index: int = 0) -> None:
        self._handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._nvml = pynvml
        except Exception as error:  # no driver or no GPU: nothing to report, not a failure
            log.debug("no GPU metrics: %s", error)

    def sample(self) -> GpuSample | None:
        if self._handle is None:
            return None
        memory = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
        return GpuSample(int(memory.used), rates.gpu / 100.0)


class TtsMetrics:
    """Implements ``service.Observer`` on top of ``triton_python_backend_utils`` metric families."""

    def __init__(self, pb_utils: Any, model: str, metrics_url: str | None, poll_seconds: float = 1.0) -> None:
        family = pb_utils.MetricFamily
        labels = {"model": model}
        self._model = model
        self._labels = labels
        self._families = {
            name: family(name=name, description=description, kind=kind)
            for name, description, kind in (
                (METRIC_REQUEST_DURATION, "Request duration to the last audio chunk", family.HISTOGRAM),
                (METRIC_TIME_TO_FIRST_AUDIO, "Time from request to first audio chunk", family.HISTOGRAM),
                (METRIC_QUEUE_LENGTH, "Requests queued or in progress, not yet answered", family.GAUGE),
                (METRIC_ACTIVE_STREAMS, "Streams open in the model", family.GAUGE),
                (METRIC_AUDIO_SECONDS, "Seconds of audio produced", family.COUNTER),
                (METRIC_BATCH_SIZE, "Sentences per ChatTTS inference call", family.HISTOGRAM),
                (METRIC_GPU_MEMORY_USED, "GPU memory in use (NVML)", family.GAUGE),
                (METRIC_GPU_UTILIZATION, "GPU utilisation 0..1 (NVML)", family.GAUGE),
                (METRIC_ENGINE_HEALTHY, "1 while ChatTTS answers; 0 when calls keep failing or hang", family.GAUGE),
            )
        }
        self._per_voice: dict[tuple[str, str], Any] = {}
        self._queue = self._families[METRIC_QUEUE_LENGTH].Metric(labels=labels)
        self._active = self._families[METRIC_ACTIVE_STREAMS].Metric(labels=labels)
        self._batch = self._families[METRIC_BATCH_SIZE].Metric(labels=labels, buckets=BATCH_BUCKETS)
        self._healthy = self._families[METRIC_ENGINE_HEALTHY].Metric(labels=labels)
        self._healthy.set(1)
        self._health_problem: Callable[[], str | None] | None = None
        self._last_problem: str | None = None
        self._gpu = GpuSampler()
        self._gpu_metrics = (
            (
                self._families[METRIC_GPU_MEMORY_USED].Metric(labels=labels),
                self._families[METRIC_GPU_UTILIZATION].Metric(labels=labels),
            )
            if self._gpu.sample() is not None
            else None
        )
        self._lock = threading.Lock()
        self._open = 0
        self._last_triton_pending = 0
        self._metrics_url = metrics_url
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, args=(poll_seconds,), daemon=True)
        self._poller.start()

    def _voice_metric(self, name: str, voice: str) -> Any:
        key = (name, voice)
        if key not in self._per_voice:
            labels = {**self._labels, "voice": voice or "none"}
            family = self._families[name]
            if name == METRIC_AUDIO_SECONDS:
                self._per_voice[key] = family.Metric(labels=labels)
            else:
                self._per_voice[key] = family.Metric(labels=labels, buckets=LATENCY_BUCKETS)
        return self._per_voice[key]

    # service.Observer
    def request_started(self) -> None:
        with self._lock:
            self._open += 1
            self._active.set(self._open)

    def first_audio(self, voice: str, seconds: float) -> None:
        self._voice_metric(METRIC_TIME_TO_FIRST_AUDIO, voice).observe(seconds)

    def request_finished(self, voice: str, seconds: float, audio_seconds: float, ok: bool) -> None:
        with self._lock:
            self._open -= 1
            self._active.set(self._open)
        if ok:
            self._voice_metric(METRIC_REQUEST_DURATION, voice).observe(seconds)
            self._voice_metric(METRIC_AUDIO_SECONDS, voice).increment(audio_seconds)

    def pending_sentences(self, count: int) -> None:
        self._refresh_queue(self._last_triton_pending)  # no HTTP round trip on the serving path

    def batch_ran(self, sentences: int) -> None:
        self._batch.observe(sentences)

    def _triton_pending(self) -> int:
        if not self._metrics_url:
            return 0
        try:
            with urllib.request.urlopen(self._metrics_url, timeout=0.5) as response:
                return pending_from_exposition(response.read().decode(), self._model) or 0
        except OSError:
            return 0

    def _refresh_queue(self, triton_pending: int | None = None) -> None:
        pending = self._triton_pending() if triton_pending is None else triton_pending
        self._last_triton_pending = pending
        with self._lock:
            self._queue.set(pending + self._open)

    def watch_health(self, problem: Callable[[], str | None]) -> None:
        """Export ``problem()`` (None: healthy, else why not) as tts_engine_healthy each poll."""
        self._health_problem = problem

    def _refresh_health(self) -> None:
        if self._health_problem is None:
            return
        problem = self._health_problem()
        if problem != self._last_problem:
            if problem is None:
                log.info("speech engine healthy again")
            else:
                log.error("speech engine unhealthy", extra={"problem": problem})
            self._last_problem = problem
        self._healthy.set(0 if problem else 1)

    def _poll(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            self._refresh_queue()
            self._refresh_health()
            sample = self._gpu.sample() if self._gpu_metrics else None
            if sample is not None and self._gpu_metrics is not None:
                memory, utilization = self._gpu_metrics
                memory.set(sample.memory_used_bytes)
                utilization.set(sample.utilization_ratio)

    def close(self) -> None:
        self._stop.set()
        self._poller.join(timeout=2)
