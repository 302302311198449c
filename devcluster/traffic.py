"""Counting one client's requests with the API server's own metrics.

kube-apiserver's request counters carry no user, but API Priority and Fairness classifies every
request by user and verb before it runs: two FlowSchemas matching one ServiceAccount, one for
reads and one for writes, make ``apiserver_flowcontrol_dispatched_requests_total`` count exactly
that client's reads and writes, separated from the control plane's own traffic. The client runs
with a token of that ServiceAccount (``Identity.kubeconfig``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from ttsfleet.devcluster.cluster import ClusterHandle

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
READ_VERBS = ("get", "list", "watch")
DISPATCHED = "apiserver_flowcontrol_dispatched_requests_total"
# Before the built-in schemas (exempt is 1, the rest start at 500): ours must match first.
_PRECEDENCE = 100


@dataclass(frozen=True)
class Identity:
    """A ServiceAccount whose requests are counted apart."""

    name: str
    namespace: str
    kubeconfig: Path

    @property
    def reads_schema(self) -> str:
        return f"{self.name}-reads"

    @property
    def writes_schema(self) -> str:
        return f"{self.name}-writes"


def _flow_schema(name: str, sa: str, namespace: str, verbs: tuple[str, ...], non_resource: bool) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "subjects": [{"kind": "ServiceAccount", "serviceAccount": {"name": sa, "namespace": namespace}}],
        "resourceRules": [
            {"verbs": list(verbs), "apiGroups": ["*"], "resources": ["*"], "clusterScope": True, "namespaces": ["*"]}
        ],
    }
    if non_resource:
        # Discovery (GET /apis/<group>/<version>) is a non-resource request: a read.
        rule["nonResourceRules"] = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
    return {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": name},
        "spec": {
            "matchingPrecedence": _PRECEDENCE,
            "priorityLevelConfiguration": {"name": "workload-high"},
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [rule],
        },
    }


def issue(
    cluster: ClusterHandle, name: str, namespace: str, path: Path, cluster_role: str = "cluster-admin"
) -> Identity:
    """A ServiceAccount bound to ``cluster_role``, a kubeconfig holding its token, and the two
    FlowSchemas that count its requests."""
    cluster.kubectl("create", "namespace", namespace, check=False)
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
        _flow_schema(f"{name}-writes", name, namespace, WRITE_VERBS, non_resource=False),
        _flow_schema(f"{name}-reads", name, namespace, READ_VERBS, non_resource=True),
    ]
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(objects))
    token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration=2h").stdout.strip()
    admin = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    server = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [server],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": server["name"], "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return Identity(name, namespace, path)


@dataclass(frozen=True)
class Requests:
    reads: float
    writes: float

    def __sub__(self, other: Requests) -> Requests:
        return Requests(self.reads - other.reads, self.writes - other.writes)


def requests(cluster: ClusterHandle, identity: Identity) -> Requests:
    """How many requests of the identity the API server has dispatched so far (it counts the
    request as it starts; a watch counts once)."""
    text = cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    counts = {identity.reads_schema: 0.0, identity.writes_schema: 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == DISPATCHED and sample.labels.get("flow_schema") in counts:
                counts[sample.labels["flow_schema"]] += sample.value
    return Requests(reads=counts[identity.reads_schema], writes=counts[identity.writes_schema])
