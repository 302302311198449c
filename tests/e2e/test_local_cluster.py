"""The local cluster behaves like a real one where ttsfleet depends on it: local-SSD claims bind
next to their pods, pods become Ready on simulated GPU nodes, garbage collection, RBAC and
admission are on, and the third-party CRDs validate what the operator will create."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from ttsfleet.devcluster.cluster import ClusterHandle
from ttsfleet.devcluster.waiting import wait_for


def _get(cluster: ClusterHandle, *args: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def _statefulset(name: str, replicas: int, owner: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if owner:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", **owner}]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.invalid/never-pulled:1",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                            "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                        }
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "cache"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": "local-ssd",
                        "resources": {"requests": {"storage": "10Gi"}},
                    },
                }
            ],
        },
    }


def _apply(cluster: ClusterHandle, namespace: str, *objects: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def _ready_pods(cluster: ClusterHandle, namespace: str, app: str) -> list[dict[str, Any]]:
    pods = _get(cluster, "pods", "-n", namespace, "-l", f"app={app}")["items"]
    return [
        pod
        for pod in pods
        if any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
    ]


def test_statefulset_claims_bind_to_local_volumes_on_the_pods_node(cluster: ClusterHandle, namespace: str) -> None:
    _apply(cluster, namespace, _statefulset("ssd", replicas=2))

    pods = wait_for(
        lambda: (ready := _ready_pods(cluster, namespace, "ssd")) and len(ready) == 2 and ready,
        what="2 pods of StatefulSet ssd to be Ready",
        timeout=90,
        describe=lambda: cluster.kubectl("get", "pods,pvc", "-n", namespace, "-o", "wide", check=False).stdout,
    )
    for pod in pods:
        claim = _get(cluster, "pvc", "-n", namespace, f"cache-{pod['metadata']['name']}")
        assert claim["status"]["phase"] == "Bound"
        volume = _get(cluster, "pv", claim["spec"]["volumeName"])
        hosts = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
        assert hosts == [pod["spec"]["nodeName"]], "cache volume must live on the node running its pod"
        assert volume["spec"]["storageClassName"] == "local-ssd"


def test_nodes_advertise_zones_and_gpus_and_oversized_gpu_requests_stay_pending(
    cluster: ClusterHandle, namespace: str
) -> None:
    # The simulated GPU machines; a real node (if any) is the CPU machine this runs on.
    nodes = _get(cluster, "nodes", "-l", "type=kwok")["items"]
    zones = {node["metadata"]["labels"]["topology.kubernetes.io/zone"] for node in nodes}
    assert len(zones) >= 3
    assert all(node["status"]["allocatable"]["nvidia.com/gpu"] == "4" for node in nodes)

    greedy = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "greedy"},
        "spec": {
            "containers": [
                {"name": "main", "image": "registry.invalid/x:1", "resources": {"limits": {"nvidia.com/gpu": "5"}}}
            ]
        },
    }
    _apply(cluster, namespace, greedy)

    def scheduling_failure() -> str | None:
        events = _get(cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=greedy")
        messages = [e["message"] for e in events["items"] if e["reason"] == "FailedScheduling"]
        return messages[0] if messages else None

    message = wait_for(scheduling_failure, what="a FailedScheduling event for pod greedy", timeout=60)
    assert "nvidia.com/gpu" in message


def test_deleting_the_owner_garbage_collects_the_statefulset_and_its_pods(
    cluster: ClusterHandle, namespace: str
) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner_uid = _get(cluster, "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    _apply(cluster, namespace, _statefulset("owned", 1, owner={"name": "owner", "uid": owner_uid}))
    wait_for(lambda: _ready_pods(cluster, namespace, "owned"), what="pod of StatefulSet owned Ready", timeout=90)

    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)

    wait_for(
        lambda: (
            cluster.kubectl("get", "statefulset", "owned", "-n", namespace, check=False).returncode != 0
            and not _get(cluster, "pods", "-n", namespace, "-l", "app=owned")["items"]
        ),
        what="garbage collection of StatefulSet owned and its pods after its owner was deleted",
        timeout=60,
    )


def test_released_local_volumes_return_to_the_pool(cluster: ClusterHandle, namespace: str) -> None:
    _apply(cluster, namespace, _statefulset("recycle", 1))
    wait_for(lambda: _ready_pods(cluster, namespace, "recycle"), what="pod of recycle Ready", timeout=90)
    volume_name = _get(cluster, "pvc", "cache-recycle-0", "-n", namespace)["spec"]["volumeName"]

    cluster.kubectl("delete", "statefulset", "recycle", "-n", namespace, "--wait=true")
    cluster.kubectl("delete", "pvc", "cache-recycle-0", "-n", namespace, "--wait=true")

    wait_for(
        lambda: _get(cluster, "pv", volume_name)["status"]["phase"] == "Available",
        what=f"volume {volume_name} to be Available again after its claim was deleted",
        timeout=30,
    )


def test_rbac_denies_a_service_account_without_roles(cluster: ClusterHandle, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    user = f"system:serviceaccount:{namespace}:nobody"
    answer = cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace, f"--as={user}", check=False)
    assert answer.stdout.strip() == "no"

    cluster.kubectl("create", "role", "reader", "--verb=list", "--resource=pods", "-n", namespace)
    cluster.kubectl(
        "create", "rolebinding", "reader", "--role=reader", f"--serviceaccount={namespace}:nobody", "-n", namespace
    )
    allowed = cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace, f"--as={user}", check=False)
    assert allowed.stdout.strip() == "yes"


def test_pod_security_admission_rejects_a_privileged_pod(cluster: ClusterHandle, namespace: str) -> None:
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [{"name": "main", "image": "registry.invalid/x:1", "securityContext": {"privileged": True}}]
        },
    }
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(privileged), check=False)
    assert result.returncode != 0
    assert "violates PodSecurity" in result.stderr


_SCALED_OBJECT = {
    "apiVersion": "keda.sh/v1alpha1",
    "kind": "ScaledObject",
    "metadata": {"name": "fleet"},
    "spec": {
        "scaleTargetRef": {"name": "fleet", "kind": "StatefulSet", "apiVersion": "apps/v1"},
        "minReplicaCount": 1,
        "maxReplicaCount": 5,
        "triggers": [
            {
                "type": "cron",
                "metadata": {
                    "timezone": "Europe/Paris",
                    "start": "0 18 * * *",
                    "end": "0 23 * * *",
                    "desiredReplicas": "4",
                },
            },
            {
                "type": "prometheus",
                "metadata": {
                    "serverAddress": "http://prometheus:9090",
                    "query": "sum(tts_queue_length)",
                    "threshold": "4",
                },
            },
        ],
    },
}
_SERVICE_MONITOR = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "ServiceMonitor",
    "metadata": {"name": "fleet"},
    "spec": {"selector": {"matchLabels": {"app": "fleet"}}, "endpoints": [{"port": "metrics"}]},
}


def test_real_keda_and_prometheus_operator_crds_accept_valid_objects(cluster: ClusterHandle, namespace: str) -> None:
    _apply(cluster, namespace, _SCALED_OBJECT, _SERVICE_MONITOR)
    scaled = _get(cluster, "scaledobject", "fleet", "-n", namespace)
    assert scaled["spec"]["triggers"][0]["type"] == "cron"
    assert _get(cluster, "servicemonitor", "fleet", "-n", namespace)["spec"]["endpoints"] == [{"port": "metrics"}]


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        ({**_SCALED_OBJECT, "spec": {"minReplicaCount": 1}}, "spec.scaleTargetRef"),
        (
            {**_SCALED_OBJECT, "spec": {**_SCALED_OBJECT["spec"], "triggers": [{"metadata": {}}]}},
            "spec.triggers[0].type",
        ),
        ({**_SERVICE_MONITOR, "spec": {"selector": {}, "endpoints": "metrics"}}, "spec.endpoints"),
    ],
    ids=["scaledobject-without-target", "trigger-without-type", "servicemonitor-endpoints-not-a-list"],
)
def test_real_crd_schemas_reject_malformed_objects_naming_the_field(
    cluster: ClusterHandle, namespace: str, manifest: dict[str, Any], field: str
) -> None:
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr
