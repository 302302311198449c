"""The wrapper modules are generated from upstream go.mod files, and stay in step with them."""

from __future__ import annotations

import re

from ttsfleet.devcluster import gowrappers, versions

_UPSTREAM = """\
module k8s.io/kubernetes

go 1.26.0

godebug default=go1.26

require (
\tgo.etcd.io/etcd/server/v3 v3.6.8 // indirect
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go // comment
\tgithub.com/some/fork => github.com/other/fork v1.2.3
)

replace go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY
"""


def test_only_replaces_into_the_source_tree_are_mapped() -> None:
    assert gowrappers.local_replaces(_UPSTREAM) == ["k8s.io/api", "k8s.io/client-go"]


def test_rendered_wrapper_maps_staging_modules_to_published_versions() -> None:
    wrapper = gowrappers.wrappers()[0]
    rendered = gowrappers.render_go_mod(wrapper, _UPSTREAM)
    assert "\tk8s.io/api => k8s.io/api v0.36.3" in rendered
    assert "go 1.26.0" in rendered
    assert "godebug default=go1.26" in rendered
    assert "\tk8s.io/kubernetes/cmd/kube-apiserver" in rendered
    assert "FORBIDDEN" not in rendered


def test_staging_version_follows_the_kubernetes_minor_and_patch() -> None:
    assert versions.staging_version("v1.36.3") == "v0.36.3"


def test_committed_kubernetes_wrapper_pins_the_release_in_versions_py() -> None:
    go_mod = (gowrappers.WRAPPERS_DIR / "kubernetes" / "go.mod").read_text()
    assert f"k8s.io/kubernetes {versions.KUBERNETES}" in go_mod
    staging = re.findall(r"=> (k8s\.io/\S+) (v\S+)", go_mod)
    assert staging, "the kubernetes wrapper must map its staging modules"
    assert {version for _, version in staging} == {versions.staging_version()}


def test_etcd_is_built_at_the_version_kubernetes_pins() -> None:
    go_mod = (gowrappers.WRAPPERS_DIR / "kubernetes" / "go.mod").read_text()
    # Kubernetes links the etcd client of the same release as the server it is tested against.
    pinned = re.search(r"go\.etcd\.io/etcd/client/v3 (v\S+)", go_mod)
    assert pinned is not None
    assert pinned.group(1) == versions.ETCD
