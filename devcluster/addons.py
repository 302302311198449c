"""Objects every local cluster starts with, as pure builders: simulated nodes, the local-SSD
StorageClass and its pre-created local PersistentVolumes (the way local-static-provisioner lays
them out), so ``volumeClaimTemplates`` bind and pods land on the node that holds their cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttsfleet.devcluster import versions

LOCAL_SSD_CLASS = "local-ssd"
LOCAL_SSD_LABEL = "ttsfleet.io/local-ssd"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
ZONE_LABEL = "topology.kubernetes.io/zone"
HOSTNAME_LABEL = "kubernetes.io/hostname"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class NodePlan:
    """The shape of the simulated fleet of machines."""

    zones: tuple[str, ...] = ("zone-a", "zone-b", "zone-c")
    nodes_per_zone: int = 1
    cpu: str = "32"
    memory: str = "128Gi"
    gpus: int = 4
    pods: int = 110
    volumes_per_node: int = 16
    volume_size: str = "100Gi"

    def node_names(self) -> list[str]:
        count = len(self.zones) * self.nodes_per_zone
        return [f"kwok-node-{index}" for index in range(count)]

    def zone_of(self, index: int) -> str:
        return self.zones[index % len(self.zones)]


def node(plan: NodePlan, index: int) -> dict[str, Any]:
    name = plan.node_names()[index]
    resources = {
        "cpu": plan.cpu,
        "memory": plan.memory,
        "pods": str(plan.pods),
        "ephemeral-storage": "500Gi",
        GPU_RESOURCE: str(plan.gpus),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            # kwok manages exactly the nodes carrying this annotation.
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                HOSTNAME_LABEL: name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                ZONE_LABEL: plan.zone_of(index),
                "topology.kubernetes.io/region": "local",
                "nvidia.com/gpu.present": "true",
            },
        },
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": versions.KUBERNETES,
                "kubeProxyVersion": versions.KUBERNETES,
            },
            "phase": "Running",
        },
    }


def storage_class(name: str = LOCAL_SSD_CLASS, binding: str = "WaitForFirstConsumer") -> dict[str, Any]:
    """The local-SSD class. Its binding waits for the scheduler so the pod and its cache land on
    the same node; ``Immediate`` binds a claim when it is created (the operator bench's class)."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": binding,
        "reclaimPolicy": "Delete",
    }


def local_volume(plan: NodePlan, node_name: str, slot: int, class_name: str = LOCAL_SSD_CLASS) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": f"{class_name}-{node_name}-{slot}",
            "labels": {LOCAL_SSD_LABEL: "true", HOSTNAME_LABEL: node_name},
        },
        "spec": {
            "capacity": {"storage": plan.volume_size},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": class_name,
            "volumeMode": "Filesystem",
            "local": {"path": f"/mnt/disks/ssd{slot}"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In", "values": [node_name]}]}
                    ]
                }
            },
        },
    }


def all_objects(plan: NodePlan) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = [node(plan, index) for index in range(len(plan.node_names()))]
    objects.append(storage_class())
    for node_name in plan.node_names():
        objects += [local_volume(plan, node_name, slot) for slot in range(plan.volumes_per_node)]
    return objects
