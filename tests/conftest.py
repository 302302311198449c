"""Fixtures shared by every suite: the local Kubernetes cluster and one namespace per test.

The cluster is started lazily, once per session, only when a test asks for it: unit and worker
tests never pay for it. ``TTSFLEET_TEST_KUBECONFIG`` points the e2e suite at an existing cluster
instead (a kind cluster, say); ``TTSFLEET_CLUSTER_BACKEND=kind`` makes the fixture create one.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ttsfleet import logs
from ttsfleet.devcluster import binaries
from ttsfleet.devcluster.cluster import ClusterHandle, LocalCluster, default_workdir, reap_stale
from ttsfleet.devcluster.kind import KindCluster

_SUITE_MARKERS = {"unit": "unit", "e2e": "e2e", "worker": "worker"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder so `-m unit` runs the fast part alone without per-file boilerplate."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "unit" in parts:
            item.add_marker(pytest.mark.unit)
        elif "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
        elif "worker" in parts:
            item.add_marker(pytest.mark.worker)


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    logs.configure()
    external = os.environ.get("TTSFLEET_TEST_KUBECONFIG")
    if external:
        paths = binaries.ensure_binaries(("kubernetes", "helm"))
        yield ClusterHandle(
            Path(external).parent, Path(external), paths["kubectl"], paths["helm"], Path(external).parent
        )
        return
    # One folder per session (named after its pid) so that two concurrent runs never share or
    # stop each other's cluster; clusters of sessions that were killed are stopped here.
    reap_stale("e2e")
    workdir = default_workdir(f"e2e-{os.getpid()}")
    if os.environ.get("TTSFLEET_CLUSTER_BACKEND") == "kind":
        kind = KindCluster(workdir, name="ttsfleet-e2e")
        yield kind.up()
        kind.down()
        return
    local = LocalCluster(workdir)
    handle = local.up()
    try:
        yield handle
    finally:
        local.down()


@pytest.fixture
def namespace(cluster: ClusterHandle, request: pytest.FixtureRequest) -> Iterator[str]:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    handle = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(handle, ClusterHandle) and handle.logs_dir.is_dir():
        tails = []
        for log_file in sorted(handle.logs_dir.glob("*.log")):
            lines = log_file.read_text(errors="replace").splitlines()[-15:]
            tails.append(f"--- {log_file} (last {len(lines)} lines)\n" + "\n".join(lines))
        report.sections.append(("cluster component logs (kept after the run)", "\n".join(tails)))
