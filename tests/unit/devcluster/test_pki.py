"""Generated certificates chain to the CA and carry the identities RBAC expects."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from ttsfleet.devcluster import pki


def test_certificates_chain_to_the_ca_with_component_identities(tmp_path: Path) -> None:
    generated = pki.generate(tmp_path, "10.96.0.1")
    ca = x509.load_pem_x509_certificate(generated.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(generated.apiserver_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)

    manager = x509.load_pem_x509_certificate(generated.client_cert("controller-manager").read_bytes())
    manager.verify_directly_issued_by(ca)
    assert manager.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:kube-controller-manager"
    admin = x509.load_pem_x509_certificate(generated.client_cert("admin").read_bytes())
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert oct(generated.ca_key.stat().st_mode & 0o777) == "0o600"
