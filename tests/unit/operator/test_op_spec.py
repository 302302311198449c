"""Parsing API JSON into the frozen spec model."""

from __future__ import annotations

import dataclasses

import pytest
from fixtures_operator import example_documents, minimal_spec

from ttsfleet.operator.schema import SpecError, camel
from ttsfleet.operator.spec import TTSDeploymentSpec, parse_spec


def test_minimal_spec_gets_the_model_defaults() -> None:
    parsed = parse_spec(minimal_spec())
    assert parsed.replicas == 1
    assert parsed.model.name == "chattts"
    assert parsed.voices[0].id == "default"
    assert parsed.resources.gpu == 1
    assert parsed.rollout.strategy == "RollingUpdate"
    assert parsed.autoscaling.enabled is False
    assert parsed.autoscaling.schedules == ()


def test_spec_is_frozen() -> None:
    parsed = parse_spec(minimal_spec())
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.replicas = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model": {"source": "hf://a/b"}}, "spec.image: required"),
        (minimal_spec(replicas="three"), "spec.replicas: expected int"),
        (minimal_spec(replicas=True), "spec.replicas: expected int"),
        (minimal_spec(voices=[{"id": 1}]), "spec.voices[0].id: expected str"),
        (minimal_spec(model={}), "spec.model.source: required"),
    ],
)
def test_bad_specs_name_the_field(raw: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_spec(raw)


def test_camel_case_names() -> None:
    assert camel("max_queue_delay_microseconds") == "maxQueueDelayMicroseconds"
    assert camel("sha256") == "sha256"


@pytest.mark.parametrize(("filename", "doc"), example_documents(), ids=lambda v: v if isinstance(v, str) else "")
def test_examples_parse(filename: str, doc: dict) -> None:
    if doc["kind"] != "TTSDeployment":
        return
    parsed = parse_spec(doc["spec"])
    assert isinstance(parsed, TTSDeploymentSpec)
    assert parsed.default_voice in [v.id for v in parsed.voices]
