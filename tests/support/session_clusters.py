"""Session clusters for the e2e suites: a local cluster per test session (or per xdist worker),
named after its process so that concurrent sessions never share or stop each other's cluster.

``TTSFLEET_TEST_KUBECONFIG`` points the suites at an existing cluster instead (a kind cluster,
say); ``TTSFLEET_CLUSTER_BACKEND=kind`` makes the fixture create one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ttsfleet import logs
from ttsfleet.devcluster import binaries
from ttsfleet.devcluster.cluster import ClusterHandle, LocalCluster, default_workdir, reap_stale, running
from ttsfleet.devcluster.kind import KindCluster


def session_cluster(prefix: str, *, real_nodes: int | None) -> Iterator[ClusterHandle]:
    """Start the cluster ``<prefix>-<pid>`` (stopping clusters of that prefix whose session was
    killed), yield its handle, stop it after."""
    logs.configure()
    external = os.environ.get("TTSFLEET_TEST_KUBECONFIG")
    if external:
        paths = binaries.ensure_binaries(("kubernetes", "helm"))
        yield ClusterHandle(
            Path(external).parent, Path(external), paths["kubectl"], paths["helm"], Path(external).parent
        )
        return
    reap_stale(prefix)
    workdir = default_workdir(f"{prefix}-{os.getpid()}")
    if os.environ.get("TTSFLEET_CLUSTER_BACKEND") == "kind":
        kind = KindCluster(workdir, name=f"ttsfleet-{prefix}")
        yield kind.up()
        kind.down()
        return
    local = LocalCluster(workdir, real_nodes=real_nodes)
    handle = local.up()
    try:
        yield handle
    finally:
        local.down()


def own_cluster(prefix: str, why: str, *, third_party_crds: bool = True) -> Iterator[ClusterHandle]:
    """A local cluster (kwok nodes) for one module that restarts or reconfigures the control plane,
    or changes its CRDs: what it breaks must not reach the modules that share the session's
    cluster (a kube-controller-manager whose informers an etcd restart left behind stalls every
    StatefulSet after it). About 15 s to start. Skips on an external or kind cluster: ``why``
    says what the module needs its own for."""
    if os.environ.get("TTSFLEET_TEST_KUBECONFIG") or os.environ.get("TTSFLEET_CLUSTER_BACKEND") == "kind":
        pytest.skip(f"needs a local cluster of its own ({why})")
    logs.configure()
    reap_stale(prefix)
    with running(default_workdir(f"{prefix}-{os.getpid()}"), third_party_crds=third_party_crds, real_nodes=0) as handle:
        yield handle
