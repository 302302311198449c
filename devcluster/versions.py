"""Pinned versions of every upstream component the local cluster is built from.

One place to bump: the Go wrapper modules under ``gowrappers/`` are regenerated from
these by ``python -m ttsfleet.devcluster.gowrappers``, and the binary cache is keyed by them.
"""

from __future__ import annotations

KUBERNETES = "v1.36.3"
# etcd is built at the version kubernetes' own go.mod pins (checked by gowrappers).
ETCD = "v3.6.8"
KWOK = "v0.8.0"
HELM = "v3.22.0"
KEDA = "v2.18.0"
# Optional add-on (GitOps e2e). Its go.mod asks for a Go newer than the machine's, which the
# module proxy serves as a toolchain module.
ARGOCD = "v3.6.1"
ARGOCD_GO_TOOLCHAIN = "go1.27.0"
PROMETHEUS_OPERATOR = "v0.85.0"
# Kubernetes 1.36 supports containerd 2.2+; Debian bookworm ships 1.6 (kept alive by a fallback
# that 1.37 removes), so the real node runs one built from the module proxy.
CONTAINERD = "v2.3.7"


def staging_version(kubernetes: str = KUBERNETES) -> str:
    """k8s.io/kubernetes vX.Y.Z publishes its staging modules as v0.Y.Z."""
    major, minor, patch = kubernetes.lstrip("v").split(".")
    if major != "1":
        raise ValueError(f"unexpected Kubernetes version {kubernetes}")
    return f"v0.{minor}.{patch}"
