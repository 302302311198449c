"""Argo CD's view of a TTSDeployment: the Lua health check run on real statuses, those captured
from the e2e cluster (health_objects/, written by tests/e2e/chart) and those the operator's own
status code computes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from argo_health import health

from ttsfleet.operator import problems, status
from ttsfleet.operator.spec import parse_spec

CAPTURED = Path(__file__).parent / "health_objects"
NOW = "2026-01-01T00:00:00Z"


def captured() -> list[tuple[str, str, dict[str, Any]]]:
    cases = []
    for path in sorted(CAPTURED.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        cases.append((path.stem, doc["expected"], doc["object"]))
    return cases


@pytest.mark.parametrize(("name", "expected", "obj"), captured(), ids=[c[0] for c in captured()])
def test_captured_fleets(name: str, expected: str, obj: dict[str, Any]) -> None:
    assert health(obj)[0] == expected


def test_every_verdict_was_captured_from_a_real_cluster() -> None:
    assert {expected for _, expected, _ in captured()} == {"Healthy", "Progressing", "Degraded"}


def fleet(desired: int, generation: int = 1, **sts_status: Any) -> dict[str, Any]:
    """A fleet whose status is what the operator computes from this StatefulSet status."""
    spec = parse_spec({"image": "w:1", "model": {"source": "hf://a/b"}, "replicas": desired})
    sts = {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, **sts_status}}
    observation = status.Observation(generation=generation, selector="a=b", statefulset=sts)
    computed, _ = status.compute(spec, observation, {}, now=NOW)
    return {
        "metadata": {"name": "f", "generation": generation},
        "spec": {"replicas": desired},
        "status": computed,
    }


def test_all_pods_ready_is_healthy() -> None:
    obj = fleet(2, replicas=2, readyReplicas=2, updatedReplicas=2, currentRevision="r1", updateRevision="r1")
    assert health(obj) == ("Healthy", "Ready=True (AllReplicasReady): 2/2 pods ready")


def test_pods_warming_up_is_progressing_with_the_count() -> None:
    verdict, message = health(fleet(3, replicas=3, readyReplicas=1, updatedReplicas=3))
    assert verdict == "Progressing"
    assert "1/3 pods ready" in message


def test_ready_but_still_rolling_out_is_progressing() -> None:
    obj = fleet(2, replicas=2, readyReplicas=2, updatedReplicas=0, currentRevision="r1", updateRevision="r2")
    assert health(obj)[0] == "Progressing"


def test_scaled_to_zero_is_healthy_so_it_does_not_suspend_the_application() -> None:
    # Argo CD rolls the worst resource health up into the Application: a Suspended fleet would
    # mark the whole fleets Application (and the app of apps) Suspended.
    verdict, message = health(fleet(0))
    assert verdict == "Healthy"
    assert "ScaledToZero" in message


def test_a_problem_is_degraded_with_its_message() -> None:
    spec = parse_spec({"image": "w:1", "model": {"source": "hf://a/b"}})
    problem = problems.missing_secret("hf-token", "team-a")
    observation = status.Observation(generation=1, selector="a=b", problems=[problem])
    computed, _ = status.compute(spec, observation, {}, now=NOW)
    verdict, message = health({"metadata": {"generation": 1}, "status": computed})
    assert verdict == "Degraded"
    assert "hf-token" in message


def test_status_from_an_older_generation_is_progressing_even_if_healthy() -> None:
    obj = fleet(2, replicas=2, readyReplicas=2, updatedReplicas=2, currentRevision="r", updateRevision="r")
    obj["metadata"]["generation"] = 2
    verdict, message = health(obj)
    assert verdict == "Progressing"
    assert "generation 2" in message


def test_no_status_yet_is_progressing() -> None:
    assert health({"metadata": {"name": "f", "generation": 1}, "spec": {}})[0] == "Progressing"
