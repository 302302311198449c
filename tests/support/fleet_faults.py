"""Helpers for the fault tests: fleets small enough for a 2-core machine, what "converged"
means (Ready at the current generation, exactly the children the builders render, each owned by
a live fleet, nothing stuck in deletion), and one printed line of figures per fault."""

from __future__ import annotations

import json
from typing import Any

from fleet_helpers import condition, fleet, get, items
from operator_process import OperatorProcess

from ttsfleet.operator import desired, naming
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import parse_spec

CHILD_KINDS = "statefulsets,services,configmaps,poddisruptionbudgets,networkpolicies,scaledobjects,servicemonitors"
# Generous bounds for a busy 2-core machine: failing them means stuck, not slow.
CONVERGE_SECONDS = 600
SMALL = {"gpu": 0, "cpu": "100m", "memory": "128Mi"}


def small_fleet(name: str, **spec: Any) -> dict[str, Any]:
    return fleet(name, replicas=1, resources=SMALL, **spec)


def report(test: str, **figures: Any) -> None:
    """One line per fault test, for the closing note."""
    print(f"\nFAULT {test}: " + json.dumps(figures, sort_keys=True), flush=True)


def fleets(cluster: Any, namespace: str) -> list[dict[str, Any]]:
    return items(cluster, namespace, "ttsdeployments")


def converged(fleet_obj: dict[str, Any]) -> bool:
    status = fleet_obj.get("status") or {}
    return (
        condition(fleet_obj, "Ready").get("status") == "True"
        and status.get("observedGeneration") == fleet_obj["metadata"]["generation"]
    )


def expected_children(fleet_obj: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of every child the operator should have for this fleet, from its builders."""
    owner = Owner.of(fleet_obj)
    return {(c["kind"], c["metadata"]["name"]) for c in desired.build_all(owner, parse_spec(fleet_obj["spec"]), {})}


def children_problems(cluster: Any, namespace: str) -> list[str]:
    """Duplicates, orphans, strays and objects stuck in deletion; empty when all is well."""
    live = {f["metadata"]["uid"]: f for f in fleets(cluster, namespace)}
    found: dict[str, set[tuple[str, str]]] = {uid: set() for uid in live}
    problems = []
    selector = f"{naming.LABEL_MANAGED_BY}={naming.FIELD_MANAGER}"
    for child in items(cluster, namespace, CHILD_KINDS, "-l", selector):
        meta = child["metadata"]
        what = f"{child['kind']}/{meta['name']}"
        if meta.get("deletionTimestamp"):
            problems.append(f"{what} stuck in deletion")
        owners = [ref["uid"] for ref in meta.get("ownerReferences") or [] if ref.get("controller")]
        if len(owners) != 1 or owners[0] not in live:
            problems.append(f"{what} has no live owner ({owners})")
            continue
        key = (child["kind"], meta["name"])
        if key in found[owners[0]]:
            problems.append(f"{what} duplicated")
        found[owners[0]].add(key)
    for uid, fleet_obj in live.items():
        want = expected_children(fleet_obj)
        if found[uid] != want:
            problems.append(f"{fleet_obj['metadata']['name']}: children {sorted(found[uid])} != {sorted(want)}")
        if fleet_obj["metadata"].get("deletionTimestamp"):
            problems.append(f"fleet {fleet_obj['metadata']['name']} stuck in deletion")
    for pod in items(cluster, namespace, "pods"):
        if pod["metadata"].get("deletionTimestamp"):
            problems.append(f"pod {pod['metadata']['name']} stuck in deletion")
    return problems


def all_converged(cluster: Any, namespace: str, count: int) -> bool:
    found = fleets(cluster, namespace)
    return len(found) == count and all(converged(f) for f in found) and not children_problems(cluster, namespace)


def warmup_sentence(cluster: Any, namespace: str, name: str) -> str:
    config = get(cluster, namespace, "configmap", f"{name}-serving") or {}
    return json.dumps(config.get("data") or {})


def wait_for_full_resyncs(operator: OperatorProcess, count: int = 2) -> None:
    """A positive signal that the operator looked at every fleet again: ``count`` more resyncs
    finished (two guarantee one that started after this call)."""
    operator.wait_for_resyncs(count, CONVERGE_SECONDS)
