"""The chart's RBAC is sufficient and minimal: the operator, running as the chart's ServiceAccount
with the chart's arguments, takes a fleet through its life; without one of the chart's rules,
some part of that life visibly fails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import lifecycle
import pytest
from chart_e2e import ChartOperator, Release
from fleet_helpers import get

from ttsfleet.devcluster.cluster import ClusterHandle
from ttsfleet.devcluster.waiting import WaitTimeout, wait_for

GOOD_RUN_SECONDS = 120
# With every rule, children, status and events exist within a few seconds of the apply (only Ready
# waits for pods); a run without a rule needs only to outlast that.
BAD_RUN_SECONDS = 12


def test_the_chart_identity_runs_a_fleet_through_its_life(
    cluster: ClusterHandle, namespace: str, chart_operator: ChartOperator
) -> None:
    if not chart_operator.running:
        chart_operator.start()
    # The runs without a rule below wait BAD_RUN_SECONDS; everything but Ready must show by then.
    early = lifecycle.run(cluster, namespace, chart_operator, BAD_RUN_SECONDS)
    assert set(early.missing) <= {"ready"}, f"{early}\noperator log:\n{chart_operator.log_tail()}"
    outcome = lifecycle.run(cluster, namespace, chart_operator, GOOD_RUN_SECONDS)
    assert outcome.passed, f"{outcome}\noperator log:\n{chart_operator.log_tail()}"

    cluster.kubectl("delete", "ttsd", lifecycle.NAME, "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(
        lambda: get(cluster, namespace, "statefulset", lifecycle.NAME) is None,
        what="the StatefulSet to be garbage-collected after the fleet's deletion",
        timeout=60,
    )
    assert not chart_operator.permission_errors(), chart_operator.permission_errors()


def _matches(rule: dict[str, Any], group: str, resource: str) -> bool:
    return group in rule.get("apiGroups", []) and resource in rule.get("resources", [])


@pytest.fixture
def cluster_role(cluster: ClusterHandle, release: Release) -> Iterator[dict[str, Any]]:
    """The installed ClusterRole; put back as it was after the test."""
    original = json.loads(cluster.kubectl("get", "clusterrole", release.cluster_role, "-o", "json").stdout)
    yield original
    restored = {k: original[k] for k in ("apiVersion", "kind", "metadata", "rules")}
    restored["metadata"] = {
        k: original["metadata"][k] for k in ("name", "labels", "annotations") if k in original["metadata"]
    }
    cluster.kubectl("replace", "-f", "-", input=json.dumps(restored))


def can_i(cluster: ClusterHandle, release: Release, verb: str, resource: str) -> bool:
    subject = f"system:serviceaccount:{release.namespace}:{release.service_account}"
    result = cluster.kubectl("auth", "can-i", verb, resource, "--all-namespaces", f"--as={subject}", check=False)
    return result.stdout.strip() == "yes"


# Each rule, and the part of the lifecycle a person would see break without it.
RULES = [
    ("apps", "statefulsets", "create", "children"),
    ("tts.ttsfleet.io", "ttsdeployments/status", "patch", "status"),
    ("", "secrets", "get", "status"),
    ("", "events", "create", "events"),
    # Without the peering object this replica cannot tell whether it is the active one: it never
    # starts serving (or never starts at all).
    ("kopf.dev", "clusterkopfpeerings", "patch", "children|operator"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch", "permissions"),
]


@pytest.mark.parametrize(
    ("group", "resource", "verb", "symptom"),
    [pytest.param(*rule, id=f"{rule[1]}-{rule[2]}") for rule in RULES],
)
def test_without_this_rule_the_lifecycle_fails(
    cluster: ClusterHandle,
    namespace: str,
    release: Release,
    chart_operator: ChartOperator,
    cluster_role: dict[str, Any],
    group: str,
    resource: str,
    verb: str,
    symptom: str,
) -> None:
    kept = [rule for rule in cluster_role["rules"] if not _matches(rule, group, resource)]
    assert len(kept) < len(cluster_role["rules"]), f"the chart grants nothing on {group}/{resource}"
    stripped = {**cluster_role, "rules": kept}
    stripped["metadata"] = {
        "name": cluster_role["metadata"]["name"],
        "labels": cluster_role["metadata"]["labels"],
        "annotations": cluster_role["metadata"].get("annotations", {}),
    }
    chart_operator.stop()
    cluster.kubectl("replace", "-f", "-", input=json.dumps(stripped))
    qualified = f"{resource}.{group}" if group else resource
    wait_for(
        lambda: not can_i(cluster, release, verb, qualified),
        what=f"the API server to stop authorising {verb} {qualified}",
        timeout=30,
    )

    try:
        chart_operator.start(timeout=BAD_RUN_SECONDS)
    except (AssertionError, WaitTimeout) as error:
        outcome = lifecycle.Outcome({"operator": f"never became live: {error}"})
    else:
        outcome = lifecycle.run(cluster, namespace, chart_operator, BAD_RUN_SECONDS)
    finally:
        chart_operator.stop()
    assert set(symptom.split("|")) & set(outcome.missing), (
        f"without {verb} on {qualified} expected '{symptom}' to fail, got: {outcome}\n"
        f"operator log:\n{chart_operator.log_tail()}"
    )
