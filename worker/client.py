"""Python client for a ttsfleet worker: streamed synthesis over Triton's gRPC ``ModelStreamInfer``.

One ``TtsClient`` holds one gRPC stream and runs one request on it at a time (Triton's stream
reports in-band errors without a request id, so one request in flight keeps errors attributable).
An in-band error ends that request only; the stream stays open for the next one. For concurrent
requests use one client per concurrent stream.

Stopping early (leaving the ``stream()`` loop, or ``close()`` mid-request) cancels the request on
the worker (gRPC cancellation), which drops it from its next ChatTTS call and frees its slot.

``FleetClient`` spreads requests over all pods of a fleet (round robin over the addresses its
headless Service resolves to, re-resolved every ``refresh_seconds`` so pods added by a scale-up
get new streams) and retries a request that a pod refused before starting it (full, draining,
unhealthy, unreachable) on the next pod.
"""

from __future__ import annotations

import functools
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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


class Overloaded(RequestRejected):
    """The worker refused the request before starting it (at its bound of open requests,
    draining, or its engine unhealthy): the same request can go to another replica."""


# Triton's answer while the model is not loaded on that server: unloaded on SIGTERM (the pod is
# draining) or by the supervisor's reload, until the readiness probe takes the pod out of the
# Service. The request never started, so another replica can take it (seen on real pods: hundreds
# of failed requests during a rollout). Once the unload has finished Triton no longer knows the
# model at all ("... is not found"): the same draining pod a moment later (seen once in 471 requests
# of a rollout). Every pod of a fleet serves the model, so a wrong name still ends, after one try per
# pod, with Triton's own message.
MODEL_NOT_LOADED = ("has no available versions", "is not found")
# Triton's answer from a server that got SIGTERM while the model is still loaded: its scheduler
# refuses new requests at enqueue ("Server is stopping, scheduler for model has stopped accepting
# new inference requests"), before any of them starts (seen once in 174 requests of a rollout on
# real pods, from a pod whose address the client had not yet dropped).
SERVER_STOPPING = "has stopped accepting new inference requests"
# Triton's answer after the model's python-backend stub died ("Stub process 'chattts_0_0' is not
# healthy."), until the worker's supervisor ends the container (at its next poll): the request
# never started.
STUB_DEAD = "is not healthy"


def _rejection(message: str) -> RequestRejected:
    refused = (contract.OVERLOADED_PREFIX, contract.UNAVAILABLE_PREFIX, *MODEL_NOT_LOADED, SERVER_STOPPING, STUB_DEAD)
    if any(reason in message for reason in refused):
        return Overloaded(message)
    return RequestRejected(message)


def _put(responses: queue.Queue[tuple[Any, Any]], result: Any, error: Any) -> None:
    responses.put((result, error))


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
        self._in_flight = False

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
            # A fresh queue per gRPC stream: late answers of a cancelled stream cannot leak into
            # the next request's.
            self._responses = queue.Queue()
            self._client.start_stream(callback=functools.partial(_put, self._responses))
            self._streaming = True

    def _drop_stream(self) -> None:
        """Cancel the gRPC stream and whatever runs on it (the worker frees the request's slot)."""
        if self._streaming:
            self._streaming = False
            self._client.stop_stream(cancel_requests=True)
        self._in_flight = False

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
            self._drop_stream()
            raise ServerUnavailable(f"sending to {self.url} failed: {error.message()}") from None
        self._in_flight = True
        try:
            while True:
                try:
                    result, failure = self._responses.get(timeout=self.timeout)
                except queue.Empty:
                    raise TtsError(f"no response from {self.url} within {self.timeout:.0f}s") from None
                if failure is not None:
                    message = failure.message() if hasattr(failure, "message") else str(failure)
                    if getattr(failure, "status", lambda: None)() is not None:
                        # A gRPC status: the transport failed (no worker, connection lost), not the request.
                        raise ServerUnavailable(f"stream to {self.url} failed: {message}")
                    self._in_flight = False  # an in-band error ends the request; the stream lives on
                    raise _rejection(message)
                audio = result.as_numpy(contract.OUTPUT_AUDIO).reshape(-1)[0]
                chunk = Chunk(
                    index=int(result.as_numpy(contract.OUTPUT_CHUNK_INDEX).reshape(-1)[0]),
                    audio=bytes(audio),
                    final=bool(result.as_numpy(contract.OUTPUT_FINAL).reshape(-1)[0]),
                    audio_format=audio_format,
                    received_after=time.monotonic() - started,
                )
                if chunk.final:
                    self._in_flight = False
                yield chunk
                if chunk.final:
                    return
        finally:
            if self._in_flight:  # the caller stopped early, timed out, or the stream broke
                self._drop_stream()

    def synthesize(self, text: str, voice: str | None = None) -> np.ndarray:
        """The whole utterance as float32 samples at ``contract.SAMPLE_RATE_HZ``."""
        parts = [chunk.samples() for chunk in self.stream(text, voice, "float32")]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        if self._in_flight:
            self._drop_stream()  # do not wait for a request nobody reads any more
        if self._streaming:
            self._client.stop_stream()
            self._streaming = False
        self._client.close()

    def __enter__(self) -> TtsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class _Streamer(Protocol):
    def stream(
        self, text: str | bytes, voice: str | None = None, audio_format: str = DEFAULT_FORMAT
    ) -> Iterator[Chunk]: ...

    def close(self) -> None: ...


def resolve_all(target: str) -> list[str]:
    """Every address ``host:port`` resolves to (a headless Service: one per ready pod), sorted."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {target!r}")
    infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    addresses = {f"[{info[4][0]}]:{port}" if ":" in str(info[4][0]) else f"{info[4][0]}:{port}" for info in infos}
    return sorted(addresses)


class FleetClient:
    """Requests spread over a fleet's pods, retried on the next pod when one refuses them.

    ``target`` is a headless Service address (``tts-prod-headless.team.svc:8001``: each request
    picks the next of the pods it resolves to) or a fixed list of ``host:port``. A request that a
    pod refuses before its first chunk (``Overloaded``: full, draining or unhealthy;
    ``ServerUnavailable``: unreachable) goes to the next pod, each pod at most once; once audio
    has been streamed, errors reach the caller (a retry would repeat audio). Like ``TtsClient``,
    one request at a time; use one ``FleetClient`` per concurrent stream.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        model: str = contract.MODEL_NAME,
        timeout: float = 300.0,
        refresh_seconds: float = 30.0,
        resolve: Callable[[str], list[str]] = resolve_all,
        connect: Callable[[str], _Streamer] | None = None,
    ) -> None:
        self._fixed = None if isinstance(target, str) else list(target)
        self._target = target if isinstance(target, str) else ""
        self._resolve = resolve
        self._connect = connect or (lambda url: TtsClient(url, model, timeout))
        self._refresh_seconds = refresh_seconds
        self._addresses: list[str] = []
        self._resolved_at = float("-inf")
        self._next = 0
        self._clients: dict[str, _Streamer] = {}
        self._lock = threading.Lock()

    def addresses(self) -> list[str]:
        """The pods requests go to now (re-resolved every ``refresh_seconds``)."""
        if self._fixed is not None:
            return self._fixed
        now = time.monotonic()
        if now - self._resolved_at >= self._refresh_seconds or not self._addresses:
            try:
                self._addresses = self._resolve(self._target)
            except OSError as error:
                if not self._addresses:
                    raise ServerUnavailable(f"cannot resolve {self._target}: {error}") from None
            self._resolved_at = now
            for gone in set(self._clients) - set(self._addresses):
                self._clients.pop(gone).close()
        return self._addresses

    def _rotation(self) -> list[str]:
        with self._lock:
            addresses = self.addresses()
            if not addresses:
                raise ServerUnavailable(f"{self._target or 'the fleet'} has no addresses")
            start = self._next % len(addresses)
            self._next = start + 1
            return addresses[start:] + addresses[:start]

    def _client(self, address: str) -> _Streamer:
        if address not in self._clients:
            self._clients[address] = self._connect(address)
        return self._clients[address]

    def stream(
        self, text: str | bytes, voice: str | None = None, audio_format: str = DEFAULT_FORMAT
    ) -> Iterator[Chunk]:
        """Like ``TtsClient.stream``, on the next pod; refused requests move on to the one after."""
        refusals: list[str] = []
        unreachable = True
        for address in self._rotation():
            streamed = False
            try:
                for chunk in self._client(address).stream(text, voice, audio_format):
                    streamed = True
                    yield chunk
                return
            except (Overloaded, ServerUnavailable) as error:
                if streamed:
                    raise
                unreachable = unreachable and isinstance(error, ServerUnavailable)
                refusals.append(f"{address}: {error}")
        summary = "; ".join(refusals)
        if unreachable:
            raise ServerUnavailable(f"no replica could be reached: {summary}")
        raise Overloaded(f"every replica refused the request: {summary}")

    def synthesize(self, text: str, voice: str | None = None) -> np.ndarray:
        parts = [chunk.samples() for chunk in self.stream(text, voice, "float32")]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
