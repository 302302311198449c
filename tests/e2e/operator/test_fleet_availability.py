"""Availability on the real cluster: the scale subresource, the PodDisruptionBudget as the
disruption controller enforces it, and warm caches that survive a scale-down."""

from __future__ import annotations

import json
from typing import Any

from fleet_helpers import HANG_GUARD_SECONDS, apply, fleet, get, items, ready_fleet, wait_for

from ttsfleet.operator import naming

NAME = "budget"
REFUSED = "Cannot evict pod as it would violate the pod's disruption budget"


def scale(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    path = f"/apis/tts.ttsfleet.io/v1alpha1/namespaces/{namespace}/ttsdeployments/{name}/scale"
    data: dict[str, Any] = json.loads(cluster.kubectl("get", "--raw", path).stdout)
    return data


def evict(cluster: Any, namespace: str, pod: str) -> Any:
    """POST an Eviction, as kubectl drain does."""
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": namespace}}
    return cluster.kubectl(
        "create",
        "--raw",
        f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction",
        "-f",
        "-",
        input=json.dumps(eviction),
        check=False,
    )


def allowed(cluster: Any, namespace: str) -> tuple[int, int] | None:
    """(currentHealthy, disruptionsAllowed) as the disruption controller last computed them."""
    status = (get(cluster, namespace, "pdb", NAME) or {}).get("status") or {}
    if "currentHealthy" not in status:
        return None
    return int(status["currentHealthy"]), int(status.get("disruptionsAllowed") or 0)


def scaled_to(cluster: Any, namespace: str, name: str, replicas: int) -> dict[str, Any]:
    cluster.kubectl("scale", "ttsd", name, "-n", namespace, f"--replicas={replicas}")

    def probe() -> dict[str, Any] | None:
        obj = get(cluster, namespace, "ttsd", name) or {}
        status = obj.get("status") or {}
        sts = (get(cluster, namespace, "sts", name) or {}).get("spec", {})
        done = sts.get("replicas") == replicas and status.get("readyReplicas") == replicas
        return obj if done and status.get("replicas") == replicas else None

    return wait_for(f"{name} to scale to {replicas} (StatefulSet, status)", probe, 60)


def test_scale_subresource_pdb_and_eviction(cluster: Any, namespace: str, running_operator: Any) -> None:
    apply(cluster, namespace, fleet(NAME, replicas=1, disruption={"maxUnavailable": 1}))
    ready_fleet(cluster, namespace, NAME)
    # One replica: a budget would block every drain of its node or protect nothing.
    assert get(cluster, namespace, "pdb", NAME) is None

    # kubectl scale → StatefulSet → status, read back through the scale subresource.
    obj = scaled_to(cluster, namespace, NAME, 3)
    assert obj["status"]["replicasSummary"] == "3/3"
    current = scale(cluster, namespace, NAME)
    assert current["spec"]["replicas"] == 3
    assert current["status"]["replicas"] == 3
    owner = naming.Owner(NAME, namespace, obj["metadata"]["uid"])
    assert current["status"]["selector"] == naming.selector_string(owner)

    # Three replicas: the budget exists, and the disruption controller counts the pods.
    def budget_ready() -> dict[str, Any] | None:
        pdb = get(cluster, namespace, "pdb", NAME) or {}
        status = pdb.get("status") or {}
        counted = (status.get("expectedPods"), status.get("currentHealthy"), status.get("desiredHealthy"))
        settled = status.get("observedGeneration") == pdb.get("metadata", {}).get("generation")
        return pdb if settled and counted == (3, 3, 2) and status.get("disruptionsAllowed") == 1 else None

    pdb = wait_for("the disruption controller to allow 1 disruption of 3 pods", budget_ready, HANG_GUARD_SECONDS)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert naming.is_owned_by(pdb, owner)

    # One pod stops being Ready (its phase stays Running, so kwok leaves it so): the budget is
    # spent, deterministically, with no race against the StatefulSet recreating evicted pods.
    cluster.kubectl(
        "patch",
        "pod",
        f"{NAME}-2",
        "-n",
        namespace,
        "--subresource=status",
        "-p",
        json.dumps({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "TestNotReady"}]}}),
    )
    wait_for(
        "the disruption controller to see 2 healthy pods and allow no disruption",
        lambda: allowed(cluster, namespace) == (2, 0),
        30,
    )

    # A drain's eviction of a healthy pod is refused with 429 ...
    refused = evict(cluster, namespace, f"{NAME}-0")
    assert refused.returncode != 0, "an eviction beyond the budget was allowed"
    assert REFUSED in refused.stderr, refused.stderr
    assert "429" in refused.stderr or "TooManyRequests" in refused.stderr, refused.stderr
    assert (get(cluster, namespace, "pod", f"{NAME}-0") or {}).get("metadata", {}).get("deletionTimestamp") is None
    # ... while the pod that serves nothing may go (unhealthyPodEvictionPolicy: AlwaysAllow).
    unhealthy = evict(cluster, namespace, f"{NAME}-2")
    assert unhealthy.returncode == 0, unhealthy.stderr

    # Its replacement is Ready: one disruption is allowed again, and a drain proceeds.
    wait_for(
        "the budget to allow 1 disruption again",
        lambda: allowed(cluster, namespace) == (3, 1),
        60,
    )
    within = evict(cluster, namespace, f"{NAME}-0")
    assert within.returncode == 0, within.stderr

    # Back to one replica: the budget goes.
    scaled_to(cluster, namespace, NAME, 1)
    wait_for("the budget to be pruned", lambda: get(cluster, namespace, "pdb", NAME) is None, HANG_GUARD_SECONDS)


def claim(cluster: Any, namespace: str, pod: str) -> dict[str, Any] | None:
    return get(cluster, namespace, "pvc", f"{naming.CACHE_VOLUME}-{pod}")


def test_warm_cache_survives_scale_down(cluster: Any, namespace: str, running_operator: Any) -> None:
    apply(
        cluster,
        namespace,
        fleet("keep", replicas=2),  # keepOnScaleDown defaults to true
        fleet("drop", replicas=2, modelCache={"keepOnScaleDown": False}),
    )
    for name in ("keep", "drop"):
        ready_fleet(cluster, namespace, name)
    kept = claim(cluster, namespace, "keep-1")
    dropped = claim(cluster, namespace, "drop-1")
    assert kept is not None and dropped is not None
    policy = (get(cluster, namespace, "sts", "keep") or {})["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert policy == {"whenScaled": "Retain", "whenDeleted": "Delete"}

    for name in ("keep", "drop"):
        scaled_to(cluster, namespace, name, 1)
    wait_for(
        "the pods of ordinal 1 to be gone",
        lambda: not [p for p in items(cluster, namespace, "pods") if p["metadata"]["name"].endswith("-1")],
        60,
    )
    # Retain: the cache of keep-1 stays; Delete: the cache of drop-1 goes with its pod.
    wait_for("drop-1's cache claim to be deleted", lambda: claim(cluster, namespace, "drop-1") is None, 60)
    still = claim(cluster, namespace, "keep-1")
    assert still is not None and still["metadata"]["uid"] == kept["metadata"]["uid"]

    # The returning ordinal mounts the same claim, bound to the same volume: it starts warm.
    scaled_to(cluster, namespace, "keep", 2)
    back = claim(cluster, namespace, "keep-1")
    assert back is not None
    assert back["metadata"]["uid"] == kept["metadata"]["uid"]
    assert back["spec"]["volumeName"] == kept["spec"]["volumeName"]
    pod = get(cluster, namespace, "pod", "keep-1") or {}
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [f"{naming.CACHE_VOLUME}-keep-1"]
