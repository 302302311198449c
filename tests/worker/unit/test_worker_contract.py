"""serving.json between operator and worker: versioned, tolerant within a major version."""

from __future__ import annotations

import json
import logging

import pytest

from ttsfleet import contract
from ttsfleet.contract import SERVING_CONFIG_VERSION, ContractError, ServingConfig, Voice

pytestmark = pytest.mark.unit

CONFIG = ServingConfig(voices=(Voice("narrator", seed=3),), default_voice="narrator", max_batch_size=4)


def _major() -> int:
    return int(SERVING_CONFIG_VERSION.split(".")[0])


def test_round_trip_carries_the_version() -> None:
    raw = json.loads(CONFIG.to_json())
    assert raw["version"] == SERVING_CONFIG_VERSION
    assert ServingConfig.from_json(CONFIG.to_json()) == CONFIG


def test_newer_minor_with_unknown_fields_is_accepted_and_the_fields_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What a newer operator writes: a later minor version with fields this worker never heard of.
    raw = json.loads(CONFIG.to_json())
    raw.update(version=f"{_major()}.99", speaking_rate=1.2, future_block={"x": 1})
    raw["voices"][0]["emotion"] = "calm"
    with caplog.at_level(logging.WARNING, logger="ttsfleet.contract"):
        parsed = ServingConfig.from_json(json.dumps(raw))
    assert parsed.voices == CONFIG.voices and parsed.max_batch_size == 4
    assert parsed.version == f"{_major()}.99"
    record = next(r for r in caplog.records if "does not know" in r.getMessage())
    assert record.fields == ["future_block", "speaking_rate", "voices[].emotion"]  # type: ignore[attr-defined]


def test_config_from_before_versioning_reads_as_major_one() -> None:
    raw = json.loads(CONFIG.to_json())
    for added in ("version", "max_open_requests", "engine_call_timeout_seconds", "engine_max_consecutive_failures"):
        del raw[added]
    parsed = ServingConfig.from_json(json.dumps(raw))
    assert parsed.version == "1.0" and parsed.open_request_limit() == 16


@pytest.mark.parametrize("version", [f"{_major() + 1}.0", "0.9", "banana"])
def test_another_major_version_is_refused_with_a_clear_error(version: str) -> None:
    raw = json.loads(CONFIG.to_json())
    raw["version"] = version
    with pytest.raises(ContractError, match=rf"serving config version {version}.*worker image"):
        ServingConfig.from_json(json.dumps(raw))


def test_an_older_worker_reading_a_newer_operator_config_and_vice_versa() -> None:
    # Both directions across one minor step: the newer side's extra field is ignored by the older
    # reader; the older side's config (without the field) gets the newer reader's default.
    newer = json.loads(CONFIG.to_json())
    newer["version"] = f"{_major()}.{int(SERVING_CONFIG_VERSION.split('.')[1]) + 1}"
    newer["brand_new_knob"] = 7
    assert ServingConfig.from_json(json.dumps(newer)).max_batch_size == 4
    older = json.loads(CONFIG.to_json())
    older["version"] = f"{_major()}.0"
    del older["max_open_requests"]
    assert ServingConfig.from_json(json.dumps(older)).max_open_requests == 0


def test_non_object_is_refused() -> None:
    with pytest.raises(ContractError, match="JSON object"):
        ServingConfig.from_json("[1, 2]")


def test_triton_config_still_embeds_the_serving_config() -> None:
    pbtxt = contract.render_triton_config(CONFIG)
    assert SERVING_CONFIG_VERSION in pbtxt


def test_operator_renders_the_open_request_bound_and_the_current_version() -> None:
    from ttsfleet.operator.desired import configmap
    from ttsfleet.operator.spec import parse_spec

    base = {"image": "ttsfleet/worker:0.1.0", "model": {"source": "hf://2Noise/ChatTTS"}}
    derived = configmap.serving_config(parse_spec({**base, "batching": {"maxBatchSize": 6}}))
    assert derived.version == SERVING_CONFIG_VERSION and derived.open_request_limit() == 24
    explicit = configmap.serving_config(parse_spec({**base, "batching": {"maxBatchSize": 6, "maxOpenRequests": 9}}))
    assert explicit.open_request_limit() == 9
    assert ServingConfig.from_json(explicit.to_json()) == explicit
