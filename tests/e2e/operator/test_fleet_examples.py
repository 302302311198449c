"""Every TTSDeployment example in examples/ is applied and becomes a Ready fleet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fleet_helpers import HANG_GUARD_SECONDS, get, ready_fleet, wait_for

ROOT = Path(__file__).resolve().parents[3] / "examples"


def _fleet_files() -> list[Path]:
    """Every example file holding a TTSDeployment, wherever it sits (e.g. the Argo CD fleets)."""
    return [
        path
        for path in sorted(ROOT.rglob("*.yaml"))
        if any(d and d.get("kind") == "TTSDeployment" for d in yaml.safe_load_all(path.read_text()))
    ]


EXAMPLES = _fleet_files()
REALPODS = Path(__file__).resolve().parents[1] / "realpods"


def _fits_a_cpu_node(path: Path) -> bool:
    # resources.gpu defaults to 1 (spec.py): an example that does not say 0 needs a GPU.
    fleets = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "TTSDeployment"]
    return all((d["spec"].get("resources") or {}).get("gpu", 1) == 0 for d in fleets)


def test_examples_that_fit_a_cpu_node_also_run_on_the_real_node() -> None:
    """Here every example runs on kwok nodes (scheduling and API behaviour only). The real node
    has no GPU, so only examples asking for none can run there; each of them must be applied by
    a real-pod suite (tests/e2e/realpods), through ``Stage.adapt`` or ``real_fleet.load_example``."""
    on_real_pods = {
        path.name
        for path in EXAMPLES
        if any(
            f'adapt("{path.name}")' in text or f'load_example("{path.name}")' in text
            for text in (test.read_text() for test in REALPODS.glob("test_*.py"))
        )
    }
    cpu_shaped = {path.name for path in EXAMPLES if _fits_a_cpu_node(path)}
    assert cpu_shaped, "no example fits a CPU node: the real-pod suites have nothing to run"
    assert cpu_shaped <= on_real_pods, f"not run on the real node: {sorted(cpu_shaped - on_real_pods)}"


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
            scaled = wait_for(
                f"ScaledObject {name}", lambda n=name: get(cluster, namespace, "scaledobject", n), HANG_GUARD_SECONDS
            )
            assert scaled["spec"]["scaleTargetRef"]["kind"] == "TTSDeployment"
            assert len(scaled["spec"]["triggers"]) == 1 + len(spec["autoscaling"].get("schedules", []))
        if spec.get("monitoring", {}).get("serviceMonitor"):
            wait_for(
                f"ServiceMonitor {name}",
                lambda n=name: get(cluster, namespace, "servicemonitor", n),
                HANG_GUARD_SECONDS,
            )
