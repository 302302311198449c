"""The chart's rules follow the operator's code: every child kind it writes is writable, nothing is
granted by wildcard, and Secrets can be read one by one but never listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chartkit import find, one, render

from ttsfleet.operator import kinds

_WRITE = {"create", "patch", "delete", "list", "watch"}


def grants(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def cluster_rules(helm_path: Path) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = one(render(helm_path), "ClusterRole")["rules"]
    return rules


def test_every_child_kind_the_operator_writes_is_writable(helm_path: Path) -> None:
    granted = grants(cluster_rules(helm_path))
    for kind in kinds.CHILD_KINDS:
        assert granted.get((kind.group, kind.plural), set()) >= _WRITE, (
            f"{kind.kind}: {granted.get((kind.group, kind.plural))}"
        )
    fleets = (kinds.TTSDEPLOYMENT.group, kinds.TTSDEPLOYMENT.plural)
    assert granted[fleets] == {"get", "list", "watch"}
    assert granted[(fleets[0], fleets[1] + "/status")] == {"patch"}


def test_nothing_is_granted_by_wildcard_or_beyond_need(helm_path: Path) -> None:
    for values in ({}, {"watchNamespaces": ["team-a"]}):
        objects = render(helm_path, values)
        for role in find(objects, "ClusterRole") + find(objects, "Role"):
            for rule in role["rules"]:
                for key in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[key], f"{role['kind']} {rule}"
                assert not {"deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
                # update only where it cannot change a spec: the owner's finalizers (blockOwnerDeletion).
                if "update" in rule["verbs"]:
                    assert all(r.endswith("/finalizers") for r in rule["resources"]), rule


def test_secrets_are_read_by_name_only_and_pods_only_observed(helm_path: Path) -> None:
    granted = grants(cluster_rules(helm_path))
    assert granted[("", "secrets")] == {"get"}
    assert granted[("", "pods")] == {"list", "watch"}
    assert granted[("", "events")] == {"create"}


def test_the_peering_object_is_the_only_one_the_operator_may_patch(helm_path: Path) -> None:
    objects = render(helm_path)
    peering = one(objects, "ClusterKopfPeering")["metadata"]["name"]
    patch_rules = [
        r for r in cluster_rules(helm_path) if r["resources"] == ["clusterkopfpeerings"] and "patch" in r["verbs"]
    ]
    assert [r.get("resourceNames") for r in patch_rules] == [[peering]]
    without = render(helm_path, {"peering": {"enabled": False}, "replicaCount": 1})
    assert ("kopf.dev", "clusterkopfpeerings") not in grants(one(without, "ClusterRole")["rules"])
