"""The fleet's NetworkPolicy: who may open a connection to its worker pods (when enabled).

Ingress only, and only these: the serving ports (gRPC, and HTTP with spec.service.http) from the
fleet's namespace and the peers spec.networkPolicy.clients lists; the metrics port from the
namespace of the Prometheus that scrapes the fleet. Everything else is refused once a pod is
selected by any policy. Egress stays open: the init container fetches the model from outside.
Ports are the containers' numbers, not names, which every network plugin understands.
"""

from __future__ import annotations

from typing import Any

from ttsfleet import contract
from ttsfleet.operator import naming
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.schema import dump
from ttsfleet.operator.spec import PeerSpec, TTSDeploymentSpec

# Set by the API server on every namespace (since 1.22), so a name can be selected by label.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _ports(*numbers: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": number} for number in numbers]


def _peer(peer: PeerSpec) -> dict[str, Any]:
    # The spec's peer mirrors networking/v1 NetworkPolicyPeer field for field.
    out: dict[str, Any] = dump(peer)
    return out


def serving_ports(spec: TTSDeploymentSpec) -> list[int]:
    return [contract.GRPC_PORT, contract.HTTP_PORT] if spec.service.http else [contract.GRPC_PORT]


def build(owner: Owner, spec: TTSDeploymentSpec) -> dict[str, Any] | None:
    policy = spec.network_policy
    if not policy.enabled:
        return None
    clients: list[dict[str, Any]] = []
    if policy.allow_same_namespace:
        # A podSelector without namespaceSelector: every pod of the policy's own namespace.
        clients.append({"podSelector": {}})
    clients += [_peer(peer) for peer in policy.clients]
    prometheus = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: spec.monitoring.prometheus_namespace}}}
    ingress: list[dict[str, Any]] = []
    if clients:
        # An empty `from` would admit every source; no client peer means no serving rule at all.
        ingress.append({"from": clients, "ports": _ports(*serving_ports(spec))})
    ingress.append({"from": [prometheus], "ports": _ports(contract.METRICS_PORT)})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": naming.metadata(owner, owner.name),
        "spec": {
            "podSelector": {"matchLabels": naming.selector_labels(owner)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
