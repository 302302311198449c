"""The operator as a real pod: its own image on the real node, installed by the Helm chart under
the chart's ServiceAccount and RBAC, reaching the API server through the in-cluster Service."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ttsfleet.devcluster import realnode
from ttsfleet.devcluster.cluster import ClusterHandle
from ttsfleet.devcluster.waiting import wait_for

CHART = Path(__file__).resolve().parents[3] / "charts" / "ttsfleet-operator"
CRD = "ttsdeployments.tts.ttsfleet.io"


@dataclass(frozen=True)
class OperatorPod:
    release: str
    namespace: str

    def pod(self, cluster: ClusterHandle) -> dict[str, Any]:
        out = cluster.kubectl(
            "get", "pods", "-n", self.namespace, "-l", f"app.kubernetes.io/instance={self.release}", "-o", "json"
        ).stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        running = [p for p in items if not p["metadata"].get("deletionTimestamp")]
        assert len(running) == 1, f"expected one operator pod, found {[p['metadata']['name'] for p in items]}"
        return running[0]

    def logs(self, cluster: ClusterHandle, tail: int = 40) -> str:
        return cluster.kubectl(
            "logs", "-n", self.namespace, "-l", f"app.kubernetes.io/instance={self.release}",
            f"--tail={tail}", check=False,
        ).stdout  # fmt: skip


# One of the chart's cluster-wide user roles (templates/userroles.yaml).
USER_ROLE = "ttsfleet-view"


def values(cluster: ClusterHandle) -> dict[str, Any]:
    """Chart values for the local cluster: the imported image (never pulled), one replica on the
    real node (the kwok nodes run no containers), everything else as the chart ships it."""
    repository, _, tag = cluster.images["operator"].rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "replicaCount": 1,
        "peering": {"enabled": False},
        "nodeSelector": realnode.REAL_NODE_SELECTOR,
        "tolerations": [realnode.REAL_NODE_TOLERATION],
    }


def _adopt_crd(cluster: ClusterHandle, release: str, namespace: str) -> None:
    # Other suites of the same session apply crds/ with kubectl; Helm refuses objects it does not own.
    if cluster.kubectl("get", "crd", CRD, check=False).returncode != 0:
        return
    cluster.kubectl("label", "--overwrite", "crd", CRD, "app.kubernetes.io/managed-by=Helm")
    cluster.kubectl(
        "annotate", "--overwrite", "crd", CRD,
        f"meta.helm.sh/release-name={release}", f"meta.helm.sh/release-namespace={namespace}",
    )  # fmt: skip


def _user_roles_owned_elsewhere(cluster: ClusterHandle, release: str) -> bool:
    """The chart's ttsfleet-view/-edit ClusterRoles exist once per cluster, like the CRD: a second
    release (here: another suite's, still installed) turns them off, as README's second-release
    values do, or Helm refuses to install over objects another release owns."""
    owner = cluster.kubectl(
        "get", "clusterrole", USER_ROLE, "-o", r"jsonpath={.metadata.annotations.meta\.helm\.sh/release-name}",
        check=False,
    )  # fmt: skip
    return owner.returncode == 0 and owner.stdout.strip() != release


def install(
    cluster: ClusterHandle, release: str, namespace: str, extra: dict[str, Any] | None = None, timeout: float = 300
) -> OperatorPod:
    """`helm upgrade --install` and wait until the operator pod is Ready (kopf's /healthz)."""
    assert cluster.helm_path is not None, "the cluster handle has no helm"
    _adopt_crd(cluster, release, namespace)
    chosen = {**values(cluster), **(extra or {})}
    if _user_roles_owned_elsewhere(cluster, release):
        chosen["rbac"] = {**chosen.get("rbac", {}), "userRoles": {"create": False}}
    result = subprocess.run(
        [
            str(cluster.helm_path), "--kubeconfig", str(cluster.kubeconfig), "upgrade", "--install", release,
            str(CHART), "--namespace", namespace, "--create-namespace", "--values", "-",
        ],
        input=yaml.safe_dump(chosen), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"helm install {release} failed: {result.stderr.strip()}")
    operator = OperatorPod(release, namespace)

    def ready() -> bool:
        try:
            pod = operator.pod(cluster)
        except AssertionError:
            return False
        return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))

    wait_for(
        ready,
        what=f"the chart's operator pod ({release} in {namespace}) Ready",
        timeout=timeout,
        interval=2,
        describe=lambda: (
            cluster.kubectl("get", "pods,events", "-n", namespace, check=False).stdout[-3000:]
            + "\n"
            + operator.logs(cluster)
        ),
    )
    return operator


def uninstall(cluster: ClusterHandle, operator: OperatorPod) -> None:
    assert cluster.helm_path is not None
    subprocess.run(
        [
            str(cluster.helm_path), "--kubeconfig", str(cluster.kubeconfig), "uninstall", operator.release,
            "--namespace", operator.namespace, "--wait", "--timeout", "120s",
        ],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
