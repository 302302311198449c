"""Argo CD's health check against fleets on the real cluster, reconciled by the operator running
as the chart's ServiceAccount. With TTSFLEET_CAPTURE_HEALTH=1 the objects seen are written to
tests/unit/chart/health_objects/, which the unit tests replay."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubelet_reports
import yaml
from argo_health import health
from chart_e2e import ChartOperator
from fleet_helpers import PINNED_REVISION, apply, fleet, get
from kube_watch import watched

from ttsfleet.devcluster.cluster import ClusterHandle
from ttsfleet.devcluster.waiting import wait_for

CAPTURE_DIR = Path(__file__).resolve().parents[2] / "unit" / "chart" / "health_objects"


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop what varies per run and says nothing about health."""
    meta = obj["metadata"]
    for key in ("managedFields", "uid", "resourceVersion", "creationTimestamp", "annotations"):
        meta.pop(key, None)
    meta["namespace"] = "team-a"
    return obj


def _verdict(cluster: ClusterHandle, namespace: str, name: str, expected: str, case: str) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        obj = get(cluster, namespace, "ttsd", name)
        # Only statuses the operator wrote: "no status yet" is Progressing too, but says nothing.
        has_conditions = bool(obj and (obj.get("status") or {}).get("conditions"))
        return obj if obj and has_conditions and health(obj)[0] == expected else None

    obj = wait_for(
        seen,
        what=f"{name} to look {expected} to Argo CD",
        timeout=90,
        describe=lambda: json.dumps((get(cluster, namespace, "ttsd", name) or {}).get("status")),
    )
    if os.environ.get("TTSFLEET_CAPTURE_HEALTH") == "1":
        _capture(obj, expected, case)
    return obj


class StatusHistory:
    """Every version of the namespace's fleets, from a watch: a phase that lasts only one status
    write (Progressing, when kwok readies pods within a second) is seen however briefly it lasts,
    where polling could step over it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, obj: dict[str, Any]) -> None:
        with self._lock:
            self.seen.append(obj)

    def first(self, name: str, expected: str) -> dict[str, Any] | None:
        with self._lock:
            versions = [o for o in self.seen if o["metadata"]["name"] == name]
        for obj in versions:
            if (obj.get("status") or {}).get("conditions") and health(obj)[0] == expected:
                return obj
        return None


@contextmanager
def status_history(cluster: ClusterHandle, namespace: str) -> Iterator[StatusHistory]:
    history = StatusHistory()
    with watched(cluster, ["ttsd", "-n", namespace], history.add):
        yield history


def _passed_through(history: StatusHistory, name: str, expected: str, case: str) -> dict[str, Any]:
    obj = wait_for(
        lambda: history.first(name, expected),
        what=f"{name} to have looked {expected} to Argo CD at some status write",
        timeout=90,
        describe=lambda: json.dumps([(o.get("status") or {}).get("conditions") for o in history.seen[-5:]]),
    )
    if os.environ.get("TTSFLEET_CAPTURE_HEALTH") == "1":
        _capture(obj, expected, case)
    return obj


def _capture(obj: dict[str, Any], expected: str, case: str) -> None:
    CAPTURE_DIR.mkdir(exist_ok=True)
    document = {"expected": expected, "object": _clean(obj)}
    (CAPTURE_DIR / f"{case}.yaml").write_text(
        f"# Captured by {__name__} from the e2e cluster; replayed by test_chart_argocd_health.py.\n"
        + yaml.safe_dump(document, sort_keys=False)
    )


def test_argo_cd_sees_progressing_healthy_at_zero_and_degraded(
    cluster: ClusterHandle, namespace: str, chart_operator: ChartOperator
) -> None:
    if not chart_operator.running:
        chart_operator.start()

    with status_history(cluster, namespace) as history:
        apply(cluster, namespace, fleet("argo-fleet", replicas=2))
        _passed_through(history, "argo-fleet", "Progressing", "progressing-warming-up")
    _verdict(cluster, namespace, "argo-fleet", "Healthy", "healthy-all-ready")

    cluster.kubectl("scale", "ttsd", "argo-fleet", "-n", namespace, "--replicas=0")
    # Healthy at zero: Suspended would roll up into the whole Application.
    _verdict(cluster, namespace, "argo-fleet", "Healthy", "healthy-scaled-to-zero")

    apply(
        cluster,
        namespace,
        fleet(
            "argo-broken", model={"source": "hf://2Noise/ChatTTS", "revision": PINNED_REVISION, "secretRef": "absent"}
        ),
    )
    # What the kubelet reports for a pod whose environment names an absent Secret.
    kubelet_reports.missing_secret(cluster, namespace, "argo-broken-0", "absent")
    obj = _verdict(cluster, namespace, "argo-broken", "Degraded", "degraded-missing-secret")
    assert "absent" in health(obj)[1]
