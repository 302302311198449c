"""Python client for a ttsfleet worker: streamed synthesis over Triton's gRPC ``ModelStreamInfer``.

One ``TtsClient`` holds one gRPC stream and runs one request on it at a time (Triton's stream
reports in-band errors without a request id, so one request in flight keeps errors attributable).
An in-band error ends that request only; the stream stays open for the next one. For concurrent
requests use one client per concurrent stream.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ttsfleet import contract
from ttsfleet.worker.audio import DEFAULT_FORMAT, decode


class TtsError(Exception):
    """Base of everything the client raises."""


class ServerUnavailable(TtsError):
    pass


class ModelNotReady(TtsError):
    pass


class RequestRejected(TtsError):
    """The worker answered this request with an in-band error (bad text, unknown voice, ...)."""


@dataclass(frozen=True)
class Chunk:
    index: int
    audio: bytes
    final: bool
    audio_format: str
    received_after: float  # seconds since the request was sent

    def samples(self) -> np.ndarray:
        return decode(self.audio, self.audio_format)


def _input(name: str, value: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[value.encode("utf-8")]], dtype=np.object_))
    return tensor


def _text_input(text: str | bytes) -> grpcclient.InferInput:
    raw = text.encode("utf-8") if isinstance(text, str) else text  # bytes pass through as sent
    tensor = grpcclient.InferInput(contract.INPUT_TEXT, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[raw]], dtype=np.object_))
    return tensor


class TtsClient:
    def __init__(self, url: str, model: str = contract.MODEL_NAME, timeout: float = 300.0) -> None:
        self.url = url
        self.model = model
        self.timeout = timeout
        self._client = grpcclient.InferenceServerClient(url=url)
        self._responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self._streaming = False

    def check_ready(self) -> None:
        try:
            live = self._client.is_server_live()
        except InferenceServerException as error:
            raise ServerUnavailable(f"no ttsfleet worker answers at {self.url}: {error.message()}") from None
        if not live:
            raise ServerUnavailable(f"the worker at {self.url} is not live")
        try:
            ready = self._client.is_model_ready(self.model)
        except InferenceServerException as error:
            raise ModelNotReady(f"model {self.model!r} at {self.url}: {error.message()}") from None
        if not ready:
            raise ModelNotReady(f"model {self.model!r} at {self.url} is not ready (loading or warming up)")

    def _ensure_stream(self) -> None:
        if not self._streaming:
            self._client.start_stream(callback=lambda result, error: self._responses.put((result, error)))
            self._streaming = True

    def stream(
        self, text: str | bytes, voice: str | None = None, audio_format: str = DEFAULT_FORMAT
    ) -> Iterator[Chunk]:
        """Yield audio chunks in order; the last has ``final=True``. Raises ``RequestRejected``."""
        self._ensure_stream()
        inputs = [_text_input(text), _input(contract.INPUT_FORMAT, audio_format)]
        if voice is not None:
            inputs.append(_input(contract.INPUT_VOICE, voice))
        started = time.monotonic()
        try:
            self._client.async_stream_infer(self.model, inputs, request_id=uuid.uuid4().hex)
        except InferenceServerException as error:
            raise ServerUnavailable(f"sending to {self.url} failed: {error.message()}") from None
        while True:
            try:
                result, failure = self._responses.get(timeout=self.timeout)
            except queue.Empty:
                raise TtsError(f"no response from {self.url} within {self.timeout:.0f}s") from None
            if failure is not None:
                raise RequestRejected(failure.message() if hasattr(failure, "message") else str(failure))
            audio = result.as_numpy(contract.OUTPUT_AUDIO).reshape(-1)[0]
            chunk = Chunk(
                index=int(result.as_numpy(contract.OUTPUT_CHUNK_INDEX).reshape(-1)[0]),
                audio=bytes(audio),
                final=bool(result.as_numpy(contract.OUTPUT_FINAL).reshape(-1)[0]),
                audio_format=audio_format,
                received_after=time.monotonic() - started,
            )
            yield chunk
            if chunk.final:
                return

    def synthesize(self, text: str, voice: str | None = None) -> np.ndarray:
        """The whole utterance as float32 samples at ``contract.SAMPLE_RATE_HZ``."""
        parts = [chunk.samples() for chunk in self.stream(text, voice, "float32")]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        if self._streaming:
            self._client.stop_stream()
            self._streaming = False
        self._client.close()

    def __enter__(self) -> TtsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
