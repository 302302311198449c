"""One idempotent reconcile of one TTSDeployment: parse → build → apply → prune → observe →
write status once, only if it changed.

Every trigger (the fleet's own watch events, its children's, the periodic resync) ends here,
so a pass never depends on what caused it. Problems the schema cannot catch become conditions;
only API failures that a later pass may not see again (server errors, timeouts) propagate.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ttsfleet.operator import (
    conditions,
    desired,
    events,
    kinds,
    metrics,
    naming,
    problems,
    requeue,
    schedules,
    status,
)
from ttsfleet.operator.conditions import Condition, Transition
from ttsfleet.operator.kube import ApiError, Kube
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.schema import SpecError
from ttsfleet.operator.spec import TTSDeploymentSpec, parse_spec

log = logging.getLogger(__name__)

# Client errors that retrying the same object will not fix: report them, keep going.
_REPORTABLE_STATUSES = frozenset({400, 403, 404, 409, 422})


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Result:
    applied: int = 0
    pruned: int = 0
    status_written: bool = False
    transitions: list[Transition] = field(default_factory=list)
    # Some child could not be applied: worth another pass soon, not only at the next resync.
    retry: bool = False


def _optional_kind_condition(spec: TTSDeploymentSpec, kind: kinds.Kind, served: bool) -> Condition | None:
    if kind is kinds.SCALEDOBJECT and spec.autoscaling.enabled:
        if served:
            bounds = f"{spec.autoscaling.min_replicas}..{spec.autoscaling.max_replicas}"
            return Condition(conditions.AUTOSCALING, True, "ScaledObjectApplied", f"KEDA scales within {bounds}")
        return Condition(
            conditions.AUTOSCALING,
            False,
            "KEDANotInstalled",
            "the ScaledObject CRD (keda.sh) is not installed",
        )
    if kind is kinds.SERVICEMONITOR and spec.monitoring.service_monitor:
        if served:
            return Condition(conditions.MONITORING, True, "ServiceMonitorApplied", "")
        return Condition(
            conditions.MONITORING,
            False,
            "ServiceMonitorCRDMissing",
            "the ServiceMonitor CRD (monitoring.coreos.com) is not installed",
        )
    return None


class Reconciler:
    """Serialises passes per fleet: watch events, child events and the resync run concurrently."""

    def __init__(
        self,
        kube: Kube,
        *,
        now: Callable[[], str] = utcnow,
        instance: str | None = None,
        retries: requeue.Backoff[tuple[str, str]] | None = None,
    ) -> None:
        self.kube = kube
        self.retries: requeue.Backoff[tuple[str, str]] = retries or requeue.Backoff()
        self._now = now
        self._instance = instance or socket.gethostname()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._waiting: set[tuple[str, str]] = set()
        self._waiting_guard = threading.Lock()
        self.fleets = metrics.FleetTracker()

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def reconcile(self, namespace: str, name: str) -> Result | None:
        key = (namespace, name)
        with self._waiting_guard:
            if key in self._waiting:
                # A pass is already queued behind the running one and will read fresh state.
                return None
            self._waiting.add(key)
        with self._lock(namespace, name):
            with self._waiting_guard:
                self._waiting.discard(key)
            with metrics.RECONCILE_SECONDS.time():
                try:
                    result = self._reconcile_fresh(namespace, name)
                except ApiError as err:
                    metrics.RECONCILE_ERRORS.labels(err.reason or str(err.status)).inc()
                    self._retry_later(key, str(err))
                    raise
                except Exception as err:
                    metrics.RECONCILE_ERRORS.labels(type(err).__name__).inc()
                    self._retry_later(key, repr(err))
                    raise
            if result is not None and result.retry:
                self._retry_later(key, "a child could not be applied")
            else:
                self.retries.succeeded(key)
            return result

    def _retry_later(self, key: tuple[str, str], why: str) -> None:
        delay = self.retries.failed(key, time.monotonic())
        log.debug("retrying %s/%s in %.0f s: %s", *key, delay, why)

    def _reconcile_fresh(self, namespace: str, name: str) -> Result | None:
        # Always the fresh object: a watch event's body may predate our last status write.
        body = self.kube.get(kinds.TTSDEPLOYMENT, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.fleets.forget(namespace, name)
            return None  # garbage collection removes the children
        return self._reconcile(body)

    def _reconcile(self, body: dict[str, Any]) -> Result:
        owner = Owner.of(body)
        previous: dict[str, Any] = body.get("status") or {}
        generation = body["metadata"].get("generation")
        result = Result()
        try:
            spec = parse_spec(body.get("spec"))
        except SpecError as err:
            return self._write_invalid(body, previous, generation, str(err))

        found: list[problems.Problem] = []
        if spec.model.secret_ref and self.kube.get(kinds.SECRET, owner.namespace, spec.model.secret_ref) is None:
            found.append(problems.missing_secret(spec.model.secret_ref, owner.namespace))

        starts = (
            schedules.derived_starts(spec.autoscaling, spec.warmup, previous.get("coldStartP95Seconds"))
            if spec.autoscaling.enabled
            else {}
        )
        children = desired.build_all(owner, spec, {name: start for name, (start, _) in starts.items()})
        extra: list[Condition] = []
        served = {kind: self.kube.served(kind) for kind in kinds.OPTIONAL_KINDS}
        for kind, is_served in sorted(served.items(), key=lambda item: item[0].kind):
            condition = _optional_kind_condition(spec, kind, is_served)
            if condition is not None:
                extra.append(condition)

        for child in children:
            kind = kinds.kind_of(child)
            if not served.get(kind, True):
                continue
            try:
                self.kube.apply(child)
                result.applied += 1
            except ApiError as err:
                if err.status not in _REPORTABLE_STATUSES:
                    raise
                found.append(problems.apply_failed(kind.kind, child["metadata"]["name"], err.message))
                result.retry = True

        result.pruned = self._prune(owner, children, served)

        sts = self.kube.get(kinds.STATEFULSET, owner.namespace, naming.statefulset_name(owner))
        pods = self.kube.list_objects(kinds.POD, owner.namespace, naming.selector_string(owner))
        found.extend(problems.pod_problems(pods))
        observation = status.Observation(
            generation=generation,
            selector=naming.selector_string(owner),
            statefulset=sts,
            pods=pods,
            problems=found,
            extra=extra,
            schedule_starts=starts,
        )
        new_status, transitions = status.compute(spec, observation, previous, now=self._now())
        self.fleets.observe(owner.namespace, owner.name, spec.replicas, new_status)
        for problem in found:
            if problem.reason == "ApplyFailed":
                metrics.RECONCILE_ERRORS.labels(problem.reason).inc()
        if status.differs(previous, new_status):
            self._write_status(body, new_status, transitions)
            result.status_written = True
            result.transitions = transitions
        return result

    def _prune(self, owner: Owner, children: list[dict[str, Any]], served: dict[kinds.Kind, bool]) -> int:
        keep = {(kinds.kind_of(c), c["metadata"]["name"]) for c in children}
        pruned = 0
        for kind in kinds.CHILD_KINDS:
            if not served.get(kind, True):
                continue
            for obj in self.kube.list_objects(kind, owner.namespace, naming.children_selector(owner)):
                meta = obj["metadata"]
                if (kind, meta["name"]) in keep or not naming.is_owned_by(obj, owner):
                    continue
                log.info("pruning %s %s/%s", kind.kind, owner.namespace, meta["name"])
                self.kube.delete(kind, owner.namespace, meta["name"], meta.get("uid"))
                pruned += 1
        return pruned

    def _write_invalid(
        self, body: dict[str, Any], previous: dict[str, Any], generation: int | None, message: str
    ) -> Result:
        bad = problems.invalid_spec(message)
        current = [
            Condition(conditions.READY, False, bad.reason, bad.message),
            Condition(conditions.PROGRESSING, False, bad.reason, "nothing is applied until the spec is fixed"),
            Condition(conditions.DEGRADED, True, bad.reason, bad.message),
        ]
        old = list(previous.get("conditions") or [])
        merged = conditions.merge(old, current, now=self._now(), generation=generation)
        new_status = {**previous, "observedGeneration": generation, "conditions": merged}
        result = Result()
        if status.differs(previous, new_status):
            transitions = conditions.transitions(old, merged)
            self._write_status(body, new_status, transitions)
            result.status_written = True
            result.transitions = transitions
        return result

    def _write_status(self, body: dict[str, Any], new_status: dict[str, Any], transitions: list[Transition]) -> None:
        meta = body["metadata"]
        try:
            self.kube.apply_status(kinds.TTSDEPLOYMENT, meta["namespace"], meta["name"], new_status)
        except ApiError as err:
            if err.status != 404:
                raise
            # Deleted during this pass: garbage collection takes it from here.
            log.debug("fleet %s/%s vanished before its status was written", meta["namespace"], meta["name"])
            return
        for transition in transitions:
            if not events.worth_an_event(transition):
                continue
            log.info(
                "condition %s=%s reason=%s fleet=%s/%s",
                transition.type,
                transition.status,
                transition.reason,
                meta["namespace"],
                meta["name"],
            )
            event = events.build(body, transition, now=self._now(), instance=self._instance)
            try:
                self.kube.create(kinds.EVENT, meta["namespace"], event)
            except ApiError as err:
                # An Event is a courtesy; the condition in status is the record.
                log.warning("could not record event for %s/%s: %s", meta["namespace"], meta["name"], err)
