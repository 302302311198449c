"""Certificates for the local control plane, generated on the spot with ``cryptography``.

One CA signs the API server's serving certificate and a client certificate per identity
(admin, controller-manager, scheduler, kwok); a separate key pair signs service-account tokens.
Identities are the real ones (``system:kube-controller-manager`` etc.) so RBAC applies to the
components exactly as in a kubeadm cluster.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class ClientIdentity:
    file_stem: str
    user: str
    groups: tuple[str, ...] = ()


CLIENTS: tuple[ClientIdentity, ...] = (
    ClientIdentity("admin", "kubernetes-admin", ("system:masters",)),
    ClientIdentity("controller-manager", "system:kube-controller-manager"),
    ClientIdentity("scheduler", "system:kube-scheduler"),
    # kwok plays every kubelet at once: it updates node and pod status for all simulated nodes,
    # which the Node authorizer would refuse to a single node identity.
    ClientIdentity("kwok", "kwok-controller", ("system:masters",)),
    # The real node's agents and the API server's own client for kubectl logs/exec/port-forward.
    ClientIdentity("kube-proxy", "system:kube-proxy"),
    ClientIdentity("apiserver-kubelet-client", "kube-apiserver-kubelet-client"),
)


@dataclass(frozen=True)
class Pki:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def service_account_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.directory / "sa.pub"

    @property
    def front_proxy_ca_cert(self) -> Path:
        return self.directory / "front-proxy-ca.crt"

    @property
    def front_proxy_client_cert(self) -> Path:
        return self.directory / "front-proxy-client.crt"

    @property
    def front_proxy_client_key(self) -> Path:
        return self.directory / "front-proxy-client.key"

    def kubelet_serving_cert(self, node: str) -> Path:
        return self.directory / f"kubelet-{node}-serving.crt"

    def kubelet_serving_key(self, node: str) -> Path:
        return self.directory / f"kubelet-{node}-serving.key"

    @staticmethod
    def node_stem(node: str) -> str:
        return f"node-{node}"

    def client_cert(self, stem: str) -> Path:
        return self.directory / f"{stem}.crt"

    def client_key(self, stem: str) -> Path:
        return self.directory / f"{stem}.key"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    name = _name(common_name)
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    builder = _builder(subject, ca_cert.subject, key.public_key()).add_extension(
        x509.ExtendedKeyUsage([usage]), critical=False
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def generate(
    directory: Path,
    service_cluster_ip: str,
    extra_ips: tuple[str, ...] = (),
    nodes: tuple[str, ...] = (),
    node_ip: str | None = None,
) -> Pki:
    """Write a complete PKI into ``directory`` and return its file layout.

    ``extra_ips`` are more addresses the API server serves on (the real node's address, which
    pods reach); each of ``nodes`` gets a kubelet client identity ``system:node:<name>`` and a
    serving certificate for ``node_ip``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)

    ca_key, ca_cert = _ca("ttsfleet-local-ca")
    ca_name = ca_cert.subject
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.ca_cert, ca_cert)

    server_key = _new_key()
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address(service_cluster_ip)),
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
    ]
    server_cert = (
        _builder(_name("kube-apiserver"), ca_name, server_key.public_key())
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.apiserver_key, server_key)
    _write_cert(pki.apiserver_cert, server_cert)

    for client in CLIENTS:
        key = _new_key()
        cert = (
            _builder(_name(client.user, client.groups), ca_name, key.public_key())
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(pki.client_key(client.file_stem), key)
        _write_cert(pki.client_cert(client.file_stem), cert)

    for node in nodes:
        key, cert = _leaf(
            ca_key, ca_cert, _name(f"system:node:{node}", ("system:nodes",)), ExtendedKeyUsageOID.CLIENT_AUTH
        )
        _write_key(pki.client_key(pki.node_stem(node)), key)
        _write_cert(pki.client_cert(pki.node_stem(node)), cert)
        node_sans: list[x509.GeneralName] = [x509.DNSName(node)]
        if node_ip:
            node_sans.append(x509.IPAddress(ipaddress.ip_address(node_ip)))
        key, cert = _leaf(ca_key, ca_cert, _name(node), ExtendedKeyUsageOID.SERVER_AUTH, node_sans)
        _write_key(pki.kubelet_serving_key(node), key)
        _write_cert(pki.kubelet_serving_cert(node), cert)

    # Aggregated API servers (KEDA's metrics adapter) trust requests the API server proxies
    # only when signed by this separate CA.
    front_key, front_cert = _ca("ttsfleet-front-proxy-ca")
    _write_cert(pki.front_proxy_ca_cert, front_cert)
    key, cert = _leaf(front_key, front_cert, _name("front-proxy-client"), ExtendedKeyUsageOID.CLIENT_AUTH)
    _write_key(pki.front_proxy_client_key, key)
    _write_cert(pki.front_proxy_client_cert, cert)

    sa_key = _new_key()
    _write_key(pki.service_account_key, sa_key)
    pki.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki
