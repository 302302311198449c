"""Helpers for the fault tests: fleets small enough for a 2-core machine, what "converged"
means (Ready at the current generation, exactly the children the builders render, each owned by
a live fleet, nothing stuck in deletion), one printed line of figures per fault, and restarting
one component of the local cluster (to inject the fault, or with other flags)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet_helpers import condition, fleet, get, items
from operator_process import OperatorProcess

from ttsfleet.devcluster import STATE_FILE
from ttsfleet.operator import desired, naming
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import parse_spec

CHILD_KINDS = "statefulsets,services,configmaps,poddisruptionbudgets,networkpolicies,scaledobjects,servicemonitors"
# Generous bounds for a busy 2-core machine: failing them means stuck, not slow.
CONVERGE_SECONDS = 600
SMALL = {"gpu": 0, "cpu": "100m", "memory": "128Mi"}
STOP_GRACE_SECONDS = 20.0


def small_fleet(name: str, replicas: int = 1, **spec: Any) -> dict[str, Any]:
    return fleet(name, replicas=replicas, resources=SMALL, **spec)


def free_local_volumes(cluster: Any) -> int:
    """Local-SSD volumes free for new pods: each worker pod claims one (the local cluster has 16
    per node, 48 in all), so more fleets than this cannot all have a pod."""
    volumes = json.loads(cluster.kubectl("get", "pv", "-o", "json").stdout)["items"]
    return sum(
        1
        for pv in volumes
        if pv["spec"].get("storageClassName") == "local-ssd" and (pv.get("status") or {}).get("phase") == "Available"
    )


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


def convergence_problems(cluster: Any, namespace: str, count: int) -> list[str]:
    """What keeps the namespace's fleets from having converged; empty when they have."""
    found = fleets(cluster, namespace)
    problems = [f"{len(found)} fleets, expected {count}"] if len(found) != count else []
    for fleet_obj in found:
        if not converged(fleet_obj):
            ready = condition(fleet_obj, "Ready")
            observed = (fleet_obj.get("status") or {}).get("observedGeneration")
            problems.append(
                f"{fleet_obj['metadata']['name']}: Ready={ready.get('status')} ({ready.get('reason')}), "
                f"observedGeneration {observed} of {fleet_obj['metadata']['generation']}"
            )
    return problems + children_problems(cluster, namespace)


def all_converged(cluster: Any, namespace: str, count: int) -> bool:
    return not convergence_problems(cluster, namespace, count)


def wait_converged(cluster: Any, namespace: str, count: int, timeout: float = CONVERGE_SECONDS) -> None:
    """Until every fleet has converged; on the hang guard, say which did not and why."""
    deadline = time.monotonic() + timeout
    while problems := convergence_problems(cluster, namespace, count):
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{count} fleets not converged after {timeout:.0f}s ({len(problems)} problems): "
                + "; ".join(problems[:20])
            )
        time.sleep(1.0)


def warmup_sentence(cluster: Any, namespace: str, name: str) -> str:
    config = get(cluster, namespace, "configmap", f"{name}-serving") or {}
    return json.dumps(config.get("data") or {})


def wait_for_full_resyncs(operator: OperatorProcess, count: int = 2) -> None:
    """A positive signal that the operator looked at every fleet again: ``count`` more resyncs
    finished (two guarantee one that started after this call)."""
    operator.wait_for_resyncs(count, CONVERGE_SECONDS)


def _group_gone(pid: int) -> bool:
    # Reap it when it is this process's child (the session's cluster), so no zombie lingers.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def component_argv(cluster: Any, name: str) -> list[str]:
    """The command line one component of the local cluster runs with now."""
    pid = cluster.component_pids()[name]
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def restart_component(
    cluster: Any, name: str, down_seconds: float, argv: Callable[[list[str]], list[str]] | None = None
) -> float:
    """Stop one component of the local cluster (its process group) and start it again with the
    same command line (or ``argv`` of it), environment and log; the state file learns the new pid
    so that the cluster's teardown stops it. Returns how long it was down; returns when the
    process runs again (not when it is ready)."""
    state_file = Path(cluster.workdir) / STATE_FILE
    state = json.loads(state_file.read_text())
    pid = int(state["pids"][name])
    command = component_argv(cluster, name)
    env = dict(
        item.decode().split("=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item
    )
    # As its supervisor would: SIGTERM, then SIGKILL once the grace period is over (kube-apiserver
    # keeps draining long-running requests well past the point where it refuses new connections).
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while not _group_gone(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        time.sleep(0.1)
    stopped = time.monotonic()
    time.sleep(down_seconds)  # the fault: the component stays away this long
    with (Path(cluster.logs_dir) / f"{name}.log").open("ab") as log:
        child = subprocess.Popen(
            argv(command) if argv else command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=state_file.parent,
            env=env,
        )
    state = json.loads(state_file.read_text())
    state["pids"][name] = child.pid
    state_file.write_text(json.dumps(state, indent=2))
    return time.monotonic() - stopped


def api_ready(cluster: Any) -> bool:
    try:
        result = cluster.kubectl("get", "--raw=/readyz", check=False, timeout=10)
    except subprocess.TimeoutExpired:
        return False  # a loaded API server still starting: not ready yet, ask again
    return result.returncode == 0 and result.stdout.strip() == "ok"
