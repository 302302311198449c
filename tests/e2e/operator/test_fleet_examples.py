"""Every TTSDeployment example in examples/ is applied and becomes a Ready fleet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fleet_helpers import get, ready_fleet, wait_for

ROOT = Path(__file__).resolve().parents[3] / "examples"


def _fleet_files() -> list[Path]:
    """Every example file holding a TTSDeployment, wherever it sits (e.g. the Argo CD fleets)."""
    return [
        path
        for path in sorted(ROOT.rglob("*.yaml"))
        if any(d and d.get("kind") == "TTSDeployment" for d in yaml.safe_load_all(path.read_text()))
    ]


EXAMPLES = _fleet_files()


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(ROOT).with_suffix("")) for p in EXAMPLES])
def test_example_becomes_ready(cluster: Any, namespace: str, running_operator: Any, path: Path) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(path))
    fleets = [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "TTSDeployment"]
    assert fleets, f"{path.name} holds no TTSDeployment"
    for doc in fleets:
        name = doc["metadata"]["name"]
        obj = ready_fleet(cluster, namespace, name, timeout=120)
        spec = obj["spec"]
        if spec.get("autoscaling", {}).get("enabled"):
            scaled = wait_for(f"ScaledObject {name}", lambda n=name: get(cluster, namespace, "scaledobject", n), 20)
            assert scaled["spec"]["scaleTargetRef"]["kind"] == "TTSDeployment"
            assert len(scaled["spec"]["triggers"]) == 1 + len(spec["autoscaling"].get("schedules", []))
        if spec.get("monitoring", {}).get("serviceMonitor"):
            wait_for(f"ServiceMonitor {name}", lambda n=name: get(cluster, namespace, "servicemonitor", n), 20)
