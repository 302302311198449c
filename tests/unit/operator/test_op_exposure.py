"""Least exposure in the pure builders: the client Service carries only what clients use, metrics
are reached through the headless Service, and the NetworkPolicy admits only whom the spec names."""

from __future__ import annotations

from typing import Any

import pytest
from fixtures_operator import OWNER, minimal_spec

from ttsfleet import contract
from ttsfleet.operator import desired, kinds, naming
from ttsfleet.operator.desired import networkpolicy, service, servicemonitor
from ttsfleet.operator.schema import SpecError
from ttsfleet.operator.spec import parse_spec


def ports(obj: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["port"] for p in obj["spec"]["ports"]}


def policy(**overrides: Any) -> dict[str, Any]:
    obj = networkpolicy.build(OWNER, parse_spec(minimal_spec(**overrides)))
    assert obj is not None
    return obj


def rule_for(obj: dict[str, Any], port: int) -> list[dict[str, Any]]:
    """The `from` peers of every rule that opens this port."""
    peers: list[dict[str, Any]] = []
    for rule in obj["spec"]["ingress"]:
        if any(p["port"] == port for p in rule["ports"]):
            peers += rule["from"]
    return peers


@pytest.mark.parametrize("service_type", ["ClusterIP", "NodePort", "LoadBalancer"])
def test_client_service_never_carries_metrics_and_http_only_when_asked(service_type: str) -> None:
    spec = parse_spec(minimal_spec(service={"type": service_type}))
    assert ports(service.build_client(OWNER, spec)) == {"grpc": contract.GRPC_PORT}
    with_http = parse_spec(minimal_spec(service={"type": service_type, "http": True, "httpPort": 8080}))
    assert ports(service.build_client(OWNER, with_http)) == {"grpc": contract.GRPC_PORT, "http": 8080}


def test_headless_service_has_the_metrics_port_and_the_servicemonitor_selects_it() -> None:
    spec = parse_spec(minimal_spec(monitoring={"serviceMonitor": True}))
    headless = service.build_headless(OWNER, spec)
    assert ports(headless) == {"grpc": contract.GRPC_PORT, "metrics": contract.METRICS_PORT}
    assert headless["spec"]["clusterIP"] == "None"
    monitor = servicemonitor.build(OWNER, spec)
    assert monitor is not None
    selected = [
        s
        for s in (headless, service.build_client(OWNER, spec))
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == [naming.headless_service_name(OWNER)]
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= set(ports(headless))


def test_default_policy_admits_the_namespace_on_grpc_and_prometheus_on_metrics_only() -> None:
    obj = policy()
    assert obj["apiVersion"] == "networking.k8s.io/v1"
    assert obj["spec"]["podSelector"] == {"matchLabels": naming.selector_labels(OWNER)}
    assert obj["spec"]["policyTypes"] == ["Ingress"]
    assert naming.is_owned_by(obj, OWNER)
    opened = {p["port"] for rule in obj["spec"]["ingress"] for p in rule["ports"]}
    assert opened == {contract.GRPC_PORT, contract.METRICS_PORT}
    assert rule_for(obj, contract.GRPC_PORT) == [{"podSelector": {}}]
    assert rule_for(obj, contract.METRICS_PORT) == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    # No rule without `from` or `ports`: either would open the pods to everyone.
    assert all(rule.get("from") and rule.get("ports") for rule in obj["spec"]["ingress"])


def test_policy_follows_http_peers_and_prometheus_namespace() -> None:
    gateway = {"namespaceSelector": {"matchLabels": {"team": "gateway"}}, "podSelector": {"matchLabels": {"app": "gw"}}}
    lb = {"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.7/32"]}}
    obj = policy(
        service={"http": True},
        networkPolicy={"allowSameNamespace": False, "clients": [gateway, lb]},
        monitoring={"prometheusNamespace": "observability"},
    )
    expected = [
        {
            "namespaceSelector": {"matchLabels": {"team": "gateway"}, "matchExpressions": []},
            "podSelector": {"matchLabels": {"app": "gw"}, "matchExpressions": []},
        },
        lb,
    ]
    assert rule_for(obj, contract.GRPC_PORT) == expected
    assert rule_for(obj, contract.HTTP_PORT) == expected
    assert rule_for(obj, contract.METRICS_PORT)[0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "observability"
    }


def test_policy_with_no_client_peer_opens_only_metrics() -> None:
    obj = policy(networkPolicy={"allowSameNamespace": False})
    assert [p["port"] for rule in obj["spec"]["ingress"] for p in rule["ports"]] == [contract.METRICS_PORT]


def test_policy_off_is_pruned() -> None:
    spec = parse_spec(minimal_spec(networkPolicy={"enabled": False}))
    assert networkpolicy.build(OWNER, spec) is None
    assert "NetworkPolicy" not in {c["kind"] for c in desired.build_all(OWNER, spec)}
    # Pruning lists every child kind: a policy left from before must be found and deleted.
    assert kinds.NETWORKPOLICY in kinds.CHILD_KINDS


def test_policy_is_applied_before_the_pods_exist() -> None:
    order = [c["kind"] for c in desired.build_all(OWNER, parse_spec(minimal_spec()))]
    assert order.index("NetworkPolicy") < order.index("StatefulSet")


def test_a_peer_is_parsed_as_a_networkpolicy_peer() -> None:
    with pytest.raises(SpecError):
        parse_spec(minimal_spec(networkPolicy={"clients": [{"ipBlock": {}}]}))
