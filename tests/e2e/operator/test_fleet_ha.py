"""HA: two operator replicas in one kopf peering; only the higher priority acts, and when it dies
without a goodbye (SIGKILL) the standby takes over within the peering lifetime.

"Never both acting" is proved from their writes as the API server recorded them, not from their
logs: each replica runs under a ServiceAccount of its own, and for this module kube-apiserver
keeps an audit log of those two users' write requests (when each was received and answered).
Every write of the replica that hands over must be answered before the first write of the one
that takes over is received. Keep-alives in the peering object are not acting and not counted.

The module has a cluster of its own: restarting kube-apiserver (twice, for the audit log) leaves
other clients' informers behind, which must not stall the modules that share the session's."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleet_faults import api_ready, restart_component
from fleet_helpers import apply, fleet, get, ready_fleet, wait_for
from operator_process import OperatorProcess
from session_clusters import own_cluster

from ttsfleet.devcluster import traffic
from ttsfleet.devcluster.cluster import ClusterHandle

NAME = "ha"
PEERING = "ttsfleet-ha"
LIFETIME_SECONDS = 10
# Hang guards for a busy machine, not budgets: the takeover time is printed, not asserted.
TAKEOVER_GUARD_SECONDS = 300
JOIN_GUARD_SECONDS = 120
RESUMED = "Resuming operations after the pause"
DEMOTED_NAME = "handover"
IDENTITY_NAMESPACE = "ttsfleet-ha-ids"
WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection"]
PEERING_RESOURCES = ("kopfpeerings", "clusterkopfpeerings")

log = logging.getLogger(__name__)


def username(identity: traffic.Identity) -> str:
    return f"system:serviceaccount:{identity.namespace}:{identity.name}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterHandle]:
    yield from own_cluster("e2e-ha", "it restarts kube-apiserver with an audit log")


@pytest.fixture(scope="module")
def identities(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, traffic.Identity]:
    """Two replica identities, A and B (ServiceAccounts with kubeconfigs of their own)."""
    folder = tmp_path_factory.mktemp("ha-identities")
    return {
        role: traffic.issue(cluster, f"ttsfleet-ha-{role}", IDENTITY_NAMESPACE, folder / f"{role}.kubeconfig")
        for role in ("a", "b")
    }


@pytest.fixture(scope="module")
def audit_log(cluster: Any, identities: dict[str, traffic.Identity]) -> Path:
    """kube-apiserver restarted with an audit log of the two identities' writes (only theirs); the
    module's own cluster goes with it, so nothing restores the flags."""
    policy = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "Metadata", "users": [username(i) for i in identities.values()], "verbs": WRITE_VERBS},
            {"level": "None"},
        ],
    }
    policy_path = Path(cluster.workdir) / "audit-ha-policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy))
    log_path = Path(cluster.logs_dir) / "audit-ha.log"
    log_path.unlink(missing_ok=True)
    flags = [
        f"--audit-policy-file={policy_path}",
        f"--audit-log-path={log_path}",
        "--audit-log-format=json",
        "--audit-log-mode=blocking",  # written before the request is answered
    ]
    restart_component(cluster, "kube-apiserver", 0, lambda argv: argv + flags)
    wait_for("kube-apiserver ready with the audit log", lambda: api_ready(cluster), 180)
    return log_path


@dataclass(frozen=True)
class Write:
    replica: str
    received: datetime
    answered: datetime
    what: str


class WriteWitness:
    """The two replicas' write requests in the audit log since the witness was made."""

    def __init__(self, log_path: Path, identities: dict[str, traffic.Identity]) -> None:
        self._log_path = log_path
        self._users = {username(identity): role for role, identity in identities.items()}
        self.since = datetime.now(UTC)

    def writes(self, replica: str | None = None) -> list[Write]:
        found = []
        for line in self._log_path.read_text().splitlines():
            event = json.loads(line)
            role = self._users.get(event["user"]["username"])
            ref = event.get("objectRef") or {}
            if role is None or event["stage"] != "ResponseComplete" or ref.get("resource") in PEERING_RESOURCES:
                continue
            received = datetime.fromisoformat(event["requestReceivedTimestamp"])
            if received < self.since or (replica is not None and role != replica):
                continue
            what = f"{event['verb']} {ref.get('resource')}/{ref.get('subresource') or ''}{ref.get('name') or ''}"
            found.append(Write(role, received, datetime.fromisoformat(event["stageTimestamp"]), what))
        return sorted(found, key=lambda w: w.received)

    def count(self, replica: str) -> int:
        return len(self.writes(replica))

    def assert_one_writer_at_a_time(self, first: str, then: str) -> dict[str, Any]:
        """Both wrote, and every write of ``first`` was answered before the first write of
        ``then`` was received: no moment in which both were writing. Returns the figures."""
        before, after = self.writes(first), self.writes(then)
        assert before, f"replica {first} never wrote: nothing to compare"
        assert after, f"replica {then} never wrote: it never took over"
        last = max(before, key=lambda w: w.answered)
        overlapping = [w for w in before if w.answered >= after[0].received]
        assert not overlapping, (
            f"both replicas acting: {then} wrote {after[0].what} at {after[0].received.time()} while {first} "
            f"still wrote {[(w.what, str(w.received.time()), str(w.answered.time())) for w in overlapping[:5]]}"
        )
        return {
            f"writes_{first}": len(before),
            f"writes_{then}": len(after),
            "gap_between_writers_s": round((after[0].received - last.answered).total_seconds(), 3),
        }


def peers(cluster: Any, namespace: str) -> dict[str, Any]:
    return dict(((get(cluster, namespace, "kopfpeering", PEERING) or {}).get("status")) or {})


def peering_replica(
    cluster: Any, namespace: str, role: str, priority: int, identity: traffic.Identity
) -> OperatorProcess:
    """One replica of the HA pair under its own identity, with its own log (this run's lines only)."""
    log_path = cluster.logs_dir / f"operator-{role}.log"
    log_path.unlink(missing_ok=True)
    args = ("--peering", PEERING, "--peering-lifetime", str(LIFETIME_SECONDS), "--priority", str(priority))
    return OperatorProcess({**cluster.env, "KUBECONFIG": str(identity.kubeconfig)}, log_path, args, namespace)


def report(test: str, **figures: Any) -> None:
    print(f"\nFAULT {test}: " + json.dumps(figures, sort_keys=True), flush=True)


def test_standby_takes_over_when_the_active_replica_dies(
    cluster: Any,
    namespace: str,
    running_operator: OperatorProcess,
    identities: dict[str, traffic.Identity],
    audit_log: Path,
) -> None:
    running_operator.stop()  # the module's standalone operator would act on this fleet too
    witness = WriteWitness(audit_log, identities)
    active = peering_replica(cluster, namespace, "ha-active", 100, identities["a"])
    standby = peering_replica(cluster, namespace, "ha-standby", 50, identities["b"])
    try:
        # The first replica creates the (namespaced) peering object itself.
        active.start()
        wait_for("the active replica in the peering", lambda: len(peers(cluster, namespace)) == 1, JOIN_GUARD_SECONDS)
        standby.start()
        wait_for(
            "both replicas in the peering with their priorities",
            lambda: sorted(p.get("priority") for p in peers(cluster, namespace).values()) == [50, 100],
            JOIN_GUARD_SECONDS,
        )
        apply(cluster, namespace, fleet(NAME, replicas=1))
        ready_fleet(cluster, namespace, NAME, timeout=TAKEOVER_GUARD_SECONDS)
        # Only the active replica acted. kopf starts a peering replica paused and resumes it only
        # when no live peer has a higher priority: the standby never resumed.
        assert f"{namespace}/{NAME}" in active.log_path.read_text(errors="replace")
        standby_log = standby.log_path.read_text(errors="replace")
        assert f"{namespace}/{NAME}" not in standby_log
        assert RESUMED not in standby_log
        assert standby.get("/healthz")
        # Two of the standby's own resyncs (it looked at the fleet), and no write of its own
        # reached the API server while the active replica lived.
        standby.wait_for_resyncs()

        # The active replica dies without removing itself from the peering; a change follows.
        active.kill()
        killed, killed_at = time.monotonic(), datetime.now(UTC)
        assert witness.count("b") == 0, f"the standby wrote while on standby: {witness.writes('b')[:5]}"
        cluster.kubectl(
            "patch", "ttsd", NAME, "-n", namespace, "--type", "merge", "-p", json.dumps({"spec": {"replicas": 2}})
        )
        wait_for(
            "the standby to take over and scale the StatefulSet",
            lambda: (get(cluster, namespace, "sts", NAME) or {}).get("spec", {}).get("replicas") == 2,
            TAKEOVER_GUARD_SECONDS,
            interval=0.2,
        )
        takeover = time.monotonic() - killed
        log.info("HA takeover after SIGKILL: %.1f s (peering lifetime %d s)", takeover, LIFETIME_SECONDS)
        assert RESUMED in standby.log_path.read_text(errors="replace")
        ready_fleet(cluster, namespace, NAME, timeout=TAKEOVER_GUARD_SECONDS)
        figures = witness.assert_one_writer_at_a_time("a", "b")
        first_takeover_write = witness.writes("b")[0].received
        assert first_takeover_write > killed_at
        report(
            "ha-sigkill-takeover",
            takeover_after_kill_s=round(takeover, 1),
            first_standby_write_after_kill_s=round((first_takeover_write - killed_at).total_seconds(), 2),
            peering_lifetime_s=LIFETIME_SECONDS,
            **figures,
        )
    finally:
        active.stop()
        standby.stop()
        running_operator.start()


class Churn:
    """Changes the fleet's warmup sentence over and over (each change is work for the acting
    replica: a ConfigMap, a StatefulSet template and a status to write) while a handover runs."""

    def __init__(self, cluster: Any, namespace: str, name: str) -> None:
        self._cluster, self._namespace, self._name = cluster, namespace, name
        self.changes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="churn", daemon=True)

    def __enter__(self) -> Churn:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(120)

    def _run(self) -> None:
        while not self._stop.is_set():
            patch = {"spec": {"warmup": {"sentences": [f"Handover change {self.changes}."]}}}
            self._cluster.kubectl(
                "patch", "ttsd", self._name, "-n", self._namespace, "--type", "merge", "-p", json.dumps(patch)
            )
            self.changes += 1
            self._stop.wait(0.3)


def fleet_gauge(operator: OperatorProcess, namespace: str) -> float | None:
    labels = frozenset({("namespace", namespace), ("name", DEMOTED_NAME)})
    return operator.samples().get(("ttsfleet_operator_replicas_desired", labels))


def active_gauge(operator: OperatorProcess) -> float | None:
    return operator.samples().get(("ttsfleet_operator_active", frozenset()))


def reconciles(operator: OperatorProcess) -> float | None:
    return operator.samples().get(("ttsfleet_operator_reconcile_duration_seconds_count", frozenset()))


def test_a_replica_outranked_by_a_new_one_hands_over_and_stops_reporting(
    cluster: Any,
    namespace: str,
    running_operator: OperatorProcess,
    identities: dict[str, traffic.Identity],
    audit_log: Path,
) -> None:
    """A rolling upgrade of the operator: the new pod joins with a higher priority, the old one
    pauses while it still runs. Only one replica may act, and only one may report the fleet;
    the fleet keeps changing throughout the handover, so a replica that kept acting would write."""
    running_operator.stop()
    witness = WriteWitness(audit_log, identities)
    old = peering_replica(cluster, namespace, "handover-old", 50, identities["a"])
    new = peering_replica(cluster, namespace, "handover-new", 100, identities["b"])
    try:
        old.start()
        wait_for("the old replica in the peering", lambda: len(peers(cluster, namespace)) == 1, JOIN_GUARD_SECONDS)
        apply(cluster, namespace, fleet(DEMOTED_NAME, replicas=1))
        ready_fleet(cluster, namespace, DEMOTED_NAME, timeout=TAKEOVER_GUARD_SECONDS)
        wait_for("the old replica to report the fleet", lambda: fleet_gauge(old, namespace) == 1, JOIN_GUARD_SECONDS)
        assert active_gauge(old) == 1

        written = witness.count("a")
        with Churn(cluster, namespace, DEMOTED_NAME) as churn:
            wait_for("the old replica to act on the changes", lambda: witness.count("a") > written, JOIN_GUARD_SECONDS)
            new.start()
            joined = time.monotonic()
            wait_for(
                "the new replica to report the fleet as the active one",
                lambda: fleet_gauge(new, namespace) == 1 and active_gauge(new) == 1,
                JOIN_GUARD_SECONDS,
            )
            wait_for(
                "the old replica to go standby and stop reporting the fleet",
                lambda: fleet_gauge(old, namespace) is None and active_gauge(old) == 0,
                JOIN_GUARD_SECONDS,
            )
            handover = time.monotonic() - joined
            written = witness.count("b")
            wait_for(
                "the new replica to act on further changes", lambda: witness.count("b") > written, JOIN_GUARD_SECONDS
            )
        assert "Pausing operations in favour of" in old.log_path.read_text(errors="replace")

        # The old replica still runs, paused: a change is made by the new one alone.
        passes = reconciles(old)
        cluster.kubectl(
            "patch", "ttsd", DEMOTED_NAME, "-n", namespace, "--type", "merge", "-p", '{"spec": {"replicas": 2}}'
        )
        wait_for(
            "the new replica to scale the StatefulSet",
            lambda: (get(cluster, namespace, "sts", DEMOTED_NAME) or {}).get("spec", {}).get("replicas") == 2,
            JOIN_GUARD_SECONDS,
        )
        ready_fleet(cluster, namespace, DEMOTED_NAME, timeout=TAKEOVER_GUARD_SECONDS)
        # The paused replica keeps resyncing (looking) without acting: two more of its resyncs.
        old.wait_for_resyncs()
        assert reconciles(old) == passes, "the paused replica reconciled"
        assert fleet_gauge(old, namespace) is None
        figures = witness.assert_one_writer_at_a_time("a", "b")
        report("ha-handover", changes_during_handover=churn.changes, handover_s=round(handover, 1), **figures)
    finally:
        old.stop()
        new.stop()
        running_operator.start()
