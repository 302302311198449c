"""The headless Service that names the StatefulSet's pods, and the client Service.

Port names (grpc, http, metrics) and appProtocol are what Gateway routes and Prometheus select on.
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


def _ports(spec: TTSDeploymentSpec, *, headless: bool) -> list[dict[str, Any]]:
    service = spec.service
    grpc = contract.GRPC_PORT if headless else service.grpc_port
    http = contract.HTTP_PORT if headless else service.http_port
    metrics = contract.METRICS_PORT if headless else service.metrics_port
    return [
        {
            "name": contract.GRPC_PORT_NAME,
            "port": grpc,
            "targetPort": contract.GRPC_PORT_NAME,
            "protocol": "TCP",
            "appProtocol": GRPC_APP_PROTOCOL,
        },
        {
            "name": contract.HTTP_PORT_NAME,
            "port": http,
            "targetPort": contract.HTTP_PORT_NAME,
            "protocol": "TCP",
            "appProtocol": "http",
        },
        {
            "name": contract.METRICS_PORT_NAME,
            "port": metrics,
            "targetPort": contract.METRICS_PORT_NAME,
            "protocol": "TCP",
            "appProtocol": "http",
        },
    ]


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
            "ports": _ports(spec, headless=True),
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
            "ports": _ports(spec, headless=False),
        },
    }
