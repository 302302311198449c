"""A model source inside the local cluster: generated ChatTTS weights served over HTTP by a pod.

The cluster has no internet and no DNS, so fleets on the real node fetch from a Service's
ClusterIP. The pod runs the worker image: an init container writes a checkpoint with
``ttsfleet-make-weights`` (the nine asset files plus ``ttsfleet-weights.json``, the exact layout and
manifest an https source serves) into an emptyDir, and ``python3 -m http.server`` serves it. The
fetcher's real code then reads it with its sha256 checks, as from any http(s) source; plain http
needs ``spec.model.allowInsecureHTTP``, which is what a fleet using it sets.
"""

from __future__ import annotations

import json
from typing import Any

from ttsfleet.devcluster import realnode
from ttsfleet.devcluster.cluster import ClusterHandle
from ttsfleet.devcluster.waiting import wait_for

NAME = "model-server"
# A Service with no pods: a source that refuses connections (what an unreachable mirror looks like).
NOWHERE = "no-model-server"
PORT = 8080
UID = 65532
WEIGHTS_DIR = "/srv/weights"
# The revision a fleet names; the generated manifest records its own, which the fetcher only logs.
REVISION = "generated-tiny"


def _security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def objects(worker_image: str) -> list[dict[str, Any]]:
    """The model server's Pod and Service, plus a Service without endpoints (see NOWHERE)."""
    mounts = [{"name": "srv", "mountPath": "/srv"}, {"name": "tmp", "mountPath": "/tmp"}]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": NAME, "labels": {"app": NAME}},
        "spec": {
            "nodeSelector": realnode.REAL_NODE_SELECTOR,
            "tolerations": [realnode.REAL_NODE_TOLERATION],
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsUser": UID,
                "runAsGroup": UID,
                "fsGroup": UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "initContainers": [
                {
                    "name": "make-weights",
                    "image": worker_image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["ttsfleet-make-weights", "--preset", "tiny", "--output", WEIGHTS_DIR],
                    "env": [{"name": "HOME", "value": "/tmp"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
                    "securityContext": _security(),
                    "volumeMounts": mounts,
                }
            ],
            "containers": [
                {
                    "name": "http",
                    "image": worker_image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-m", "http.server", str(PORT), "--directory", WEIGHTS_DIR],
                    "ports": [{"name": "http", "containerPort": PORT}],
                    "readinessProbe": {"httpGet": {"path": "/ttsfleet-weights.json", "port": PORT}, "periodSeconds": 2},
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
                    "securityContext": _security(),
                    "volumeMounts": mounts,
                }
            ],
            "volumes": [
                {"name": "srv", "emptyDir": {"sizeLimit": "256Mi"}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            ],
            "terminationGracePeriodSeconds": 2,
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME},
        "spec": {"selector": {"app": NAME}, "ports": [{"name": "http", "port": 80, "targetPort": PORT}]},
    }
    nowhere = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NOWHERE},
        "spec": {"selector": {"app": NOWHERE}, "ports": [{"name": "http", "port": 80, "targetPort": PORT}]},
    }
    return [pod, service, nowhere]


def _cluster_ip(cluster: ClusterHandle, namespace: str, service: str) -> str:
    body = json.loads(cluster.kubectl("get", "service", service, "-n", namespace, "-o", "json").stdout)
    return str(body["spec"]["clusterIP"])


def start(cluster: ClusterHandle, namespace: str, timeout: float = 600) -> str:
    """Run the model server in ``namespace``; its base URL (``http://<ClusterIP>``) once it serves."""
    import yaml

    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects(cluster.images["worker"])))

    def serving() -> bool:
        pod = json.loads(cluster.kubectl("get", "pod", NAME, "-n", namespace, "-o", "json").stdout)
        conditions = pod.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_for(
        serving,
        what=f"model server pod {NAME} Ready (weights generated and served)",
        timeout=timeout,
        interval=2,
        describe=lambda: cluster.kubectl("describe", "pod", NAME, "-n", namespace, check=False).stdout[-3000:],
    )
    return f"http://{_cluster_ip(cluster, namespace, NAME)}"


def unreachable_url(cluster: ClusterHandle, namespace: str) -> str:
    """A source whose connections are refused: a Service without endpoints."""
    return f"http://{_cluster_ip(cluster, namespace, NOWHERE)}"


def manifest_sha256(cluster: ClusterHandle, namespace: str) -> str:
    """sha256 of the served manifest, read inside the pod (the host may not reach the ClusterIP yet)."""
    out = cluster.kubectl(
        "exec", "-n", namespace, NAME, "-c", "http", "--",
        "python3", "-c",
        f"import hashlib; print(hashlib.sha256(open('{WEIGHTS_DIR}/ttsfleet-weights.json','rb').read()).hexdigest())",
    )  # fmt: skip
    return out.stdout.strip()
