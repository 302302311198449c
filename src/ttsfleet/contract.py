"""What the operator and the worker agree on: ports, probe paths, mounts, metric names, and the
serving configuration that travels from a TTSDeployment spec to Triton's ``config.pbtxt``.

Both sides import these names; nothing here imports torch, kopf or the Kubernetes client, so the
operator can use it without the worker's dependencies.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields

MODEL_NAME = "chattts"
SAMPLE_RATE_HZ = 24_000

# Triton's own default ports; the Service exposes them under these names so that
# Gateway routes (grpc/http appProtocol) and Prometheus (metrics) find them.
HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
HTTP_PORT_NAME = "http"
GRPC_PORT_NAME = "grpc"
METRICS_PORT_NAME = "metrics"

# Probe endpoints (Triton's KServe v2 HTTP API). The model only turns READY after its
# warmup has synthesized a sentence per declared voice, so readiness is gated on warmup.
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"


def model_ready_path(model_name: str = MODEL_NAME) -> str:
    return f"/v2/models/{model_name}/ready"


def liveness_path(model_name: str = MODEL_NAME) -> str:
    """Liveness follows the model, not the server: ``/v2/health/live`` stays true with the model
    unloaded or failed, which would leave a pod running that can never serve again."""
    return model_ready_path(model_name)


# The worker image's user (worker/Dockerfile USER) and the pod's runAsUser/runAsGroup/fsGroup:
# a high UID that no account in the base image or on a node uses, as for the operator's pod.
WORKER_UID = 65532


# Where the pod mounts things. The cache is the per-pod local-SSD PVC; the serving config is
# the operator's ConfigMap holding ``config.pbtxt`` and ``serving.json``.
MODEL_CACHE_MOUNT = "/var/cache/ttsfleet"
SERVING_CONFIG_MOUNT = "/etc/ttsfleet/serving"
TRITON_CONFIG_FILE = "config.pbtxt"
SERVING_JSON_FILE = "serving.json"
ENV_SERVING_CONFIG = "TTSFLEET_SERVING_CONFIG"  # path of serving.json
ENV_MODEL_CACHE = "TTSFLEET_MODEL_CACHE"
# Set by the worker launcher: the model reads Triton's own queue gauge from here for tts_queue_length.
ENV_METRICS_URL = "TTSFLEET_METRICS_URL"

# Model I/O tensor names (decoupled: one request streams many responses).
INPUT_TEXT = "TEXT"
INPUT_VOICE = "VOICE"
INPUT_FORMAT = "FORMAT"  # "pcm16" (default) or "float32"
OUTPUT_AUDIO = "AUDIO"  # raw little-endian samples in the requested format, one chunk
OUTPUT_CHUNK_INDEX = "CHUNK_INDEX"
OUTPUT_FINAL = "FINAL"  # True on the last chunk of a request

AUDIO_FORMATS = ("pcm16", "float32")

# In-band error a worker sends when it already holds its bound of open requests (backpressure):
# nothing was started, so a client retries the same request on another replica.
OVERLOADED_PREFIX = "ttsfleet: overloaded"
# ... and the one it sends while it cannot serve at all (draining, engine unhealthy): also retry elsewhere.
UNAVAILABLE_PREFIX = "ttsfleet: unavailable"

# Triton refuses decoupled models on its unary endpoints (HTTP infer, gRPC ModelInfer). This
# companion model answers them: it streams from the main model (BLS) and returns all the audio
# in one response, with the same inputs and AUDIO output.
UNARY_MODEL_SUFFIX = "_unary"


def unary_model_name(model_name: str = MODEL_NAME) -> str:
    return f"{model_name}{UNARY_MODEL_SUFFIX}"


# Custom metrics the worker exports through Triton's metrics endpoint (python-backend metrics
# API). The KEDA trigger scales on QUEUE_LENGTH; dashboards and alerts use the rest.
METRIC_QUEUE_LENGTH = "tts_queue_length"
METRIC_REQUEST_DURATION = "tts_request_duration_seconds"
METRIC_TIME_TO_FIRST_AUDIO = "tts_time_to_first_audio_seconds"
METRIC_ACTIVE_STREAMS = "tts_active_streams"
METRIC_AUDIO_SECONDS = "tts_audio_seconds_total"
METRIC_BATCH_SIZE = "tts_batch_size"
METRIC_GPU_MEMORY_USED = "tts_gpu_memory_used_bytes"
METRIC_GPU_UTILIZATION = "tts_gpu_utilization_ratio"
# 1 while ChatTTS answers, 0 once calls keep failing or one hangs (the launcher then reloads the model).
METRIC_ENGINE_HEALTHY = "tts_engine_healthy"


@dataclass(frozen=True)
class Voice:
    """A named speaker: a seed that generates a speaker embedding, or the embedding itself."""

    id: str
    seed: int | None = None
    embedding: str | None = None  # ChatTTS's encoded speaker string


# serving.json's contract version, MAJOR.MINOR. A worker reads configs of its own major version
# (a newer minor may add fields: they are logged and ignored) and refuses any other major, so an
# operator upgrade can add a field without crashing older worker images on their next restart.
# Bump the minor for an added field with a default; the major when a field changes meaning.
SERVING_CONFIG_VERSION = "1.1"
# Open requests a replica accepts per slot of its batch when the spec sets no bound (backpressure).
OPEN_REQUESTS_PER_BATCH_SLOT = 4


class ContractError(ValueError):
    """A serving config this worker cannot use; the message says why and what to do."""


def _major(version: str) -> int:
    head = str(version).split(".", 1)[0]
    if not head.isdigit():
        raise ContractError(
            f"serving config version {version} is not MAJOR.MINOR; run a worker image that matches the operator"
        )
    return int(head)


@dataclass(frozen=True)
class ServingConfig:
    """The part of a TTSDeployment spec that the worker needs at run time."""

    voices: tuple[Voice, ...] = (Voice(id="default", seed=42),)
    default_voice: str = "default"
    max_batch_size: int = 8
    # Short: requests arriving while ChatTTS runs join its next call anyway (the worker's
    # scheduler); a longer Triton delay only adds latency (bench/worker_bench.py --queue-delay-us).
    max_queue_delay_microseconds: int = 500
    instance_count: int = 1
    gpu: bool = False
    warmup_sentences: tuple[str, ...] = ("Hello from ttsfleet.",)
    warmup_timeout_seconds: int = 600
    max_text_chars: int = 2_000
    model_name: str = MODEL_NAME
    extra: dict[str, str] = field(default_factory=dict)
    # Decoding bounds; None takes the defaults that come with the weights (their manifest).
    min_new_tokens: int | None = None
    max_new_tokens: int | None = None
    refine_text: bool = False  # ChatTTS's text-refiner pass: more prosody, roughly twice the latency
    fp16: bool = True  # only applies on a GPU
    max_sentence_chars: int = 200  # longer sentences are split at commas before synthesis
    # Graceful drain: on SIGTERM open streams get this long to finish (pod grace period must exceed it).
    drain_timeout_seconds: int = 30
    # Backpressure: open requests (queued or streaming) one replica holds before it refuses new
    # ones with an in-band OVERLOADED_PREFIX error; 0 takes OPEN_REQUESTS_PER_BATCH_SLOT x max_batch_size.
    max_open_requests: int = 0
    # Fail fast: a ChatTTS call running longer than this, or this many failed calls in a row,
    # turn the model not-ready until it is reloaded (0 disables the check).
    engine_call_timeout_seconds: int = 120
    engine_max_consecutive_failures: int = 3
    version: str = SERVING_CONFIG_VERSION

    def voice_ids(self) -> list[str]:
        return [voice.id for voice in self.voices]

    def open_request_limit(self) -> int:
        return self.max_open_requests or OPEN_REQUESTS_PER_BATCH_SLOT * self.max_batch_size

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ServingConfig:
        """Parse serving.json: same major version with unknown fields (logged, ignored) is fine,
        another major is a ``ContractError``. A config without a version predates versioning (1.0)."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ContractError("serving config must be a JSON object")
        version = str(raw.get("version", "1.0"))
        if _major(version) != _major(SERVING_CONFIG_VERSION):
            raise ContractError(
                f"serving config version {version} is not supported by this worker (it reads "
                f"{_major(SERVING_CONFIG_VERSION)}.x, newest {SERVING_CONFIG_VERSION}); "
                "run a worker image that matches the operator"
            )
        known = {item.name for item in fields(cls)}
        voice_known = {item.name for item in fields(Voice)}
        voices = [voice for voice in raw.get("voices", ()) if isinstance(voice, dict)]
        unknown = sorted(set(raw) - known) + sorted(
            {f"voices[].{name}" for voice in voices for name in voice if name not in voice_known}
        )
        if unknown:
            logging.getLogger("ttsfleet.contract").warning(
                "serving config has fields this worker does not know; ignoring them",
                extra={"fields": unknown, "version": version, "worker_version": SERVING_CONFIG_VERSION},
            )
        values = {name: value for name, value in raw.items() if name in known}
        values["voices"] = tuple(
            Voice(**{name: value for name, value in voice.items() if name in voice_known}) for voice in voices
        )
        values["warmup_sentences"] = tuple(raw.get("warmup_sentences", ()))
        values["version"] = version
        return cls(**values)


def render_triton_config(config: ServingConfig) -> str:
    """Triton ``config.pbtxt`` for the ChatTTS python-backend model.

    Decoupled so that one request streams audio chunks; dynamic batching so concurrent short
    requests share one ChatTTS ``infer`` call.
    """
    kind = "KIND_GPU" if config.gpu else "KIND_CPU"
    return f"""\
name: "{config.model_name}"
backend: "python"
max_batch_size: {config.max_batch_size}
model_transaction_policy {{ decoupled: true }}
dynamic_batching {{
  max_queue_delay_microseconds: {config.max_queue_delay_microseconds}
}}
input [
  {{ name: "{INPUT_TEXT}" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "{INPUT_VOICE}" data_type: TYPE_STRING dims: [ 1 ] optional: true }},
  {{ name: "{INPUT_FORMAT}" data_type: TYPE_STRING dims: [ 1 ] optional: true }}
]
output [
  {{ name: "{OUTPUT_AUDIO}" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "{OUTPUT_CHUNK_INDEX}" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "{OUTPUT_FINAL}" data_type: TYPE_BOOL dims: [ 1 ] }}
]
instance_group [ {{ count: {config.instance_count} kind: {kind} }} ]
parameters {{ key: "serving_config" value: {{ string_value: {json.dumps(config.to_json())} }} }}
"""


def render_unary_triton_config(config: ServingConfig) -> str:
    """``config.pbtxt`` of the unary companion model (no torch: it only relays to the main model).

    One instance per batch slot, so that as many unary requests as the main model batches can
    wait on it at once. It gets the serving config too, to refuse invalid requests itself: the
    main model's error codes come back through BLS as INTERNAL (2.51).
    """
    return f"""\
name: "{unary_model_name(config.model_name)}"
backend: "python"
max_batch_size: 0
input [
  {{ name: "{INPUT_TEXT}" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "{INPUT_VOICE}" data_type: TYPE_STRING dims: [ 1 ] optional: true }},
  {{ name: "{INPUT_FORMAT}" data_type: TYPE_STRING dims: [ 1 ] optional: true }}
]
output [
  {{ name: "{OUTPUT_AUDIO}" data_type: TYPE_STRING dims: [ 1 ] }}
]
instance_group [ {{ count: {config.max_batch_size} kind: KIND_CPU }} ]
parameters {{ key: "target_model" value: {{ string_value: "{config.model_name}" }} }}
parameters {{ key: "serving_config" value: {{ string_value: {json.dumps(config.to_json())} }} }}
"""


# Set on the init container when spec.model.sha256 is given: the expected sha256 of the source's
# manifest (ttsfleet-weights.json); `ttsfleet-fetch` refuses a source whose manifest differs.
ENV_MODEL_SHA256 = "TTSFLEET_MODEL_SHA256"
