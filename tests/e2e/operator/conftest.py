"""Operator e2e fixtures: the CRDs installed once, the operator running as a real process
(tests/support/operator_process.py) whose log goes to ``<cluster.logs_dir>/operator.log``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fleet_helpers import install_crds
from operator_process import OperatorProcess

_CRDS_INSTALLED: set[str] = set()


# Per module, once per cluster: a module that brings its own ``cluster`` (the control-plane fault
# modules) gets the CRDs too, without a copy of this fixture.
@pytest.fixture(scope="module")
def crds(cluster: Any) -> None:
    if str(cluster.kubeconfig) not in _CRDS_INSTALLED:
        install_crds(cluster)
        _CRDS_INSTALLED.add(str(cluster.kubeconfig))


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
