"""Operator e2e fixtures: the CRDs installed once, the operator running as a real process
(tests/support/operator_process.py) whose log goes to ``<cluster.logs_dir>/operator.log``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_process import OperatorProcess

from ttsfleet.operator.spec import API_VERSION, KIND

REPO = Path(__file__).resolve().parents[3]
CRDS = REPO / "crds"


@pytest.fixture(scope="session")
def crds(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    for path in sorted(CRDS.glob("*.yaml")):
        cluster.wait_crds_established("-f", str(path))
    cluster.wait_for_owner_kind(API_VERSION, KIND)


# Per module, like the chart tests' operator: an operator watching every namespace must not
# outlive these tests and act on the fleets of the tests that follow in the session.
@pytest.fixture(scope="module")
def operator(cluster: Any, crds: None) -> Iterator[OperatorProcess]:
    cluster.logs_dir.mkdir(parents=True, exist_ok=True)
    proc = OperatorProcess(cluster.env, cluster.logs_dir / "operator.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def running_operator(operator: OperatorProcess) -> OperatorProcess:
    """The operator, restarted if a previous test left it stopped."""
    if not operator.running:
        operator.start()
    return operator
