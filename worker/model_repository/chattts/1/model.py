"""Triton python-backend model: ChatTTS, decoupled (streaming), dynamically batched.

This file is what Triton loads from the model repository; it only adapts Triton's request and
response objects. The serving logic (continuous batching over the batches Triton's dynamic
batcher forms) lives in ``ttsfleet.worker.service`` and the ChatTTS side in
``ttsfleet.worker.engine``. The weights are loaded and warmed up in ``initialize``: Triton marks
the model READY only after it returns, so readiness probes stay false until warmup passed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend stub

from ttsfleet import contract, logs
from ttsfleet.worker.engine import Engine
from ttsfleet.worker.metrics import TtsMetrics
from ttsfleet.worker.service import INTERNAL, INVALID, UNAVAILABLE, ErrorKind, RawRequest, Scheduler
from ttsfleet.worker.voices import check_voices

log = logging.getLogger("ttsfleet.worker.model")


def _one(request: Any, name: str) -> Any:
    """The single value of an optional [1]-shaped input; None when absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1:
        raise ValueError(f"{name} must hold exactly one value per request, got {values.size}")
    return values[0]


class _TritonStream:
    def __init__(self, sender: Any) -> None:
        self._sender = sender

    def send_chunk(self, audio: bytes, index: int, final: bool) -> None:
        audio_tensor = np.empty((1, 1), dtype=np.object_)
        audio_tensor[0, 0] = audio
        response = pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(contract.OUTPUT_AUDIO, audio_tensor),
                pb_utils.Tensor(contract.OUTPUT_CHUNK_INDEX, np.array([[index]], dtype=np.int32)),
                pb_utils.Tensor(contract.OUTPUT_FINAL, np.array([[final]], dtype=np.bool_)),
            ]
        )
        self._sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0)

    def send_error(self, message: str, kind: ErrorKind = INTERNAL) -> None:
        # INVALID_ARG reaches HTTP callers of the unary relay as 400 and gRPC ones as INVALID_ARGUMENT;
        # UNAVAILABLE (503 / UNAVAILABLE) tells them to retry on another replica.
        code = {
            INVALID: pb_utils.TritonError.INVALID_ARG,
            UNAVAILABLE: pb_utils.TritonError.UNAVAILABLE,
        }.get(kind, pb_utils.TritonError.INTERNAL)
        self._sender.send(
            pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code)),
            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
        )

    def is_cancelled(self) -> bool:
        # Triton marks the request cancelled when its gRPC client cancels or goes away (2.51:
        # ResponseSender.is_cancelled); the python backend only tells when asked.
        return bool(self._sender.is_cancelled())

    def send_cancelled(self) -> None:
        # A cancelled request still needs its final flag, or Triton keeps it open.
        self._sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        logs.configure_json()
        model_config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(model_config):
            raise pb_utils.TritonModelException("the chattts model must be decoupled (streaming)")
        raw = model_config["parameters"]["serving_config"]["string_value"]
        self.config = contract.ServingConfig.from_json(raw)
        check_voices(self.config)
        cache_dir = Path(os.environ.get(contract.ENV_MODEL_CACHE, contract.MODEL_CACHE_MOUNT))
        started = time.monotonic()
        self.engine = Engine.load(cache_dir, self.config)
        results = self.engine.warmup()
        log.info(
            "warmup passed; model ready",
            extra={
                "instance": args.get("model_instance_name"),
                "voices": [result.voice for result in results],
                "audio_seconds": [round(result.seconds, 2) for result in results],
                "seconds": round(time.monotonic() - started, 2),
            },
        )
        self.metrics = TtsMetrics(pb_utils, self.config.model_name, os.environ.get(contract.ENV_METRICS_URL))
        # execute() hands requests over and returns; this thread synthesizes and streams.
        self.scheduler = Scheduler(self.engine, self.config, self.metrics)
        # tts_engine_healthy follows the scheduler's view of ChatTTS; the launcher reloads the
        # model (not ready meanwhile) when it drops to 0.
        self.metrics.watch_health(self.scheduler.health.problem)
        self.scheduler.start()

    def execute(self, requests: list[Any]) -> None:
        batch: list[RawRequest] = []
        for request in requests:
            stream = _TritonStream(request.get_response_sender())
            try:
                batch.append(
                    RawRequest(
                        text=_one(request, contract.INPUT_TEXT),
                        voice=_one(request, contract.INPUT_VOICE),
                        audio_format=_one(request, contract.INPUT_FORMAT),
                        stream=stream,
                    )
                )
            except ValueError as error:
                stream.send_error(str(error), INVALID)
        self.scheduler.submit(batch)
        return None

    def finalize(self) -> None:
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None:
            scheduler.stop(drain_seconds=self.config.drain_timeout_seconds)
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            metrics.close()
        log.info("model instance finalized")
