"""KEDA's operator and metrics adapter, run out of cluster next to the local control plane.

The adapter serves ``v1beta1.external.metrics.k8s.io`` to the HPA through the aggregation layer.
Endpoints on 127.0.0.0/8 are refused by validation, so the APIService points at an
``ExternalName`` Service (``localhost``); the API server's resolver dials that name at the
APIService's port and checks the adapter's certificate against our CA and the Service's DNS name.
The same path serves clusters with a real node (tests/e2e/realpods/test_queue_scaling.py): the
API server then listens on the node's address, but it is still this machine's process dialling
``localhost``, so the adapter stays on loopback and no pod can reach it.
Operator and adapter talk gRPC over mutual TLS with one CA and one leaf (what KEDA's own cert
rotation would create in-cluster). Both use the admin kubeconfig: the add-on is a test stand-in
for KEDA's Helm chart, not a deployment recipe.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ttsfleet.devcluster import addons_build, pki, upstream, versions
from ttsfleet.devcluster.waiting import wait_for

NAMESPACE = "keda"
ADAPTER_SERVICE = "keda-metrics-apiserver"
APISERVICE = "v1beta1.external.metrics.k8s.io"


@dataclass(frozen=True)
class KedaPorts:
    operator_metrics: int
    operator_health: int
    grpc: int
    adapter_metrics: int
    adapter_secure: int


def write_certs(directory: Path) -> Path:
    """ca.crt + tls.crt/tls.key, the layout both KEDA binaries read from their cert dir."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = pki._ca("keda-local-ca")
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        # What the aggregator checks (the APIService's Service) and KEDA's default gRPC authority.
        x509.DNSName(f"{ADAPTER_SERVICE}.{NAMESPACE}.svc"),
        x509.DNSName(f"keda-operator.{NAMESPACE}.svc"),
    ]
    # The leaf serves (adapter, gRPC server) and authenticates (gRPC client): both usages.
    key, cert = _both_usages(ca_key, ca_cert, sans)
    pki._write_cert(directory / "ca.crt", ca_cert)
    pki._write_cert(directory / "tls.crt", cert)
    pki._write_key(directory / "tls.key", key)
    return directory


def _both_usages(ca_key: Any, ca_cert: x509.Certificate, sans: list[x509.GeneralName]) -> tuple[Any, x509.Certificate]:
    from cryptography.hazmat.primitives import hashes

    key = pki._new_key()
    cert = (
        pki._builder(pki._name("keda"), ca_cert.subject, key.public_key())
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def crds() -> list[Path]:
    """All of KEDA's CRDs: its operator starts a controller per kind and exits if one is missing."""
    base = upstream.module_dir(upstream.KEDA_MODULE, versions.KEDA) / "config" / "crd" / "bases"
    return sorted(base.glob("*.yaml"))


def env(kubeconfig: Path) -> dict[str, str]:
    return {
        "KUBECONFIG": str(kubeconfig),
        "WATCH_NAMESPACE": "",
        "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,
        "POD_NAMESPACE": NAMESPACE,
        "POD_NAME": "keda-operator-local",
        "KEDA_HTTP_DEFAULT_TIMEOUT": "3000",
    }


def operator_argv(binary: Path, certs: Path, ports: KedaPorts) -> list[str]:
    return [
        str(binary),
        f"--metrics-bind-address=127.0.0.1:{ports.operator_metrics}",
        f"--health-probe-bind-address=127.0.0.1:{ports.operator_health}",
        f"--metrics-service-bind-address=127.0.0.1:{ports.grpc}",
        f"--cert-dir={certs}",
        "--enable-cert-rotation=false",
        "--leader-elect=false",
        "--zap-log-level=info",
    ]


def adapter_argv(binary: Path, certs: Path, kubeconfig: Path, ports: KedaPorts) -> list[str]:
    return [
        str(binary),
        f"--port={ports.adapter_metrics}",
        f"--secure-port={ports.adapter_secure}",
        "--bind-address=127.0.0.1",
        f"--cert-dir={certs}",
        f"--tls-cert-file={certs / 'tls.crt'}",
        f"--tls-private-key-file={certs / 'tls.key'}",
        f"--metrics-service-address=127.0.0.1:{ports.grpc}",
        f"--lister-kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--v=0",
    ]


def aggregation_objects(certs: Path, ports: KedaPorts) -> list[dict[str, Any]]:
    ca_bundle = base64.b64encode((certs / "ca.crt").read_bytes()).decode()
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": ADAPTER_SERVICE, "namespace": NAMESPACE},
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
                "caBundle": ca_bundle,
                "service": {"name": ADAPTER_SERVICE, "namespace": NAMESPACE, "port": ports.adapter_secure},
            },
        },
    ]


def binaries() -> tuple[Path, Path]:
    found = addons_build.keda_binaries()
    return found["keda-operator"], found["keda-adapter"]


def wait_available(kubectl: Any) -> None:
    """The APIService is Available once the aggregator reached the adapter through the Service."""

    def available() -> bool:
        out = kubectl(
            "get",
            "apiservice",
            APISERVICE,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Available')].status}",
            check=False,
        ).stdout
        return bool(out.strip() == "True")

    wait_for(
        available,
        what=f"APIService {APISERVICE} Available (KEDA metrics adapter)",
        timeout=120,
        describe=lambda: kubectl("get", "apiservice", APISERVICE, "-o", "yaml", check=False).stdout,
    )
