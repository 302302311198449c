"""The worker StatefulSet: one pod per Triton server, each with its own local-SSD model cache.

Probes follow the worker contract: the model only turns ready after warmup, so startup and
readiness probe the model's readiness. Liveness probes it too (contract.liveness_path), with more
patience: readiness takes a pod out of rotation within seconds, liveness restarts it only when the
model stays gone (unloaded or failed after start-up, while Triton itself still answers). Being
gated by the startup probe, it never kills a pod that is still fetching, loading or warming up,
and the kubelet stops it once the pod is being deleted, so a drain (Triton unloads the model at
SIGTERM and stays up for open streams) never counts against it; readiness does go false then.
"""

from __future__ import annotations

import math
from typing import Any

from kubernetes.utils import parse_quantity

from ttsfleet import contract, modelsource
from ttsfleet.operator import naming
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import ResourcesSpec, TTSDeploymentSpec

# Console scripts of the worker image (worker/Dockerfile); the image's CMD is not used, since
# setting command drops it, so every argument the pod needs is spelled out here.
WORKER_COMMAND = ["ttsfleet-worker"]
FETCH_COMMAND = ["ttsfleet-fetch"]
GPU_RESOURCE = "nvidia.com/gpu"
RUN_AS_USER = contract.WORKER_UID
# A pod turns Ready at the first startup probe after warmup: every second of the period is, on
# average, half a second later for each new pod (a scale-out, a rollout step). The probe is one
# local HTTP GET.
STARTUP_PERIOD_SECONDS = 2
# Time for kube-proxy/Gateway to drop the pod from endpoints before the server stops accepting.
PRE_STOP_DELAY_SECONDS = 10
SHUTDOWN_MARGIN_SECONDS = 15
SERVING_CONFIG_VOLUME = "serving-config"
TMP_VOLUME = "tmp"
# The containers start in the writable emptyDir itself: an image WORKDIR under /tmp (the worker's
# /tmp/ttsfleet-worker) would be created by the runtime inside the mounted emptyDir as root, and
# the non-root worker could not create its model repository there.
WORKING_DIR = "/tmp"
FETCH_CPU_REQUEST = "100m"
# torch sizes its CPU thread pool by the cores it sees, which in a container are the node's, not
# the pod's share: a pod that requests 4 CPUs on a 64-core node would run 64 threads that fight
# its neighbours (and, under a limit, its own CFS quota). OpenMP's variable sets the pool.
COMPUTE_THREADS_ENV = "OMP_NUM_THREADS"
SHM_VOLUME = "dshm"
# Triton's python backend moves tensors through /dev/shm; the container default (64Mi) is too small.
SHM_SIZE = "2Gi"


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        # The cache PVC must be writable by the non-root user.
        "fsGroup": RUN_AS_USER,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(spec: TTSDeploymentSpec) -> dict[str, Any]:
    res = spec.resources
    requests: dict[str, Any] = {"cpu": str(res.cpu), "memory": str(res.memory)}
    limits: dict[str, Any] = {"memory": str(res.memory_limit if res.memory_limit is not None else res.memory)}
    if res.cpu_limit is not None:
        limits["cpu"] = str(res.cpu_limit)
    if res.gpu > 0:
        requests[GPU_RESOURCE] = str(res.gpu)
        limits[GPU_RESOURCE] = str(res.gpu)
    return {"requests": requests, "limits": limits}


def compute_threads(res: ResourcesSpec) -> int:
    """The worker's CPU compute threads: its CPU limit, or its request without one, rounded up."""
    cpus = parse_quantity(res.cpu_limit if res.cpu_limit is not None else res.cpu)
    return max(1, math.ceil(cpus))


def _tolerations(spec: TTSDeploymentSpec) -> list[dict[str, Any]]:
    tolerations = [dict(t) for t in spec.tolerations]
    if spec.resources.gpu > 0 and not any(t.get("key") == GPU_RESOURCE for t in tolerations):
        # GPU nodes are conventionally tainted nvidia.com/gpu:NoSchedule.
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


def _probe(path: str, *, period: int, failures: int, timeout: int = 5) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": contract.HTTP_PORT_NAME},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def model_dir(spec: TTSDeploymentSpec) -> str:
    """One directory per model name on the cache volume, shared by the fetcher and the server."""
    return f"{contract.MODEL_CACHE_MOUNT}/{spec.model.name}"


def _fetch_container(spec: TTSDeploymentSpec) -> dict[str, Any]:
    model = spec.model
    env: list[dict[str, Any]] = [{"name": contract.ENV_MODEL_CACHE, "value": model_dir(spec)}]
    if model.sha256:
        env.append({"name": contract.ENV_MODEL_SHA256, "value": model.sha256})
    if model.secret_ref:
        # Exactly the one key the fetcher uses, by reference: the token never appears in the pod
        # spec or the arguments, and the Secret's other keys never reach the container.
        env.append(
            {
                "name": modelsource.ENV_MODEL_TOKEN,
                "valueFrom": {"secretKeyRef": {"name": model.secret_ref, "key": model.secret_key}},
            }
        )
    args = ["--source", model.source, "--revision", model.revision, "--cache", model_dir(spec)]
    if model.allow_insecure_http:
        args.append("--allow-insecure-http")
    container: dict[str, Any] = {
        "name": naming.FETCH_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": FETCH_COMMAND,
        "workingDir": WORKING_DIR,
        "args": args,
        "env": env,
        # A pod is scheduled on the larger of its init and app requests: a whole CPU here made
        # every pod need one even when the worker asks for less (on a 2-core node, one pod).
        # The download is I/O-bound; no CPU limit, so hashing still uses what is free.
        "resources": {"requests": {"cpu": FETCH_CPU_REQUEST, "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": naming.CACHE_VOLUME, "mountPath": contract.MODEL_CACHE_MOUNT},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
    }
    return container


def _worker_container(spec: TTSDeploymentSpec) -> dict[str, Any]:
    ready_path = contract.model_ready_path(spec.model.name)
    startup_failures = max(1, math.ceil(spec.warmup.timeout_seconds / STARTUP_PERIOD_SECONDS))
    return {
        "name": naming.WORKER_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": WORKER_COMMAND,
        "workingDir": WORKING_DIR,
        "args": [
            "--serving-config",
            contract.SERVING_CONFIG_MOUNT,
            "--model-cache",
            model_dir(spec),
            "--host",
            "0.0.0.0",
        ],
        "env": [
            {
                "name": contract.ENV_SERVING_CONFIG,
                "value": f"{contract.SERVING_CONFIG_MOUNT}/{contract.SERVING_JSON_FILE}",
            },
            {"name": contract.ENV_MODEL_CACHE, "value": model_dir(spec)},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": COMPUTE_THREADS_ENV, "value": str(compute_threads(spec.resources))},
        ],
        "ports": [
            {"name": contract.HTTP_PORT_NAME, "containerPort": contract.HTTP_PORT, "protocol": "TCP"},
            {"name": contract.GRPC_PORT_NAME, "containerPort": contract.GRPC_PORT, "protocol": "TCP"},
            {"name": contract.METRICS_PORT_NAME, "containerPort": contract.METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": _resources(spec),
        "startupProbe": _probe(ready_path, period=STARTUP_PERIOD_SECONDS, failures=startup_failures),
        "readinessProbe": _probe(ready_path, period=5, failures=3),
        "livenessProbe": _probe(contract.liveness_path(spec.model.name), period=10, failures=6),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_DELAY_SECONDS}}},
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": naming.CACHE_VOLUME, "mountPath": contract.MODEL_CACHE_MOUNT},
            {"name": SERVING_CONFIG_VOLUME, "mountPath": contract.SERVING_CONFIG_MOUNT, "readOnly": True},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
            {"name": SHM_VOLUME, "mountPath": "/dev/shm"},
        ],
    }


def _topology_spread(owner: Owner, spec: TTSDeploymentSpec) -> list[dict[str, Any]]:
    spread = spec.topology_spread
    if not spread.enabled:
        return []
    return [
        {
            "maxSkew": spread.max_skew,
            "topologyKey": spread.topology_key,
            "whenUnsatisfiable": spread.when_unsatisfiable,
            "labelSelector": {"matchLabels": naming.selector_labels(owner)},
        }
    ]


def termination_grace_seconds(spec: TTSDeploymentSpec) -> int:
    return PRE_STOP_DELAY_SECONDS + spec.disruption.drain_seconds + SHUTDOWN_MARGIN_SECONDS


def _pod_spec(owner: Owner, spec: TTSDeploymentSpec) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "securityContext": _pod_security(),
        "automountServiceAccountToken": False,
        # Service links would inject an env var per Service in the namespace into Triton.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": termination_grace_seconds(spec),
        "initContainers": [_fetch_container(spec)],
        "containers": [_worker_container(spec)],
        "volumes": [
            {"name": SERVING_CONFIG_VOLUME, "configMap": {"name": naming.configmap_name(owner)}},
            {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
        ],
    }
    tolerations = _tolerations(spec)
    if tolerations:
        pod["tolerations"] = tolerations
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.affinity:
        pod["affinity"] = spec.affinity
    spread = _topology_spread(owner, spec)
    if spread:
        pod["topologySpreadConstraints"] = spread
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    if spec.service_account_name:
        pod["serviceAccountName"] = spec.service_account_name
    return pod


def _update_strategy(spec: TTSDeploymentSpec) -> dict[str, Any]:
    if spec.rollout.strategy == "OnDelete":
        return {"type": "OnDelete"}
    return {"type": "RollingUpdate", "rollingUpdate": {"partition": spec.rollout.partition}}


def _cache_claim(owner: Owner, spec: TTSDeploymentSpec) -> dict[str, Any]:
    cache = spec.model_cache
    # No apiVersion/kind: the API server drops them from templates, which would read as drift.
    return {
        "metadata": {"name": naming.CACHE_VOLUME, "labels": naming.labels(owner)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": cache.storage_class_name,
            "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": cache.size}},
        },
    }


def build(owner: Owner, spec: TTSDeploymentSpec, *, config_hash: str) -> dict[str, Any]:
    cache = spec.model_cache
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": naming.metadata(owner, naming.statefulset_name(owner)),
        "spec": {
            "replicas": spec.replicas,
            "serviceName": naming.headless_service_name(owner),
            "selector": {"matchLabels": naming.selector_labels(owner)},
            # Pods load their model independently, so scale-ups need not wait for one another;
            # rolling updates still replace one pod at a time.
            "podManagementPolicy": "Parallel",
            "updateStrategy": _update_strategy(spec),
            "revisionHistoryLimit": 10,
            "persistentVolumeClaimRetentionPolicy": {
                "whenScaled": "Retain" if cache.keep_on_scale_down else "Delete",
                "whenDeleted": "Retain" if cache.keep_on_delete else "Delete",
            },
            "template": {
                "metadata": {
                    "labels": naming.labels(owner),
                    "annotations": {
                        naming.ANNOTATION_CONFIG_HASH: config_hash,
                        "kubectl.kubernetes.io/default-container": naming.WORKER_CONTAINER,
                    },
                },
                "spec": _pod_spec(owner, spec),
            },
            "volumeClaimTemplates": [_cache_claim(owner, spec)],
        },
    }
