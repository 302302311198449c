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
from fleet_helpers import HANG_GUARD_SECONDS, apply, get

from ttsfleet.devcluster.cluster import ClusterHandle
from ttsfleet.devcluster.waiting import WaitTimeout, wait_for

GOOD_RUN_SECONDS = HANG_GUARD_SECONDS


def test_the_chart_identity_runs_a_fleet_through_its_life(
    cluster: ClusterHandle, namespace: str, chart_operator: ChartOperator
) -> None:
    if not chart_operator.running:
        chart_operator.start()
    outcome = lifecycle.run(cluster, namespace, chart_operator, GOOD_RUN_SECONDS)
    assert outcome.passed, f"{outcome}\noperator log:\n{chart_operator.log_tail()}"

    # A change of spec: a new image rolls every pod, and a child switched off is pruned.
    changed = lifecycle.probe_fleet()
    changed["spec"]["image"] = "ttsfleet/worker:0.1.1"
    changed["spec"]["networkPolicy"] = {"enabled": False}
    apply(cluster, namespace, changed)

    def rolled() -> dict[str, Any] | None:
        sts = get(cluster, namespace, "statefulset", lifecycle.NAME)
        obj = get(cluster, namespace, "ttsd", lifecycle.NAME)
        containers = (sts or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        status = (obj or {}).get("status", {})
        done = (
            any(c["image"] == "ttsfleet/worker:0.1.1" for c in containers)
            and status.get("updatedReplicas") == status.get("readyReplicas") == 2
            and status.get("currentRevision") == status.get("updateRevision")
        )
        return obj if done else None

    wait_for(rolled, what="the new image rolled out to both pods", timeout=GOOD_RUN_SECONDS)
    wait_for(
        lambda: get(cluster, namespace, "networkpolicy", lifecycle.NAME) is None,
        what="the NetworkPolicy switched off in the spec to be pruned",
        timeout=60,
    )

    cluster.kubectl("delete", "ttsd", lifecycle.NAME, "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(
        lambda: get(cluster, namespace, "statefulset", lifecycle.NAME) is None,
        what="the StatefulSet to be garbage-collected after the fleet's deletion",
        timeout=60,
    )
    assert not chart_operator.permission_errors(), chart_operator.permission_errors()


def _matches(rule: dict[str, Any], group: str, resource: str, verb: str) -> bool:
    return group in rule.get("apiGroups", []) and resource in rule.get("resources", []) and verb in rule["verbs"]


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


def can_i(cluster: ClusterHandle, release: Release, verb: str, group: str, resource: str, name: str = "") -> bool:
    subject = f"system:serviceaccount:{release.namespace}:{release.service_account}"
    plural, _, sub = resource.partition("/")
    target = f"{plural}.{group}" if group else plural
    args = ["auth", "can-i", verb, f"{target}/{name}" if name else target, "--all-namespaces", f"--as={subject}"]
    if sub:
        args.append(f"--subresource={sub}")
    return cluster.kubectl(*args, check=False).stdout.strip() == "yes"


# Every rule of the chart's ClusterRole, and the part of the lifecycle a person would see break
# without it (alternatives separated by |). test_every_rule_has_a_case keeps the table complete.
# Removing a child kind's rule also removes its list/watch, which the watch-fed cache needs before
# the operator reports live: either symptom is a visible failure.
RULES = [
    # Without reading the fleets the operator never acts on them.
    ("tts.ttsfleet.io", "ttsdeployments", "watch", "status|children|permissions|operator"),
    ("tts.ttsfleet.io", "ttsdeployments/status", "patch", "status"),
    # OwnerReferencesPermissionEnforcement refuses children whose owner's finalizers we cannot set.
    ("tts.ttsfleet.io", "ttsdeployments/finalizers", "update", "children"),
    ("apps", "statefulsets", "create", "children|operator"),
    ("", "services", "create", "children|operator"),
    ("", "configmaps", "create", "children|operator"),
    ("policy", "poddisruptionbudgets", "create", "children|operator"),
    ("networking.k8s.io", "networkpolicies", "create", "children|operator"),
    ("keda.sh", "scaledobjects", "create", "children|operator"),
    # Without it the watch-fed cache cannot list them: the operator logs the refusal and retries.
    ("keda.sh", "triggerauthentications", "watch", "permissions|operator"),
    ("monitoring.coreos.com", "servicemonitors", "create", "children|operator"),
    ("", "pods", "watch", "permissions|status|operator"),
    ("", "events", "create", "events"),
    # Without the peering object this replica cannot tell whether it is the active one: it never
    # starts serving (or never starts at all).
    ("kopf.dev", "clusterkopfpeerings", "patch", "children|operator"),
    ("kopf.dev", "clusterkopfpeerings", "watch", "children|operator|permissions"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch", "permissions"),
]


def test_every_rule_has_a_case(cluster_role: dict[str, Any]) -> None:
    for rule in cluster_role["rules"]:
        covered = [r for r in RULES if _matches(rule, r[0], r[1], r[2])]
        assert covered, f"no minimality case for {rule}: add one to RULES"


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
    removed = [rule for rule in cluster_role["rules"] if _matches(rule, group, resource, verb)]
    assert removed, f"the chart grants no {verb} on {group}/{resource}"
    kept = [rule for rule in cluster_role["rules"] if rule not in removed]
    stripped = {**cluster_role, "rules": kept}
    stripped["metadata"] = {
        "name": cluster_role["metadata"]["name"],
        "labels": cluster_role["metadata"]["labels"],
        "annotations": cluster_role["metadata"].get("annotations", {}),
    }
    chart_operator.stop()
    cluster.kubectl("replace", "-f", "-", input=json.dumps(stripped))
    names = removed[0].get("resourceNames") or [""]
    wait_for(
        lambda: not can_i(cluster, release, verb, group, resource, names[0]),
        what=f"the API server to stop authorising {verb} {group}/{resource}",
        timeout=30,
    )

    try:
        # The start gets the full allowance: a slow start on a busy machine is not a symptom.
        chart_operator.start()
    except (AssertionError, WaitTimeout) as error:
        outcome = lifecycle.Outcome({"operator": f"never became live: {error}"})
    else:
        outcome = lifecycle.run_until_refused(cluster, namespace, chart_operator, HANG_GUARD_SECONDS)
    finally:
        chart_operator.stop()
    # Every case ends on the operator's own signal; the hang guard ending it is a silent operator.
    assert "refusal" not in outcome.missing, f"{outcome}\noperator log:\n{chart_operator.log_tail()}"
    assert set(symptom.split("|")) & set(outcome.missing), (
        f"without {verb} on {group}/{resource} expected '{symptom}' to fail, got: {outcome}\n"
        f"operator log:\n{chart_operator.log_tail()}"
    )
