"""Helpers for the operator e2e tests: bounded waits and kubectl JSON access."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ttsfleet.operator.spec import API_VERSION, KIND

T = TypeVar("T")
CRDS = Path(__file__).resolve().parents[2] / "crds"
IMAGE = "ttsfleet/worker:0.1.0"
# hf:// sources must pin a full commit (the API server refuses a branch such as main).
PINNED_REVISION = "1a3c2f6e9b8d4c7f0e5a2b1d3c6f9e8a7b4d2c1f"
# How long a wait for something the operator does within seconds may take before the test fails:
# a guard against hanging, never a speed budget (a busy machine may be many times slower; speed
# is measured in bench/).
HANG_GUARD_SECONDS = 180


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 0.5,
    explain: Callable[[], Any] | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail saying what was awaited, how long,
    and what was last seen (``explain()`` when given: a probe that answers None says nothing)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            seen = explain() if explain is not None else last
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {seen!r})")
        time.sleep(interval)


def install_crds(cluster: Any) -> None:
    """The project's CRDs (crds/), established and served before the operator starts."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    for path in sorted(CRDS.glob("*.yaml")):
        cluster.wait_crds_established("-f", str(path))
    cluster.wait_for_owner_kind(API_VERSION, KIND)


def get(cluster: Any, namespace: str, *what: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "-n", namespace, *what, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr or "not found" in result.stderr:
            return None
        raise RuntimeError(result.stderr)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def items(cluster: Any, namespace: str, *what: str) -> list[dict[str, Any]]:
    data = get(cluster, namespace, *what)
    return list((data or {}).get("items") or [])


def apply(cluster: Any, namespace: str, *docs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))


def fleet(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "image": IMAGE,
        "model": {"source": "hf://2Noise/ChatTTS", "revision": PINNED_REVISION},
        "resources": {"cpu": "1", "memory": "1Gi"},
    }
    body.update(copy.deepcopy(spec))
    return {
        "apiVersion": "tts.ttsfleet.io/v1alpha1",
        "kind": "TTSDeployment",
        "metadata": {"name": name},
        "spec": body,
    }


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def ready_fleet(cluster: Any, namespace: str, name: str, timeout: float = HANG_GUARD_SECONDS) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get(cluster, namespace, "ttsd", name)
        ready = condition(obj, "Ready")
        return obj if ready.get("status") == "True" else None

    return wait_for(f"TTSDeployment {namespace}/{name} Ready=True", probe, timeout)
