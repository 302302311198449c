"""The dashboard's and the alerts' queries use metric names that the worker and the operator
really export: the names come from the code (contract.METRIC_*, operator/metrics.py), not from here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from chartkit import CHART, find, one, render
from prometheus_client.metrics import MetricWrapperBase

from ttsfleet import contract
from ttsfleet.operator import metrics as operator_metrics

DASHBOARD = CHART / "dashboards" / "ttsfleet-fleets.json"
_PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
)
# Series a histogram or a counter family exposes besides its own name.
_SUFFIXES = ("", "_total", "_created", "_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, label
    names (inside {} or by/without ()), durations or Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+", "", expr)
    tokens = re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", expr)
    return {m.group(1) for m in tokens if not m.group(2) and m.group(1) not in _PROMQL_WORDS}


def exported_series() -> set[str]:
    names: set[str] = set()
    for value in vars(operator_metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names |= {family.name + suffix for suffix in _SUFFIXES}
    for name, value in vars(contract).items():
        if name.startswith("METRIC_"):
            names |= {value + suffix for suffix in _SUFFIXES}
    return names


def dashboard_exprs() -> list[str]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in data["panels"] for t in p.get("targets", [])]
    # Variables are Grafana's label_values(<series selector>, <label>): keep the selector.
    for variable in data["templating"]["list"]:
        if variable["type"] == "query":
            selector = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["definition"])
            assert selector, f"variable {variable['name']}: {variable['definition']}"
            exprs.append(selector.group(1))
    return exprs


def test_the_extractor_finds_names_and_skips_functions_and_labels() -> None:
    expr = 'histogram_quantile(0.95, sum by (le) (rate(foo_bucket{a="b", c=~"$x"}[5m]))) > on(ns) bar'
    assert metric_names(expr) == {"foo_bucket", "bar"}


def test_every_dashboard_query_uses_exported_metrics() -> None:
    known = exported_series()
    for expr in dashboard_exprs():
        unknown = metric_names(expr) - known
        assert not unknown, f"{expr!r} uses metrics nobody exports: {sorted(unknown)}"


@pytest.mark.parametrize(
    "series",
    [
        operator_metrics.REPLICAS_DESIRED.describe()[0].name,
        operator_metrics.REPLICAS_READY.describe()[0].name,
        contract.METRIC_QUEUE_LENGTH,
        contract.METRIC_REQUEST_DURATION + "_bucket",
        contract.METRIC_TIME_TO_FIRST_AUDIO + "_bucket",
        contract.METRIC_GPU_MEMORY_USED,
    ],
)
def test_the_dashboard_shows(series: str) -> None:
    assert any(series in metric_names(expr) for expr in dashboard_exprs()), f"no panel queries {series}"


def test_the_dashboard_shows_request_duration_percentiles() -> None:
    quantiles = {
        q
        for expr in dashboard_exprs()
        if contract.METRIC_REQUEST_DURATION + "_bucket" in expr
        for q in re.findall(r"histogram_quantile\(([0-9.]+)", expr)
    }
    assert {"0.5", "0.95", "0.99"} <= quantiles


def test_the_chart_ships_the_dashboard_file_unchanged(helm_path: Path) -> None:
    objects = render(helm_path, {"dashboard": {"enabled": True}})
    configmap = one(objects, "ConfigMap")
    assert json.loads(configmap["data"]["ttsfleet-fleets.json"]) == json.loads(DASHBOARD.read_text())


def test_alerts_use_exported_metrics(helm_path: Path) -> None:
    rule = one(render(helm_path, {"metrics": {"prometheusRule": {"enabled": True}}}), "PrometheusRule")
    known = exported_series()
    used: set[str] = set()
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            names = metric_names(alert["expr"])
            assert names and not names - known, f"{alert['alert']}: {alert['expr']}"
            used |= names
    errors = operator_metrics.RECONCILE_ERRORS.describe()[0].name
    active = operator_metrics.ACTIVE.describe()[0].name
    assert {errors + "_total", active, contract.METRIC_QUEUE_LENGTH} <= used


def test_alert_thresholds_come_from_values(helm_path: Path) -> None:
    values = {"metrics": {"prometheusRule": {"enabled": True, "queueLengthThreshold": 3, "notReadyFor": "30m"}}}
    rules = {
        r["alert"]: r for g in one(render(helm_path, values), "PrometheusRule")["spec"]["groups"] for r in g["rules"]
    }
    assert rules["TTSFleetQueueLengthHigh"]["expr"].endswith("> 3")
    assert rules["TTSFleetNotReady"]["for"] == "30m"
    assert not find(render(helm_path), "PrometheusRule")
