"""Least exposure on the real API server: the client Service carries only what clients use, the
metrics port is reached through the headless Service, and each fleet's NetworkPolicy admits only
the peers its spec names, follows spec changes and goes when switched off."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from fleet_helpers import HANG_GUARD_SECONDS, apply, fleet, get, wait_for

from ttsfleet import contract

NAME = "exposed"


def ports(obj: dict[str, Any] | None) -> dict[str, int]:
    return {p["name"]: p["port"] for p in ((obj or {}).get("spec") or {}).get("ports") or []}


def opened(policy: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """Port -> the peers the live policy admits on it."""
    found: dict[int, list[dict[str, Any]]] = {}
    for rule in policy["spec"].get("ingress") or []:
        for port in rule.get("ports") or []:
            found.setdefault(port["port"], []).extend(rule.get("from") or [])
    return found


def live_policy(cluster: Any, namespace: str, want: Any) -> dict[str, Any]:
    """The fleet's NetworkPolicy once `want(policy)` holds."""

    def probe() -> dict[str, Any] | None:
        policy = get(cluster, namespace, "networkpolicy", NAME)
        return policy if policy and want(policy) else None

    return wait_for(f"NetworkPolicy {namespace}/{NAME} as expected", probe, 60)


def test_services_and_network_policy_follow_the_spec(cluster: Any, namespace: str, running_operator: Any) -> None:
    apply(cluster, namespace, fleet(NAME, service={"type": "LoadBalancer"}, monitoring={"serviceMonitor": True}))

    # Defaults: gRPC from the fleet's namespace, metrics from the monitoring namespace, nothing else.
    policy = live_policy(cluster, namespace, lambda p: True)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == NAME
    assert opened(policy) == {
        contract.GRPC_PORT: [{"podSelector": {}}],
        contract.METRICS_PORT: [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    }
    client = wait_for("the client Service", lambda: get(cluster, namespace, "service", NAME), HANG_GUARD_SECONDS)
    assert client["spec"]["type"] == "LoadBalancer"
    assert ports(client) == {"grpc": contract.GRPC_PORT}, "a LoadBalancer must not publish metrics or HTTP"
    headless = get(cluster, namespace, "service", f"{NAME}-pods")
    assert ports(headless) == {"grpc": contract.GRPC_PORT, "metrics": contract.METRICS_PORT}
    monitor = wait_for(
        "the ServiceMonitor", lambda: get(cluster, namespace, "servicemonitor", NAME), HANG_GUARD_SECONDS
    )
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= headless["metadata"]["labels"].items()
    assert not selector.items() <= client["metadata"]["labels"].items()

    # HTTP on, a gateway namespace and a CIDR as clients, Prometheus elsewhere: all follow.
    clients = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}},
        {"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.7/32"]}},
    ]
    apply(
        cluster,
        namespace,
        fleet(
            NAME,
            service={"type": "LoadBalancer", "http": True},
            networkPolicy={"allowSameNamespace": False, "clients": clients},
            monitoring={"serviceMonitor": True, "prometheusNamespace": "observability"},
        ),
    )
    policy = live_policy(cluster, namespace, lambda p: contract.HTTP_PORT in opened(p))
    peers = opened(policy)
    assert set(peers) == {contract.GRPC_PORT, contract.HTTP_PORT, contract.METRICS_PORT}
    assert peers[contract.GRPC_PORT] == peers[contract.HTTP_PORT]
    assert {"podSelector": {}} not in peers[contract.GRPC_PORT]
    assert [p.get("ipBlock") for p in peers[contract.GRPC_PORT]][1] == clients[1]["ipBlock"]
    assert peers[contract.METRICS_PORT][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "observability"
    }
    wait_for(
        "HTTP on the client Service",
        lambda: ports(get(cluster, namespace, "service", NAME)) == {"grpc": contract.GRPC_PORT, "http": 8000},
        30,
    )

    # Switched off: the operator prunes the policy it made.
    apply(cluster, namespace, fleet(NAME, networkPolicy={"enabled": False}))
    wait_for("the NetworkPolicy to be pruned", lambda: get(cluster, namespace, "networkpolicy", NAME) is None, 60)
    assert ports(get(cluster, namespace, "service", NAME)) == {"grpc": contract.GRPC_PORT}


@pytest.mark.parametrize(
    ("network_policy", "field"),
    [
        ({"clients": [{"ipBlock": {"cidr": "not-a-cidr"}}]}, "cidr"),
        ({"clients": [{}]}, "clients"),
        ({"clients": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}, "clients"),
        ({"clients": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]}, "values"),
    ],
)
def test_bad_peers_are_refused_by_the_api_server(
    cluster: Any, namespace: str, crds: None, network_policy: dict[str, Any], field: str
) -> None:
    doc = fleet("bad-peer", networkPolicy=network_policy)
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False)
    message = refused.stderr
    assert refused.returncode != 0, refused.stdout
    assert "spec.networkPolicy.clients" in message and field in message, message


def test_metrics_port_is_no_longer_a_client_service_field(cluster: Any, namespace: str, crds: None) -> None:
    doc = fleet("old-field", service={"metricsPort": 9102})
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert refused.returncode != 0 and "metricsPort" in refused.stderr, refused.stdout
