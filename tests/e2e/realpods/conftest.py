"""The real-pod suites' cluster: one of their own, holding this machine's real node.

The session's ``cluster`` has kwok nodes only; these suites get a second local cluster that
holds the real node (one per machine) and run in one xdist group ("real-node", tests/conftest.py),
so that under ``pytest -n`` exactly one worker ever starts it. Here ``cluster`` (and the
``namespace`` fixture built on it) is that cluster.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from session_clusters import session_cluster

from ttsfleet.devcluster.cluster import ClusterHandle


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    # real_nodes=None: the real node wherever this machine can run one; elsewhere kwok nodes with
    # the reason logged, and the suites here skip with it.
    yield from session_cluster("e2e-real", real_nodes=None)
