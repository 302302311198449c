"""A fleet's life on the real cluster: create, canary rollout, scale, drift repair, delete."""

from __future__ import annotations

import json
from typing import Any

from fleet_helpers import HANG_GUARD_SECONDS, IMAGE, apply, condition, fleet, get, items, ready_fleet, wait_for

from ttsfleet.operator import naming
from ttsfleet.operator.naming import Owner

NAME = "voices"
SELECTOR = f"{naming.LABEL_INSTANCE}={NAME}"


def pods(cluster: Any, namespace: str) -> list[dict[str, Any]]:
    return items(cluster, namespace, "pods", "-l", SELECTOR)


def test_create_rollout_scale_repair_delete(cluster: Any, namespace: str, running_operator: Any) -> None:
    spread = {"whenUnsatisfiable": "DoNotSchedule"}
    apply(cluster, namespace, fleet(NAME, replicas=3, rollout={"partition": 2}, topologySpread=spread))

    # Every child exists, owned by the fleet.
    ttsd = wait_for("the TTSDeployment to get a uid", lambda: get(cluster, namespace, "ttsd", NAME), HANG_GUARD_SECONDS)
    owner = Owner(NAME, namespace, ttsd["metadata"]["uid"])
    expected = [
        ("statefulset", naming.statefulset_name(owner)),
        ("service", naming.headless_service_name(owner)),
        ("service", naming.client_service_name(owner)),
        ("configmap", naming.configmap_name(owner)),
        ("poddisruptionbudget", NAME),
    ]
    for kind, name in expected:
        child = wait_for(f"{kind}/{name}", lambda k=kind, n=name: get(cluster, namespace, k, n), HANG_GUARD_SECONDS)
        assert naming.is_owned_by(child, owner), f"{kind}/{name} is not owned by the fleet"

    # Pods Ready on kwok nodes, each with its cache bound to a local-SSD PV on its own node.
    ttsd = ready_fleet(cluster, namespace, NAME)
    assert ttsd["status"]["readyReplicas"] == 3
    assert ttsd["status"]["selector"] == naming.selector_string(owner)
    assert not ttsd["metadata"].get("finalizers")
    for pod in pods(cluster, namespace):
        node = pod["spec"]["nodeName"]
        assert node.startswith("kwok-node-")
        claim = get(cluster, namespace, "pvc", f"{naming.CACHE_VOLUME}-{pod['metadata']['name']}")
        assert claim is not None and claim["status"]["phase"] == "Bound"
        volume = get(cluster, "default", "pv", claim["spec"]["volumeName"])
        assert volume is not None and volume["spec"]["storageClassName"] == "local-ssd"
        terms = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
        assert node in json.dumps(terms)
    assert len({p["spec"]["nodeName"] for p in pods(cluster, namespace)}) == 3, "pods not spread over zones"

    # Steady state: further passes write nothing at all (two more finished resyncs prove the
    # operator looked at the fleet again after `before` was taken).
    def versions() -> dict[str, str]:
        found = {f"{k}/{n}": (get(cluster, namespace, k, n) or {})["metadata"]["resourceVersion"] for k, n in expected}
        found["ttsd"] = (get(cluster, namespace, "ttsd", NAME) or {})["metadata"]["resourceVersion"]
        return found

    wait_for(
        "the fleet to settle",
        lambda: condition(get(cluster, namespace, "ttsd", NAME), "Progressing").get("status") == "False",
        HANG_GUARD_SECONDS,
    )
    before = versions()
    running_operator.wait_for_resyncs()
    assert versions() == before, "a reconcile pass changed a settled fleet"

    # kubectl get shows the printer columns.
    table = cluster.kubectl("get", "ttsd", "-n", namespace).stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "READY", "REPLICAS", "MODEL", "AUTOSCALING", "AGE"], table
    assert table.splitlines()[1].split()[1:5] == ["True", "3/3", "chattts", "false"], table

    # A new image with partition 2: only pod 2 moves to it.
    new_image = IMAGE + "-canary"
    cluster.kubectl(
        "patch",
        "ttsd",
        NAME,
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"image": new_image}}),
    )

    seen: dict[str, Any] = {}  # what the last look found, for the message if the wait fails

    def canary_done() -> dict[str, str] | None:
        images = {p["metadata"]["name"]: p["spec"]["containers"][0]["image"] for p in pods(cluster, namespace)}
        obj = get(cluster, namespace, "ttsd", NAME)
        progressing = condition(obj, "Progressing")
        ready = condition(obj, "Ready")
        seen.update(images=images, progressing=progressing, ready=ready)
        done = (
            images.get(f"{NAME}-2") == new_image
            and progressing.get("reason") == "PartitionRolledOut"
            and ready.get("status") == "True"
        )
        return images if done else None

    images = wait_for(
        "pod 2 to run the canary image and the fleet to settle", canary_done, HANG_GUARD_SECONDS, explain=lambda: seen
    )
    assert images[f"{NAME}-0"] == IMAGE
    assert images[f"{NAME}-1"] == IMAGE

    # The scale subresource drives the StatefulSet and reports back.
    cluster.kubectl("scale", "ttsd", NAME, "-n", namespace, "--replicas=4")
    wait_for(
        "the StatefulSet to follow kubectl scale",
        lambda: (get(cluster, namespace, "sts", NAME) or {}).get("spec", {}).get("replicas") == 4,
        HANG_GUARD_SECONDS,
    )
    scale = json.loads(
        cluster.kubectl(
            "get",
            "--raw",
            f"/apis/tts.ttsfleet.io/v1alpha1/namespaces/{namespace}/ttsdeployments/{NAME}/scale",
        ).stdout
    )
    assert scale["spec"]["replicas"] == 4
    ready_fleet(cluster, namespace, NAME)

    # Drift: edits and deletions of children are undone.
    cluster.kubectl("patch", "sts", NAME, "-n", namespace, "--type", "merge", "-p", '{"spec":{"replicas":1}}')
    wait_for(
        "the StatefulSet replicas edit to be reverted",
        lambda: (get(cluster, namespace, "sts", NAME) or {}).get("spec", {}).get("replicas") == 4,
        HANG_GUARD_SECONDS,
    )
    cm_name = naming.configmap_name(owner)
    original = (get(cluster, namespace, "configmap", cm_name) or {})["data"]
    cluster.kubectl(
        "patch",
        "configmap",
        cm_name,
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        '{"data":{"config.pbtxt":"x"}}',
    )
    wait_for(
        "the ConfigMap edit to be reverted",
        lambda: (get(cluster, namespace, "configmap", cm_name) or {}).get("data") == original,
        HANG_GUARD_SECONDS,
    )
    client_svc = naming.client_service_name(owner)
    old_uid = (get(cluster, namespace, "service", client_svc) or {})["metadata"]["uid"]
    cluster.kubectl("delete", "service", client_svc, "-n", namespace, "--wait=true")
    wait_for(
        "the deleted client Service to be recreated",
        lambda: (
            (get(cluster, namespace, "service", client_svc) or {}).get("metadata", {}).get("uid", old_uid) != old_uid
        ),
        HANG_GUARD_SECONDS,
    )

    # Delete: garbage collection removes every child, pod and cache claim.
    cluster.kubectl("delete", "ttsd", NAME, "-n", namespace, "--timeout=30s")

    def all_gone() -> bool:
        left = [
            *items(cluster, namespace, "statefulsets,services,configmaps,poddisruptionbudgets", "-l", SELECTOR),
            *pods(cluster, namespace),
            *items(cluster, namespace, "pvc", "-l", SELECTOR),
        ]
        return not left

    wait_for("every child, pod and PVC of the fleet to be garbage-collected", all_gone, HANG_GUARD_SECONDS)
