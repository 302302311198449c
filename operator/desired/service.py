"""The headless Service that names the StatefulSet's pods, and the client Service.

Port names (grpc, http, metrics) and appProtocol are what Gateway routes and Prometheus select on.
The client Service carries only what clients use (gRPC, and HTTP when spec.service.http is on), so
type LoadBalancer or NodePort never publishes Triton's metrics. Prometheus scrapes the metrics port
through the headless Service, which never leaves the cluster.
"""

from __future__ import annotations

from typing import Any

from ttsfleet import contract
from ttsfleet.operator import naming
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import TTSDeploymentSpec

CLIENT_ROLE = "client"
HEADLESS_ROLE = "headless"

# Gateway API (GEP-1911) reads appProtocol to pick HTTP/2 cleartext for gRPC backends.
GRPC_APP_PROTOCOL = "kubernetes.io/h2c"


def _port(name: str, port: int, app_protocol: str) -> dict[str, Any]:
    return {"name": name, "port": port, "targetPort": name, "protocol": "TCP", "appProtocol": app_protocol}


def _client_ports(spec: TTSDeploymentSpec, *, headless: bool) -> list[dict[str, Any]]:
    service = spec.service
    ports = [_port(contract.GRPC_PORT_NAME, contract.GRPC_PORT if headless else service.grpc_port, GRPC_APP_PROTOCOL)]
    if service.http:
        ports.append(_port(contract.HTTP_PORT_NAME, contract.HTTP_PORT if headless else service.http_port, "http"))
    return ports


def _metadata(owner: Owner, name: str, role: str) -> dict[str, Any]:
    meta = naming.metadata(owner, name)
    meta["labels"][naming.LABEL_SERVICE_ROLE] = role
    return meta


def build_headless(owner: Owner, spec: TTSDeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, naming.headless_service_name(owner), HEADLESS_ROLE),
        "spec": {
            "clusterIP": "None",
            # Pods get DNS names while still loading, so operators can reach a warming pod directly.
            "publishNotReadyAddresses": True,
            "selector": naming.selector_labels(owner),
            "ports": [
                *_client_ports(spec, headless=True),
                _port(contract.METRICS_PORT_NAME, contract.METRICS_PORT, "http"),
            ],
        },
    }


def build_client(owner: Owner, spec: TTSDeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, naming.client_service_name(owner), CLIENT_ROLE),
        "spec": {
            "type": spec.service.type,
            "selector": naming.selector_labels(owner),
            "ports": _client_ports(spec, headless=False),
        },
    }
