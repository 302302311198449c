"""Triton python-backend model answering unary (non-streaming) requests for ChatTTS.

Triton serves decoupled models only on streaming endpoints, so HTTP ``infer`` and gRPC
``ModelInfer`` land here: the request is relayed to the streaming model through BLS and its
chunks are joined into one AUDIO response. Batching still happens in the main model, which
sees these relayed requests like any other stream. No torch here: the stub stays small.
"""

from __future__ import annotations

import json
from typing import Any, cast

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend stub

from ttsfleet import contract
from ttsfleet.worker.service import RawRequest, Stream, parse
from ttsfleet.worker.text import InputError


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        self.target = config["parameters"]["target_model"]["string_value"]
        self.serving = contract.ServingConfig.from_json(config["parameters"]["serving_config"]["string_value"])

    def _invalid(self, request: Any) -> str | None:
        """Why the request is the caller's mistake, if it is. Checked here, with the main model's own
        rules, because BLS hands that model's errors back as INTERNAL whatever their code (2.51)."""
        values = {}
        for name in (contract.INPUT_TEXT, contract.INPUT_VOICE, contract.INPUT_FORMAT):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            values[name] = None if tensor is None else tensor.as_numpy().reshape(-1)[0]
        raw = RawRequest(
            values[contract.INPUT_TEXT],
            values[contract.INPUT_VOICE],
            values[contract.INPUT_FORMAT],
            stream=cast(Stream, None),  # parse() only validates here; the main model streams
        )
        try:
            parse(raw, self.serving)
        except InputError as error:
            return str(error)
        return None

    def _relay(self, request: Any) -> Any:
        problem = self._invalid(request)
        if problem is not None:  # 400 on HTTP, INVALID_ARGUMENT on gRPC
            return pb_utils.InferenceResponse(
                output_tensors=[], error=pb_utils.TritonError(problem, pb_utils.TritonError.INVALID_ARG)
            )
        inputs = []
        for name in (contract.INPUT_TEXT, contract.INPUT_VOICE, contract.INPUT_FORMAT):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                inputs.append(pb_utils.Tensor(name, tensor.as_numpy().reshape(1, -1)[:, :1]))
        relayed = pb_utils.InferenceRequest(
            model_name=self.target,
            inputs=inputs,
            requested_output_names=[contract.OUTPUT_AUDIO, contract.OUTPUT_FINAL],
        )
        chunks: list[bytes] = []
        for response in relayed.exec(decoupled=True):
            if response.has_error():
                # Keep the code, should BLS ever pass it on (2.51 makes every error INTERNAL).
                error = response.error()
                return pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(error.message(), error.code())
                )
            audio = pb_utils.get_output_tensor_by_name(response, contract.OUTPUT_AUDIO)
            if audio is not None:  # the empty closing response of a decoupled stream has none
                chunks.append(bytes(audio.as_numpy().reshape(-1)[0]))
        joined = np.empty((1,), dtype=np.object_)
        joined[0] = b"".join(chunks)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(contract.OUTPUT_AUDIO, joined)])

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._relay(request) for request in requests]
