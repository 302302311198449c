"""The API server enforces the schema: descriptions for kubectl explain, invalid specs rejected
with the offending field named, cache-keyed fields immutable."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from fleet_helpers import PINNED_REVISION, apply, fleet
from source_cases import SOURCE_CASES

from ttsfleet import modelsource


def _autoscaling(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"enabled": True, "minReplicas": 1, "maxReplicas": 4}
    base.update(overrides)
    return base


def _schedule(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "peak", "start": "0 18 * * *", "end": "0 22 * * *", "replicas": 2}
    base.update(overrides)
    return base


INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "min-above-max",
        {"autoscaling": _autoscaling(minReplicas=5, maxReplicas=2)},
        "spec.autoscaling.minReplicas",
    ),
    ("negative-replicas", {"replicas": -1}, "spec.replicas"),
    (
        "schedule-start-equals-end",
        {"autoscaling": _autoscaling(schedules=[_schedule(start="0 18 * * *", end="0 18 * * *")])},
        "spec.autoscaling.schedules[0].end",
    ),
    (
        "schedule-bad-timezone",
        {"autoscaling": _autoscaling(schedules=[_schedule(timezone="Mars/Olympus_Mons")])},
        "spec.autoscaling.schedules[0].timezone",
    ),
    (
        "schedule-start-and-ready-by",
        {"autoscaling": _autoscaling(schedules=[_schedule(readyBy="0 19 * * *")])},
        "spec.autoscaling.schedules[0]",
    ),
    (
        "schedule-above-max",
        {"autoscaling": _autoscaling(schedules=[_schedule(replicas=10)])},
        "spec.autoscaling.schedules",
    ),
    (
        "bad-cron",
        {"autoscaling": _autoscaling(schedules=[_schedule(end="at six")])},
        "spec.autoscaling.schedules[0].end",
    ),
    ("default-voice-unknown", {"defaultVoice": "nobody"}, "spec.defaultVoice"),
    (
        "voice-seed-and-embedding",
        {"voices": [{"id": "default", "seed": 1, "embedding": "x"}]},
        "spec.voices[0]",
    ),
    (
        "partition-with-on-delete",
        {"rollout": {"strategy": "OnDelete", "partition": 1}},
        "spec.rollout.partition",
    ),
    ("unknown-strategy", {"rollout": {"strategy": "BlueGreen"}}, "spec.rollout.strategy"),
    ("bad-model-source", {"model": {"source": "s3://x/y"}}, "spec.model.source"),
    (
        "model-larger-than-cache",
        {"model": {"source": "hf://a/b", "revision": PINNED_REVISION, "approximateSize": "30Gi"}},
        "spec.modelCache.size",
    ),
    ("too-many-gpus", {"resources": {"gpu": 9}}, "spec.resources.gpu"),
    ("bad-max-unavailable", {"disruption": {"maxUnavailable": "lots"}}, "spec.disruption.maxUnavailable"),
]


@pytest.mark.parametrize(("case", "spec", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_spec_is_rejected_naming_the_field(
    cluster: Any, namespace: str, crds: None, case: str, spec: dict[str, Any], field: str
) -> None:
    doc = fleet(case, **spec)
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False
    )
    assert result.returncode != 0, f"{case} was accepted"
    assert field in result.stderr, result.stderr


def _dry_run(cluster: Any, namespace: str, doc: dict[str, Any]) -> Any:
    return cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False
    )


@pytest.mark.parametrize(("case", "model", "field"), SOURCE_CASES, ids=[c[0] for c in SOURCE_CASES])
def test_model_sources_the_fetcher_refuses_are_refused_at_admission(
    cluster: Any, namespace: str, crds: None, case: str, model: dict[str, Any], field: str | None
) -> None:
    """The same table the fetcher's own checks pass (tests/unit/test_modelsource.py): a source
    the init container would refuse never gets past the API server, and the refusal names the
    field and says why."""
    result = _dry_run(cluster, namespace, fleet(f"src-{case}", model=model))
    if field is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode != 0, f"{case} was accepted"
    assert f"spec.model.{field}" in result.stderr, result.stderr
    # The refusal says why, in the fetcher's own words, and never echoes a credential back.
    broken = modelsource.problem(model["source"], model.get("revision", "main"), bool(model.get("allowInsecureHTTP")))
    assert broken is not None and broken[1] in result.stderr, result.stderr
    assert "s3cret" not in result.stderr and "hf_abc" not in result.stderr


def test_moving_hf_revision_is_refused_with_a_reason(cluster: Any, namespace: str, crds: None) -> None:
    result = _dry_run(cluster, namespace, fleet("moving", model={"source": "hf://2Noise/ChatTTS", "revision": "main"}))
    assert result.returncode != 0
    assert "spec.model.revision" in result.stderr and "full 40-hex commit" in result.stderr, result.stderr
    plain = _dry_run(cluster, namespace, fleet("plain", model={"source": "http://models.tts.svc/m", "revision": "v1"}))
    assert plain.returncode != 0
    assert "spec.model.source" in plain.stderr and "allowInsecureHTTP" in plain.stderr, plain.stderr


def test_missing_required_fields_are_rejected(cluster: Any, namespace: str, crds: None) -> None:
    doc = fleet("no-image")
    del doc["spec"]["image"]
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False
    )
    assert result.returncode != 0 and "spec.image" in result.stderr, result.stderr


def test_name_length_is_bounded(cluster: Any, namespace: str, crds: None) -> None:
    doc = fleet("x" * 41)
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False
    )
    assert result.returncode != 0 and "metadata.name" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"modelCache": {"storageClassName": "other"}}, "spec.modelCache.storageClassName"),
        ({"modelCache": {"size": "40Gi"}}, "spec.modelCache.size"),
        (
            {"model": {"source": "hf://2Noise/ChatTTS", "revision": PINNED_REVISION, "name": "renamed"}},
            "spec.model.name",
        ),
    ],
)
def test_cache_keyed_fields_are_immutable(
    cluster: Any, namespace: str, crds: None, change: dict[str, Any], field: str
) -> None:
    # Zero replicas: this is about the API server, no pods needed.
    apply(cluster, namespace, fleet("frozen", replicas=0))
    result = cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(fleet("frozen", replicas=0, **change)),
        check=False,
    )
    assert result.returncode != 0, "an immutable field was changed"
    assert field in result.stderr and "immutable" in result.stderr, result.stderr


def test_kubectl_explain_shows_descriptions(cluster: Any, crds: None) -> None:
    top = cluster.kubectl("explain", "ttsd").stdout
    assert "ChatTTS" in top
    schedules = cluster.kubectl("explain", "ttsd.spec.autoscaling.schedules").stdout
    assert "readyBy" in schedules and "IANA time zone" in schedules
    source = cluster.kubectl("explain", "ttsd.spec.model.source").stdout
    assert "hf://" in source
    cache = cluster.kubectl("explain", "ttsd.spec.modelCache").stdout
    assert "local SSD" in cache or "local-SSD" in cache
