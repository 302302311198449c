"""values.schema.json: bad values stop `helm install` with a message naming the value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chartkit import CHART, HelmError, helm, render


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"logLevel": "verbose"}, "logLevel"),
        ({"replicaCount": "two"}, "replicaCount"),
        ({"replicaCount": 0}, "replicaCount"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"watchNamespaces": ["team-*"]}, "watchNamespaces"),
        ({"metrics": {"port": 70000}}, "port"),
        ({"metrics": {"prometheusRule": {"notReadyFor": "fifteen minutes"}}}, "notReadyFor"),
        ({"nodeSelector": {"gpu": True}}, "nodeSelector"),
        ({"logLevl": "debug"}, "logLevl"),
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "enable"),
    ],
)
def test_bad_values_fail_naming_the_value(helm_path: Path, values: dict[str, Any], named: str) -> None:
    with pytest.raises(HelmError, match="schema") as failure:
        render(helm_path, values)
    assert named in str(failure.value)


def test_the_schema_accepts_the_documented_defaults_and_a_full_set(helm_path: Path) -> None:
    render(
        helm_path,
        {
            "watchNamespaces": ["team-a"],
            "metrics": {
                "serviceMonitor": {"enabled": True, "interval": "15s"},
                "prometheusRule": {"enabled": True, "queueLengthThreshold": 2.5},
            },
            "dashboard": {"enabled": True},
            "podDisruptionBudget": {"minAvailable": "50%"},
            "resources": {"requests": {"cpu": 0.5, "memory": "1Gi"}},
        },
    )


def test_helm_lint_is_clean(helm_path: Path) -> None:
    out = helm(helm_path, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out
