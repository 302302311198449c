"""Fixtures shared by every suite: the local Kubernetes cluster and one namespace per test, and
the grouping that lets ``pytest -n 3`` (``make test``) run workers side by side.

The cluster is started lazily, once per session (per xdist worker), only when a test asks for it:
unit and worker tests never pay for it. It has kwok nodes only (scheduling and API behaviour);
the real-pod suites get a cluster of their own that holds the machine's real node
(tests/e2e/realpods/conftest.py). ``TTSFLEET_TEST_KUBECONFIG`` points the e2e suite at an
existing cluster instead (a kind cluster, say); ``TTSFLEET_CLUSTER_BACKEND=kind`` makes the
fixture create one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from session_clusters import session_cluster

from ttsfleet.devcluster.cluster import ClusterHandle

# Everything that starts (or may start) a cluster holding this machine's real node, of which
# there is one per machine: one group, run first because it is the longest.
REAL_NODE_GROUP = "real-node"
_ON_THE_REAL_NODE = ("tests/e2e/realpods/", "tests/e2e/test_demo.py")
# The worker tests start tritonservers (one shared by several modules, tests/worker/conftest.py):
# one group, so that it starts once and two of them never compete for the cores.
WORKER_GROUP = "worker"


def xdist_group(nodeid: str) -> str:
    """The group of a test under ``make test``'s ``pytest -n 3``: a group runs on one worker, in
    collection order. Per module otherwise, so that module fixtures (an operator, a cluster with
    add-ons) start once."""
    path = nodeid.split("::", 1)[0]
    if path.startswith(_ON_THE_REAL_NODE):
        return REAL_NODE_GROUP
    if path.startswith("tests/worker/") and not path.startswith("tests/worker/unit/"):
        return WORKER_GROUP
    return path


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder so `-m unit` runs the fast part alone without per-file boilerplate;
    the two longest groups go first (the scheduler hands groups out in this order), so that the
    short ones fill the gaps at the end."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "unit" in parts:
            item.add_marker(pytest.mark.unit)
        elif "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
        elif "worker" in parts:
            item.add_marker(pytest.mark.worker)
    first = (REAL_NODE_GROUP, WORKER_GROUP)
    items.sort(key=lambda item: first.index(group) if (group := xdist_group(item.nodeid)) in first else len(first))


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` by :func:`xdist_group`. xdist's own loadgroup reads ``xdist_group``
    marks by rewriting node ids, which pytest 9 no longer lets a plugin do; its scope scheduler
    with our grouping function is the same thing."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # collection order (above), not the biggest group first

    class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return GroupScheduling(config, log)


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    # kwok nodes only: the real node belongs to the real-pod suites' cluster, whichever xdist
    # worker starts its session cluster first.
    yield from session_cluster("e2e", real_nodes=0)


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
