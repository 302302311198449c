"""The optional add-ons: wrapper modules rendered from upstream go.mod files, KEDA's aggregation
objects and certificates, and no credential in any add-on's arguments."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ttsfleet.devcluster import addons_argocd, addons_build, addons_keda, addons_prometheus

ARGO_GO_MOD = """module github.com/argoproj/argo-cd/v3

go 1.27.0

require (
\tgithub.com/argoproj/argo-cd/gitops-engine/v3 v3.6.1 // Tagged at release time
\tk8s.io/api v0.37.0
)

replace (
\tk8s.io/api => k8s.io/api v0.37.0
)

replace github.com/argoproj/argo-cd/gitops-engine/v3 => ./gitops-engine
"""


def wrapper(name: str) -> addons_build.AddonWrapper:
    return next(w for w in addons_build.wrappers() if w.name == name)


def test_argocd_wrapper_keeps_upstream_pins_and_maps_its_local_replace_to_the_published_module() -> None:
    rendered = addons_build.render_go_mod(wrapper("argocd"), ARGO_GO_MOD)
    assert "module ttsfleet.local/gowrappers/argocd" in rendered
    assert "k8s.io/api => k8s.io/api v0.37.0" in rendered
    engine = "github.com/argoproj/argo-cd/gitops-engine/v3"
    assert f"replace {engine} => {engine} v3.6.1" in rendered
    assert "./gitops-engine" not in rendered
    assert "require github.com/argoproj/argo-cd/v3 v3.6.1" in rendered
    assert "\tgithub.com/argoproj/argo-cd/v3/cmd\n" in rendered


def test_an_unknown_local_replace_is_refused_rather_than_built_from_a_guess() -> None:
    with pytest.raises(ValueError, match="no published module"):
        addons_build.render_go_mod(wrapper("keda"), ARGO_GO_MOD)


def test_argocd_builds_with_the_toolchain_its_go_mod_asks_for() -> None:
    assert addons_build.ARGOCD_BUNDLE.toolchain == wrapper("argocd").toolchain == "go1.27.0"


def test_keda_certificate_serves_and_authenticates_for_every_name_it_is_reached_by(tmp_path: Path) -> None:
    certs = addons_keda.write_certs(tmp_path)
    cert = x509.load_pem_x509_certificate((certs / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(sans.get_values_for_type(x509.DNSName))
    assert {"localhost", "keda-metrics-apiserver.keda.svc"} <= names
    usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= usages
    assert stat.S_IMODE((certs / "tls.key").stat().st_mode) == 0o600


def test_keda_apiservice_reaches_the_adapter_through_an_externalname_service(tmp_path: Path) -> None:
    certs = addons_keda.write_certs(tmp_path)
    ports = addons_keda.KedaPorts(1, 2, 3, 4, 5443)
    objects = {o["kind"]: o for o in addons_keda.aggregation_objects(certs, ports)}
    assert objects["Service"]["spec"] == {"type": "ExternalName", "externalName": "localhost"}
    service = objects["APIService"]["spec"]["service"]
    assert service == {"name": "keda-metrics-apiserver", "namespace": "keda", "port": 5443}
    assert objects["APIService"]["spec"]["caBundle"]
    assert "insecureSkipTLSVerify" not in objects["APIService"]["spec"]


def test_add_ons_listen_on_loopback_and_take_no_secret_as_an_argument(tmp_path: Path) -> None:
    certs = addons_keda.write_certs(tmp_path / "keda")
    ports = addons_keda.KedaPorts(1, 2, 3, 4, 5)
    keda = addons_keda.operator_argv(Path("op"), certs, ports) + addons_keda.adapter_argv(
        Path("ad"), certs, tmp_path / "kubeconfig", ports
    )
    assert all("127.0.0.1:" in a for a in keda if a.startswith(("--metrics-bind", "--health", "--metrics-service")))
    config, password = addons_argocd.write_redis_config(tmp_path / "redis", 6399)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    text = config.read_text()
    assert "bind 127.0.0.1" in text and f"requirepass {password}" in text
    prom = addons_prometheus.argv(Path("prometheus"), tmp_path / "p.yml", tmp_path / "data", 9090)
    assert "--web.listen-address=127.0.0.1:9090" in prom
    assert not [a for a in keda + prom if password in a]
