"""The chart's rules follow the operator's code: every child kind it writes is writable, nothing is
granted by wildcard, no rule touches Secrets, and the roles for people are separate and aggregated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chartkit import NAMESPACE, RELEASE, find, one, render

from ttsfleet.operator import kinds

_WRITE = {"create", "patch", "delete", "list", "watch"}
OPERATOR_CLUSTER_ROLE = f"{RELEASE}-ttsfleet-operator-{NAMESPACE}"
USER_ROLES = ("ttsfleet-view", "ttsfleet-edit")


def grants(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def cluster_rules(helm_path: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = one(render(helm_path, values), "ClusterRole", OPERATOR_CLUSTER_ROLE)["rules"]
    return rules


def operator_roles(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in find(objects, "ClusterRole") + find(objects, "Role") if r["metadata"]["name"] not in USER_ROLES]


def test_every_child_kind_the_operator_writes_is_writable(helm_path: Path) -> None:
    granted = grants(cluster_rules(helm_path))
    for kind in kinds.CHILD_KINDS:
        assert granted.get((kind.group, kind.plural), set()) >= _WRITE, (
            f"{kind.kind}: {granted.get((kind.group, kind.plural))}"
        )
    fleets = (kinds.TTSDEPLOYMENT.group, kinds.TTSDEPLOYMENT.plural)
    assert granted[fleets] == {"get", "list", "watch"}
    assert granted[(fleets[0], fleets[1] + "/status")] == {"patch"}
    assert granted[(fleets[0], fleets[1] + "/finalizers")] == {"update"}


def test_nothing_is_granted_by_wildcard_or_beyond_need(helm_path: Path) -> None:
    for values in ({}, {"watchNamespaces": ["team-a"]}):
        for role in operator_roles(render(helm_path, values)):
            for rule in role["rules"]:
                for key in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[key], f"{role['kind']} {rule}"
                assert not {"deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
                # update only where it cannot change a spec: the owner's finalizers (blockOwnerDeletion).
                if "update" in rule["verbs"]:
                    assert all(r.endswith("/finalizers") for r in rule["resources"]), rule


def test_writes_go_only_to_kinds_the_operator_owns(helm_path: Path) -> None:
    owned = {(k.group, k.plural) for k in kinds.CHILD_KINDS}
    owned |= {("tts.ttsfleet.io", "ttsdeployments/status"), ("tts.ttsfleet.io", "ttsdeployments/finalizers")}
    owned |= {("", "events"), ("kopf.dev", "clusterkopfpeerings"), ("kopf.dev", "kopfpeerings")}
    for values in ({}, {"watchNamespaces": ["team-a"]}):
        for role in operator_roles(render(helm_path, values)):
            for rule in role["rules"]:
                if {"create", "update", "patch", "delete"} & set(rule["verbs"]):
                    for group in rule["apiGroups"]:
                        for resource in rule["resources"]:
                            assert (group, resource) in owned, f"{role['kind']} writes {group}/{resource}"


def test_no_rule_touches_secrets_and_pods_are_only_observed(helm_path: Path) -> None:
    for values in ({}, {"watchNamespaces": ["team-a"]}):
        for role in operator_roles(render(helm_path, values)):
            assert ("", "secrets") not in grants(role["rules"]), role["metadata"]["name"]
    granted = grants(cluster_rules(helm_path))
    assert granted[("", "pods")] == {"list", "watch"}
    assert granted[("", "events")] == {"create"}


def test_the_peering_object_is_the_only_one_the_operator_may_patch(helm_path: Path) -> None:
    objects = render(helm_path)
    peering = one(objects, "ClusterKopfPeering")["metadata"]["name"]
    patch_rules = [
        r for r in cluster_rules(helm_path) if r["resources"] == ["clusterkopfpeerings"] and "patch" in r["verbs"]
    ]
    assert [r.get("resourceNames") for r in patch_rules] == [[peering]]
    without = cluster_rules(helm_path, {"peering": {"enabled": False}, "replicaCount": 1})
    assert ("kopf.dev", "clusterkopfpeerings") not in grants(without)


def test_people_get_view_and_edit_roles_aggregated_into_the_builtin_ones(helm_path: Path) -> None:
    objects = render(helm_path)
    view = one(objects, "ClusterRole", "ttsfleet-view")
    edit = one(objects, "ClusterRole", "ttsfleet-edit")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert set(grants(view["rules"])[("tts.ttsfleet.io", "ttsdeployments")]) == {"get", "list", "watch"}
    assert {"create", "update", "patch", "delete"} <= grants(edit["rules"])[("tts.ttsfleet.io", "ttsdeployments")]
    # Neither lets a person write what the operator writes: the status is the operator's.
    for role in (view, edit):
        assert not {"update", "patch"} & grants(role["rules"]).get(("tts.ttsfleet.io", "ttsdeployments/status"), set())
        assert {g for g, _ in grants(role["rules"])} == {"tts.ttsfleet.io"}
    # Without aggregation, only explicit bindings grant them.
    plain = render(helm_path, {"rbac": {"userRoles": {"aggregate": False}}})
    for name in USER_ROLES:
        labels = one(plain, "ClusterRole", name)["metadata"]["labels"]
        assert not any(key.startswith("rbac.authorization.k8s.io/aggregate") for key in labels)
    assert not {
        r["metadata"]["name"]
        for r in find(render(helm_path, {"rbac": {"userRoles": {"create": False}}}), "ClusterRole")
    } & set(USER_ROLES)
