"""The serving ConfigMap: Triton's ``config.pbtxt`` and the worker's ``serving.json``."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ttsfleet import contract
from ttsfleet.operator import naming
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import TTSDeploymentSpec


def serving_config(spec: TTSDeploymentSpec) -> contract.ServingConfig:
    return contract.ServingConfig(
        voices=tuple(contract.Voice(id=v.id, seed=v.seed, embedding=v.embedding) for v in spec.voices),
        default_voice=spec.default_voice,
        max_batch_size=spec.batching.max_batch_size,
        max_queue_delay_microseconds=spec.batching.max_queue_delay_microseconds,
        instance_count=spec.batching.instances,
        max_open_requests=spec.batching.max_open_requests or 0,  # 0: the worker derives it from max_batch_size
        gpu=spec.resources.gpu > 0,
        warmup_sentences=spec.warmup.sentences,
        warmup_timeout_seconds=spec.warmup.timeout_seconds,
        max_text_chars=spec.max_text_chars,
        model_name=spec.model.name,
        # Triton's exit timeout: open streams get this long after SIGTERM; the pod's grace period
        # (termination_grace_seconds) is longer by the preStop delay and a margin.
        drain_timeout_seconds=spec.disruption.drain_seconds,
    )


def build(owner: Owner, spec: TTSDeploymentSpec) -> dict[str, Any]:
    config = serving_config(spec)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": naming.metadata(owner, naming.configmap_name(owner)),
        "data": {
            contract.TRITON_CONFIG_FILE: contract.render_triton_config(config),
            contract.SERVING_JSON_FILE: config.to_json(),
        },
    }


def content_hash(configmap: dict[str, Any]) -> str:
    """Stamped on the pod template so that a config change rolls the pods (respecting partition)."""
    payload = json.dumps(configmap["data"], sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()
