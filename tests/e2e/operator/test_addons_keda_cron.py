"""Cron pre-scaling through the real KEDA v2.18.0: no hand-made HPA anywhere.

TTSDeployment → ScaledObject (operator) → KEDA operator makes the HPA → the HPA reads the cron
trigger's external metric from KEDA's metrics adapter (aggregation layer) → ``/scale`` on the
TTSDeployment → operator → StatefulSet → pods Ready (kwok nodes until real nodes land).

A window that is "always on" needs no clock games: KEDA's cron scaler is active when the next
end comes before the next start. The queue-length trigger points at the cluster's own Prometheus,
which has no fleet series yet (no container to scrape on kwok): the cron path must not break on it.

Needs a cluster with the add-ons (built once, cached: KEDA cold ~5-10 min), so it brings up its
own for this module.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fleet_helpers import apply, condition, fleet, get, wait_for
from operator_process import OperatorProcess, watching

from ttsfleet.devcluster.addons_cluster import running
from ttsfleet.devcluster.cluster import ClusterHandle, default_workdir
from ttsfleet.operator.spec import API_VERSION, KIND

NAMESPACE = "keda-cron"
ALWAYS_ON = {"start": "0 0 1 1 *", "end": "59 23 31 12 *"}
ALWAYS_OFF = {"start": "59 23 31 12 *", "end": "0 0 1 1 *"}
SCALE_TIMEOUT = 180
# The first run builds KEDA from source (5-10 min on an idle machine, far more on a busy one)
# inside the module fixture; later runs reuse the cached bundle.
pytestmark = pytest.mark.timeout(3600)


@pytest.fixture(scope="module")
def keda_cluster() -> Iterator[tuple[ClusterHandle, dict[str, Any]]]:
    if os.environ.get("TTSFLEET_TEST_KUBECONFIG") or os.environ.get("TTSFLEET_CLUSTER_BACKEND") == "kind":
        pytest.skip("needs a local cluster with the KEDA and Prometheus add-ons")
    started = time.monotonic()
    with running(default_workdir(f"e2e-keda-{os.getpid()}"), ("prometheus", "keda"), real_nodes=0) as (handle, info):
        print(f"\ncluster with prometheus+keda up in {time.monotonic() - started:.1f}s")
        yield handle, info


@pytest.fixture(scope="module")
def keda_operator(keda_cluster: tuple[ClusterHandle, dict[str, Any]]) -> Iterator[OperatorProcess]:
    with watching(keda_cluster[0], NAMESPACE) as operator:
        yield operator


def autoscaled(name: str, prometheus: str, schedules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return fleet(
        name,
        autoscaling={
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 4,
            "pollingIntervalSeconds": 5,
            "scaleDownStabilizationSeconds": 0,
            "prometheusAddress": prometheus,
            "schedules": schedules,
            **extra,
        },
        monitoring={"serviceMonitor": True},
    )


def ready_at(cluster: ClusterHandle, name: str, replicas: int) -> dict[str, Any] | None:
    """spec, StatefulSet and Ready pods all at ``replicas``."""
    obj = get(cluster, NAMESPACE, "ttsd", name) or {}
    sts = get(cluster, NAMESPACE, "sts", name) or {}
    status = obj.get("status") or {}
    done = (
        obj.get("spec", {}).get("replicas") == replicas
        and sts.get("spec", {}).get("replicas") == replicas
        and (sts.get("status") or {}).get("readyReplicas") == replicas
        and status.get("readyReplicas") == replicas
    )
    return obj if done else None


def keda_hpa(cluster: ClusterHandle, name: str) -> dict[str, Any]:
    """The HPA KEDA made (keda-hpa-<ScaledObject>, owned by it; it carries the ScaledObject's
    labels), targeting the TTSDeployment."""
    hpa = wait_for("the HPA made by KEDA", lambda: get(cluster, NAMESPACE, "hpa", f"keda-hpa-{name}"), 60)
    owners = [(o["kind"], o["name"]) for o in hpa["metadata"].get("ownerReferences") or []]
    assert owners == [("ScaledObject", name)], hpa["metadata"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": API_VERSION, "kind": KIND, "name": name}
    return hpa


def test_always_on_window_scales_the_fleet_up_and_an_always_off_one_back_to_min(
    keda_cluster: tuple[ClusterHandle, dict[str, Any]], keda_operator: OperatorProcess
) -> None:
    cluster, info = keda_cluster
    prometheus = info["prometheus"]["url"]
    name = "rush"
    started = time.monotonic()
    apply(cluster, NAMESPACE, autoscaled(name, prometheus, [{"name": "rush", "replicas": 3, **ALWAYS_ON}]))
    keda_hpa(cluster, name)
    wait_for("the fleet at 3 Ready replicas (cron window open)", lambda: ready_at(cluster, name, 3), SCALE_TIMEOUT)
    up = time.monotonic() - started
    print(f"\ncron always-on: apply -> 3 Ready replicas in {up:.1f}s")

    # KEDA says the ScaledObject is Ready and Active (the cron trigger), and the queue trigger on
    # a Prometheus without the series did not turn it into an error.
    scaled = get(cluster, NAMESPACE, "scaledobject", name) or {}
    assert condition(scaled, "Ready").get("status") == "True", scaled.get("status")
    assert condition(scaled, "Active").get("status") == "True", scaled.get("status")
    autoscaling = condition(get(cluster, NAMESPACE, "ttsd", name), "Autoscaling")
    assert autoscaling.get("status") == "True", autoscaling

    # The window closes (always-off): back to minReplicas.
    started = time.monotonic()
    cluster.kubectl(
        "patch",
        "ttsd",
        name,
        "-n",
        NAMESPACE,
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"autoscaling": {"schedules": [{"name": "rush", "replicas": 3, **ALWAYS_OFF}]}}}),
    )
    # One pod a minute (the ScaledObject's scale-down policy): two steps from 3 to 1.
    wait_for("the fleet back at minReplicas 1", lambda: ready_at(cluster, name, 1), SCALE_TIMEOUT + 120)
    print(f"cron always-off: patch -> back to 1 replica in {time.monotonic() - started:.1f}s")


def test_ready_by_window_opens_within_the_test_and_is_ready_before_the_deadline(
    keda_cluster: tuple[ClusterHandle, dict[str, Any]], keda_operator: OperatorProcess
) -> None:
    cluster, info = keda_cluster
    name = "evening"
    # Lead = cold start (the warmup timeout, 30 s, until one is measured; kwok pods measure ~0 s)
    # + margin 60 s, in whole minutes: the derived start is 1-2 min before readyBy, so at least
    # two minutes after the apply below: the window opens while the test watches.
    now = datetime.datetime.now(datetime.UTC)
    ready_by = (now + datetime.timedelta(minutes=5)).replace(second=0, microsecond=0)
    end = ready_by + datetime.timedelta(minutes=30)
    schedule = {
        "name": "evening",
        "replicas": 2,
        "readyBy": f"{ready_by.minute} {ready_by.hour} * * *",
        "end": f"{end.minute} {end.hour} * * *",
    }
    doc = autoscaled(name, info["prometheus"]["url"], [schedule], leadTimeMarginSeconds=60)
    doc["spec"]["warmup"] = {"timeoutSeconds": 30}
    apply(cluster, NAMESPACE, doc)
    keda_hpa(cluster, name)
    wait_for("the fleet Ready at minReplicas 1", lambda: ready_at(cluster, name, 1), 120)
    trigger = {t["name"]: t for t in (get(cluster, NAMESPACE, "scaledobject", name) or {})["spec"]["triggers"]}
    minute, hour = (int(field) for field in trigger["schedule-evening"]["metadata"]["start"].split()[:2])
    opens = ready_by.replace(hour=hour, minute=minute)
    if opens > ready_by:  # the start fell on the day before (readyBy just after midnight)
        opens -= datetime.timedelta(days=1)
    assert datetime.timedelta(minutes=1) <= ready_by - opens <= datetime.timedelta(minutes=2), opens
    assert datetime.datetime.now(datetime.UTC) < opens, "the window opened before the test saw it closed"

    wait_for("the fleet Ready at 2 replicas", lambda: ready_at(cluster, name, 2), 420)
    done = datetime.datetime.now(datetime.UTC)
    margin = (ready_by - done).total_seconds()
    print(
        f"\nreadyBy {ready_by:%H:%M} UTC, window opened {opens:%H:%M}: 2 replicas Ready "
        f"{(done - opens).total_seconds():.0f}s after it opened, {margin:.0f}s before readyBy"
    )
    assert margin >= 0, f"replicas became Ready {-margin:.0f}s after readyBy"


def test_an_unreachable_prometheus_does_not_stop_a_schedule_from_scaling_up(
    keda_cluster: tuple[ClusterHandle, dict[str, Any]], keda_operator: OperatorProcess
) -> None:
    """The queue trigger errors (nothing listens at its address): the HPA still scales up on the
    cron metric, which is what matters before a peak. (Scaling down waits for every metric.)"""
    cluster, _ = keda_cluster
    name = "blind"
    started = time.monotonic()
    apply(cluster, NAMESPACE, autoscaled(name, "http://127.0.0.1:9", [{"name": "peak", "replicas": 2, **ALWAYS_ON}]))
    keda_hpa(cluster, name)
    wait_for("the fleet at 2 Ready replicas despite the queue trigger failing", lambda: ready_at(cluster, name, 2), 240)
    scaled = get(cluster, NAMESPACE, "scaledobject", name) or {}
    print(
        f"\nunreachable Prometheus: apply -> 2 Ready in {time.monotonic() - started:.1f}s; "
        f"ScaledObject conditions {[(c['type'], c['status'], c.get('reason')) for c in scaled['status']['conditions']]}"
    )

    # The failing trigger holds off every scale-down: the fleet says so, with KEDA's words.
    def partial() -> dict[str, Any] | None:
        autoscaling = condition(get(cluster, NAMESPACE, "ttsd", name), "Autoscaling")
        return autoscaling if autoscaling.get("reason") == "PartialTriggerError" else None

    autoscaling = wait_for("the fleet's Autoscaling condition to report the failing queue trigger", partial, 60)
    assert autoscaling["status"] == "False" and autoscaling["message"].startswith("KEDA: "), autoscaling
    print(f"fleet Autoscaling=False PartialTriggerError: {autoscaling['message']}")
