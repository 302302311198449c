"""Autoscaling on the real cluster: the ScaledObject against KEDA's real CRD schema, cron
pre-scaling with a start derived from the measured cold start, and no fight over replicas.

No KEDA controller runs here. One test plays the HPA's part exactly as the HPA does it (a GET and
a PUT of the TTSDeployment's ``/scale`` subresource) to drive replicas to any count; the other
creates the HorizontalPodAutoscaler KEDA would derive from the ScaledObject and lets
kube-controller-manager's real HPA controller scale the fleet to its minimum. The fleet is
managed the way Argo CD manages it: server-side apply of a manifest without ``replicas``.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import yaml
from fleet_helpers import HANG_GUARD_SECONDS, condition, fleet, get, ready_fleet, wait_for

from ttsfleet.operator import schedules

NAME = "peaky"
GITOPS_MANAGER = "argocd-controller"
HPA_MANAGER = "kube-controller-manager"  # the HPA controller runs there
MARGIN_SECONDS = 60
AUTOSCALING: dict[str, Any] = {
    "enabled": True,
    "minReplicas": 2,
    "maxReplicas": 6,
    "pollingIntervalSeconds": 20,
    "cooldownSeconds": 600,
    "scaleDownStabilizationSeconds": 900,
    "leadTimeMarginSeconds": MARGIN_SECONDS,
    "schedules": [
        # Overlapping windows: KEDA (the HPA) takes the highest of all triggers.
        {"name": "office", "timezone": "Europe/Paris", "start": "0 8 * * 1-5", "end": "0 18 * * 1-5", "replicas": 3},
        {
            "name": "evening",
            "timezone": "America/New_York",
            "readyBy": "0 19 * * *",
            "end": "0 23 * * *",
            "replicas": 5,
        },
    ],
}


def manifest(**overrides: Any) -> dict[str, Any]:
    """The CR as git holds it: no replicas, which belong to the autoscaler."""
    # The ServiceMonitor is what gets the queue metric scraped (else Autoscaling=False, QueueMetricNotScraped).
    doc = fleet(
        NAME,
        autoscaling=copy.deepcopy(AUTOSCALING),
        warmup={"sentences": ["Good evening."]},
        monitoring={"serviceMonitor": True},
    )
    doc["spec"].update(overrides)
    return doc


def gitops_apply(cluster: Any, namespace: str, doc: dict[str, Any], *, dry_run: bool = False) -> Any:
    """Argo CD's server-side sync (or, dry-run, its server-side diff): its own field manager."""
    verb = ["apply", "--server-side", "--dry-run=server", "-o", "json"] if dry_run else ["apply", "--server-side"]
    return cluster.kubectl(
        *verb,
        "--force-conflicts",
        f"--field-manager={GITOPS_MANAGER}",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(doc),
    )


def dig(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        obj = (obj or {}).get(key) or {}
    return obj


def scale_path(namespace: str) -> str:
    return f"/apis/tts.ttsfleet.io/v1alpha1/namespaces/{namespace}/ttsdeployments/{NAME}/scale"


def autoscaler_writes(cluster: Any, namespace: str, replicas: int) -> None:
    """What the HPA does each sync: read the Scale, set spec.replicas, PUT it back; a conflict (the
    operator wrote the fleet's status in between) sends it back to read again, as the HPA's next
    sync would."""
    for _ in range(10):
        scale = json.loads(cluster.kubectl("get", "--raw", scale_path(namespace)).stdout)
        scale["spec"]["replicas"] = replicas
        result = cluster.kubectl(
            "replace",
            "--raw",
            f"{scale_path(namespace)}?fieldManager={HPA_MANAGER}",
            "-f",
            "-",
            input=json.dumps(scale),
            check=False,
        )
        if result.returncode == 0:
            return
        assert "(Conflict)" in result.stderr, result.stderr
    raise AssertionError(f"the Scale of {NAME} conflicted 10 times in a row: {result.stderr}")


def sts_replicas(cluster: Any, namespace: str) -> int | None:
    return (get(cluster, namespace, "sts", NAME) or {}).get("spec", {}).get("replicas")


def spec_replicas(cluster: Any, namespace: str) -> int | None:
    return (get(cluster, namespace, "ttsd", NAME) or {}).get("spec", {}).get("replicas")


def replicas_owners(cluster: Any, namespace: str) -> set[str]:
    """The field managers that claim the fleet's spec.replicas."""
    live = get(cluster, namespace, "ttsd", NAME, "--show-managed-fields") or {}
    return {
        m["manager"]
        for m in live["metadata"]["managedFields"]
        if "f:replicas" in (m.get("fieldsV1") or {}).get("f:spec", {})
    }


def fleet_at(cluster: Any, namespace: str, replicas: int, what: str) -> dict[str, Any]:
    """StatefulSet, status and the scale subresource all at ``replicas``, every pod Ready."""

    def probe() -> dict[str, Any] | None:
        obj = get(cluster, namespace, "ttsd", NAME) or {}
        status = obj.get("status") or {}
        scale = json.loads(cluster.kubectl("get", "--raw", scale_path(namespace)).stdout)
        done = (
            sts_replicas(cluster, namespace) == replicas
            and obj.get("spec", {}).get("replicas") == replicas
            and status.get("replicas") == replicas
            and status.get("readyReplicas") == replicas
            and scale["status"].get("replicas") == replicas
        )
        return obj if done else None

    return wait_for(what, probe, 60)


def test_scaledobject_schedules_and_no_fight_with_the_autoscaler(
    cluster: Any, namespace: str, running_operator: Any
) -> None:
    # Created as Argo CD would: replicas left out (defaulted to 1, below minReplicas: allowed,
    # since the autoscaler owns replicas and brings them within bounds).
    gitops_apply(cluster, namespace, manifest())
    ttsd = ready_fleet(cluster, namespace, NAME)
    assert ttsd["spec"]["replicas"] == 1

    # The ScaledObject passed KEDA's real CRD schema (server-side apply validates it) and says so.
    scaled = wait_for("the ScaledObject", lambda: get(cluster, namespace, "scaledobject", NAME), HANG_GUARD_SECONDS)
    body = scaled["spec"]
    assert body["scaleTargetRef"] == {"apiVersion": "tts.ttsfleet.io/v1alpha1", "kind": "TTSDeployment", "name": NAME}
    assert (body["minReplicaCount"], body["maxReplicaCount"]) == (2, 6)
    assert (body["pollingInterval"], body["cooldownPeriod"]) == (20, 600)
    behavior = body["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 900
    by_name = {t["name"]: t for t in body["triggers"]}
    assert by_name["queue-length"]["type"] == "prometheus"
    assert "tts_queue_length" in by_name["queue-length"]["metadata"]["query"]
    assert by_name["schedule-office"]["metadata"] == {
        "timezone": "Europe/Paris",
        "start": "0 8 * * 1-5",
        "end": "0 18 * * 1-5",
        "desiredReplicas": "3",
    }
    autoscaling = condition(get(cluster, namespace, "ttsd", NAME), "Autoscaling")
    assert (autoscaling.get("status"), autoscaling.get("reason")) == ("True", "ScaledObjectApplied"), autoscaling
    assert condition(get(cluster, namespace, "ttsd", NAME), "Degraded").get("status") == "False"

    # readyBy: the cron start in the trigger is readyBy minus the measured p95 cold start and the
    # margin, and status reports the same start and lead.
    def derived() -> tuple[dict[str, Any], dict[str, Any]] | None:
        status = (get(cluster, namespace, "ttsd", NAME) or {}).get("status") or {}
        p95 = status.get("coldStartP95Seconds")
        reported = {s["name"]: s for s in status.get("schedules") or []}.get("evening")
        trigger = {t["name"]: t for t in (get(cluster, namespace, "scaledobject", NAME) or {})["spec"]["triggers"]}
        if p95 is None or reported is None:
            return None
        lead = math.ceil(p95) + MARGIN_SECONDS
        expected = schedules.derive_start("0 19 * * *", lead)
        evening = trigger["schedule-evening"]["metadata"]
        consistent = reported == {"name": "evening", "start": expected, "leadSeconds": lead}
        return (status, evening) if consistent and evening["start"] == expected else None

    status, evening = wait_for(
        "the derived evening start in status and in the cron trigger", derived, HANG_GUARD_SECONDS
    )
    assert evening["timezone"] == "America/New_York"
    assert (evening["end"], evening["desiredReplicas"]) == ("0 23 * * *", "5")
    # kwok pods are Ready within seconds: the start lands one or two minutes before 19:00.
    assert evening["start"] in ("59 18 * * *", "58 18 * * *"), (evening, status["coldStartP95Seconds"])

    # The autoscaler raises replicas to its minimum, then to 4 for a queue burst.
    autoscaler_writes(cluster, namespace, 2)
    fleet_at(cluster, namespace, 2, "the fleet to follow the autoscaler to 2")
    autoscaler_writes(cluster, namespace, 4)
    fleet_at(cluster, namespace, 4, "the fleet to follow the autoscaler to 4")
    sts_version = (get(cluster, namespace, "sts", NAME) or {})["metadata"]["resourceVersion"]

    # Resync passes leave the autoscaler's count alone (and write nothing to the StatefulSet).
    running_operator.wait_for_resyncs()
    assert spec_replicas(cluster, namespace) == 4
    assert (get(cluster, namespace, "sts", NAME) or {})["metadata"]["resourceVersion"] == sts_version

    # A drift repair restores the autoscaler's count, not the manifest's default.
    cluster.kubectl("patch", "sts", NAME, "-n", namespace, "--type", "merge", "-p", '{"spec":{"replicas":1}}')
    wait_for(
        "the StatefulSet edit to be reverted to 4", lambda: sts_replicas(cluster, namespace) == 4, HANG_GUARD_SECONDS
    )
    assert spec_replicas(cluster, namespace) == 4

    # An unrelated change synced from git (a label, a warmup sentence) keeps replicas at 4.
    changed = manifest(warmup={"sentences": ["Good evening, and welcome."]})
    changed["metadata"]["labels"] = {"team": "voice"}
    gitops_apply(cluster, namespace, changed)
    cm_name = f"{NAME}-serving"
    wait_for(
        "the new warmup sentence in the serving config",
        lambda: "welcome" in json.dumps((get(cluster, namespace, "configmap", cm_name) or {}).get("data")),
        HANG_GUARD_SECONDS,
    )
    fleet_at(cluster, namespace, 4, "the fleet to stay at 4 through the rollout")
    wait_for(
        "the rollout to complete",
        lambda: condition(get(cluster, namespace, "ttsd", NAME), "Progressing").get("reason") == "RolloutComplete",
        60,
    )
    assert spec_replicas(cluster, namespace) == 4

    # Argo CD's server-side diff of the same manifest (no replicas) shows nothing: no perpetual
    # diff. Like Argo CD, compare what git owns; status is the operator's and moves on its own.
    live = get(cluster, namespace, "ttsd", NAME) or {}
    merged = json.loads(gitops_apply(cluster, namespace, changed, dry_run=True).stdout)
    for path in (("spec",), ("metadata", "labels"), ("metadata", "annotations")):
        assert dig(merged, path) == dig(live, path), f"a sync of the same manifest would change {'.'.join(path)}"
    owners = replicas_owners(cluster, namespace)
    # Neither git (the manifest has no replicas) nor the operator (it never writes the fleet's
    # spec) claims spec.replicas; only the autoscaler's writes through /scale may.
    assert owners <= {HPA_MANAGER}, owners

    # Autoscaling off: the ScaledObject goes and replicas are the spec's again.
    off = manifest(autoscaling={"enabled": False}, replicas=3)
    gitops_apply(cluster, namespace, off)
    wait_for(
        "the ScaledObject to be removed",
        lambda: get(cluster, namespace, "scaledobject", NAME) is None,
        HANG_GUARD_SECONDS,
    )
    obj = fleet_at(cluster, namespace, 3, "the fleet to follow spec.replicas=3 again")
    assert condition(obj, "Autoscaling") == {}


def hpa_as_keda_makes_it(scaled: dict[str, Any]) -> dict[str, Any]:
    """The HorizontalPodAutoscaler KEDA's controller derives from a ScaledObject: named
    keda-hpa-<name>, same target and bounds, one External metric per trigger, the advanced
    behaviour. (No KEDA here; the HPA controller that acts on it is the real one.)"""
    spec = scaled["spec"]
    name = scaled["metadata"]["name"]
    metrics = [
        {
            "type": "External",
            "external": {
                "metric": {
                    "name": f"s{index}-{trigger['type']}",
                    "selector": {"matchLabels": {"scaledobject.keda.sh/name": name}},
                },
                "target": {"type": "AverageValue", "averageValue": "1"},
            },
        }
        for index, trigger in enumerate(spec["triggers"])
    ]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"keda-hpa-{name}", "labels": {"scaledobject.keda.sh/name": name}},
        "spec": {
            "scaleTargetRef": spec["scaleTargetRef"],
            "minReplicas": spec["minReplicaCount"],
            "maxReplicas": spec["maxReplicaCount"],
            "metrics": metrics,
            "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
        },
    }


def test_the_real_hpa_controller_scales_the_fleet_and_the_operator_leaves_it(
    cluster: Any, namespace: str, running_operator: Any
) -> None:
    gitops_apply(cluster, namespace, manifest())
    ready_fleet(cluster, namespace, NAME)
    scaled = wait_for("the ScaledObject", lambda: get(cluster, namespace, "scaledobject", NAME), HANG_GUARD_SECONDS)
    hpa = hpa_as_keda_makes_it(scaled)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(hpa))

    # kube-controller-manager's HPA controller (15 s sync period) brings the fleet up to
    # minReplicas through the TTSDeployment's /scale, before it needs any metric.
    fleet_at(cluster, namespace, AUTOSCALING["minReplicas"], "the HPA to raise the fleet to minReplicas")
    owners = replicas_owners(cluster, namespace)
    # Neither git nor the operator claims spec.replicas. (Writes through /scale of a custom
    # resource leave no managedFields entry at all, so the HPA's claim does not show either.)
    assert owners <= {HPA_MANAGER}, owners
    status = (get(cluster, namespace, "hpa", hpa["metadata"]["name"]) or {}).get("status") or {}
    assert status.get("desiredReplicas") == AUTOSCALING["minReplicas"], status

    # The operator's resyncs and a sync from git leave the HPA's count alone.
    sts_version = (get(cluster, namespace, "sts", NAME) or {})["metadata"]["resourceVersion"]
    gitops_apply(cluster, namespace, manifest())
    running_operator.wait_for_resyncs()
    assert spec_replicas(cluster, namespace) == AUTOSCALING["minReplicas"]
    assert (get(cluster, namespace, "sts", NAME) or {})["metadata"]["resourceVersion"] == sts_version
