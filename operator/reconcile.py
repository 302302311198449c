"""One idempotent reconcile of one TTSDeployment: observe → parse → build → apply what differs →
prune → write status once, only if it changed.

Every trigger (the fleet's own watch events, its children's, the periodic resync) ends here, one
pass per fleet at a time (the work queue serialises them), so a pass never depends on what
caused it. It reads the fleet, its children and its pods from the watch-fed cache
(``cache.Observed``) and writes only what differs: a converged fleet costs no request at all.
Problems the schema cannot catch become conditions; only API failures that a later pass may not
see again (server errors, timeouts) propagate.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ttsfleet.operator import (
    applied,
    cache,
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
# The watch normally shows our apply of a child within a second; one it has not shown after this
# long is looked up on the API server (one read, so a slow watch costs no extra apply).
WATCH_SHOWS_AN_APPLY_SECONDS = 15.0


def _addon_in_flux(kind: kinds.Kind, err: ApiError) -> bool:
    """An add-on's kind refused because its CRD is being deleted (403 "create not allowed while
    custom resource definition is terminating") or is gone while discovery still lists it (404)."""
    if kind not in kinds.OPTIONAL_KINDS:
        return False
    return err.status == 404 or (err.status == 403 and "definition is terminating" in err.message)


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Result:
    applied: int = 0
    unchanged: int = 0
    pruned: int = 0
    status_written: bool = False
    # The status differed, but other fleets were waiting for their children: written next pass.
    status_deferred: bool = False
    transitions: list[Transition] = field(default_factory=list)
    # Some child could not be applied: worth another pass soon, not only at the next resync.
    retry: bool = False


def _optional_kind_condition(
    spec: TTSDeploymentSpec, kind: kinds.Kind, served: bool, scraped: bool = True
) -> Condition | None:
    """``scraped``: the fleet declares a scrape path for its queue metric (a ServiceMonitor that
    the cluster serves). Without one the queue trigger reads "no data", which KEDA counts as 0:
    the fleet would never scale on load, silently. Say so."""
    if kind is kinds.SCALEDOBJECT and spec.autoscaling.enabled:
        if served and not scraped and spec.autoscaling.redis is not None:
            # The redis trigger scales on the queue in front of the fleet; the per-pod queue
            # trigger is left out of the ScaledObject (desired.scaledobject).
            bounds = f"{spec.autoscaling.min_replicas}..{spec.autoscaling.max_replicas}"
            return Condition(
                conditions.AUTOSCALING,
                True,
                "ScaledObjectApplied",
                f"KEDA scales within {bounds} on the Redis queue (the per-pod queue metric is not scraped)",
            )
        if served and not scraped:
            return Condition(
                conditions.AUTOSCALING,
                False,
                "QueueMetricNotScraped",
                "nothing scrapes the fleet's queue metric (spec.monitoring.serviceMonitor is off or the "
                "ServiceMonitor CRD is not installed): KEDA scales on schedules only",
            )
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


def _keda_not_ready(scaled: dict[str, Any] | None) -> Condition | None:
    """KEDA's own verdict on the fleet's ScaledObject. A trigger KEDA cannot use (a Redis it cannot
    reach or authenticate to, a Prometheus that does not answer) shows only there: Ready=False, or
    Ready=Unknown with reason PartialTriggerError when other triggers still work (those can scale
    the fleet up, but the HPA scales down only when every metric answers). Say it on the fleet,
    where a user looks, rather than report autoscaling as working."""
    for cond in ((scaled or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") != "Ready":
            continue
        said = f"KEDA: {cond.get('message') or cond.get('reason') or 'no reason given'}"[:1024]
        if cond.get("status") == "False":
            return Condition(conditions.AUTOSCALING, False, "ScaledObjectNotReady", said)
        if cond.get("status") == "Unknown" and cond.get("reason") == "PartialTriggerError":
            # KEDA's message does not say which trigger, nor what it costs.
            why = f"{said} (see the ScaledObject's events; the fleet scales down only once every trigger answers)"
            return Condition(conditions.AUTOSCALING, False, "PartialTriggerError", why)
    return None


def _rv(obj: dict[str, Any] | None) -> int | None:
    """etcd's revision behind resourceVersion, to tell which of two views of an object is newer."""
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion"))
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _ChildRef:
    """What a pass remembers of a rendered child between passes: enough to find it in the cache
    and to tell our own last apply from a change (the full objects of 1,000 fleets held ≈30 MB)."""

    kind: kinds.Kind
    name: str
    stamp: str | None


@dataclass
class _Applied:
    """Our last apply of one child: the server's answer is the truth until the watch shows more."""

    uid: str
    resource_version: int | None
    stamp: str | None
    seen: bool  # the watch has shown this child since (so its absence means it was deleted)
    generation: int | None = None
    at: float = field(default_factory=time.monotonic)


class Reconciler:
    """One pass of one fleet. Passes of different fleets may run concurrently (worker threads)."""

    def __init__(
        self,
        kube: Kube,
        *,
        now: Callable[[], str] = utcnow,
        instance: str | None = None,
        retries: requeue.Backoff[tuple[str, str]] | None = None,
        source: cache.Source | None = None,
    ) -> None:
        self.kube = kube
        self.source: cache.Source = source or cache.Listing(kube)
        self.retries: requeue.Backoff[tuple[str, str]] = retries or requeue.Backoff()
        self._now = now
        self._instance = instance or socket.gethostname()
        self.fleets = metrics.FleetTracker()
        # What this process wrote, per fleet: the watch shows it a little later.
        self._status_written: dict[tuple[str, str], tuple[int | None, dict[str, Any]]] = {}
        self._applied: dict[tuple[str, str], dict[tuple[str, str], _Applied]] = {}
        self._deleting: dict[tuple[str, str], set[str]] = {}
        # The spec and the stamped children per fleet, as long as their inputs stay the same:
        # building and hashing them is most of a pass that finds nothing to do.
        self._specs: dict[tuple[str, str], tuple[tuple[str, Any], TTSDeploymentSpec]] = {}
        self._desired: dict[tuple[str, str], tuple[tuple[str, Any, Any], list[_ChildRef]]] = {}

    def reconcile(
        self, namespace: str, name: str, observed: cache.Observed | None = None, others_wait: bool = False
    ) -> Result | None:
        """``others_wait``: other fleets are queued for their children (a burst of new or edited
        fleets). The pass then leaves its status write (and Events) to a next pass, which the
        caller must run with ``others_wait`` False: children of every fleet first, the status
        writes, most of the requests of converging fleets, after."""
        key = (namespace, name)
        with metrics.RECONCILE_SECONDS.time():
            try:
                result = self._pass(key, observed, others_wait)
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

    def forget(self, namespace: str, name: str) -> None:
        """The fleet is gone: drop what this process remembers of it."""
        key = (namespace, name)
        self.fleets.forget(namespace, name)
        self._status_written.pop(key, None)
        self._applied.pop(key, None)
        self._deleting.pop(key, None)
        self._specs.pop(key, None)
        self._desired.pop(key, None)
        self.retries.succeeded(key)

    def own_status_write(self, namespace: str, name: str, resource_version: str | None) -> bool:
        """Whether a watch event of the fleet only shows our own last status write."""
        written = self._status_written.get((namespace, name))
        try:
            return written is not None and written[0] == int(resource_version or "")
        except ValueError:
            return False

    def own_apply(self, namespace: str, fleet: str, child: dict[str, Any]) -> bool:
        """Whether a watch event of a child only shows our own last apply of it."""
        meta = child.get("metadata") or {}
        try:
            plural = kinds.kind_of(child).plural
        except KeyError:
            return False
        last = self._applied.get((namespace, fleet), {}).get((plural, meta.get("name", "")))
        return last is not None and last.uid == meta.get("uid") and last.resource_version == _rv(child)

    def child_deleted(self, namespace: str, fleet: str, child: dict[str, Any]) -> None:
        """The watch saw a child deleted: what we remember of applying it no longer holds, even
        if no pass saw it live in between (deleted right after our apply, or first shown by the
        watch's initial listing), so the next pass finds it missing."""
        meta = child.get("metadata") or {}
        try:
            plural = kinds.kind_of(child).plural
        except KeyError:
            return
        applied = self._applied.get((namespace, fleet), {})
        last = applied.get((plural, meta.get("name", "")))
        if last is not None and last.uid == meta.get("uid"):
            applied.pop((plural, meta.get("name", "")), None)

    def known_generation(self, namespace: str, fleet: str, child: dict[str, Any]) -> bool:
        """Whether a child's spec is still the generation our last apply left (a controller's
        status report, not an edit). Kinds without generations never qualify."""
        meta = child.get("metadata") or {}
        try:
            plural = kinds.kind_of(child).plural
        except KeyError:
            return False
        last = self._applied.get((namespace, fleet), {}).get((plural, meta.get("name", "")))
        generation = meta.get("generation")
        return (
            last is not None
            and last.uid == meta.get("uid")
            and generation is not None
            and last.generation == generation
        )

    def _retry_later(self, key: tuple[str, str], why: str) -> None:
        delay = self.retries.failed(key, time.monotonic())
        log.debug("retrying %s/%s in %.0f s: %s", *key, delay, why)

    def _pass(self, key: tuple[str, str], observed: cache.Observed | None, others_wait: bool) -> Result | None:
        observed = observed if observed is not None else self.source.observe(*key)
        body = self._fleet_body(key, observed.fleet)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.forget(*key)
            return None  # garbage collection removes the children
        return self._reconcile(body, observed, others_wait)

    def _fleet_body(self, key: tuple[str, str], cached: dict[str, Any] | None) -> dict[str, Any] | None:
        if cached is None:
            return self.kube.get(kinds.TTSDEPLOYMENT, *key)  # not in the cache (yet)
        written = self._status_written.get(key)
        cached_rv, written_rv = _rv(cached), written[0] if written else None
        if written is not None and cached_rv is not None and written_rv is not None and cached_rv < written_rv:
            # The watch has not shown our last status write yet; that write is the status now.
            return {**cached, "status": written[1]}
        return cached

    def _remembered_in_sync(self, key: tuple[str, str], ref: _ChildRef, live: dict[str, Any] | None) -> bool:
        """In sync by what this process knows: the child is our own last apply of the same desired
        object, or one we checked since, unchanged (no rendering, no comparison)."""
        last = self._applied.get(key, {}).get((ref.kind.plural, ref.name))
        if last is None or last.stamp != ref.stamp:
            return False
        if live is None:
            # Created by our apply and the watch has not shown it yet; but a watch that has not
            # shown it after a while never will (deleted before the watch's first listing).
            return not last.seen and time.monotonic() - last.at < WATCH_SHOWS_AN_APPLY_SECONDS
        if live["metadata"].get("uid") != last.uid:
            return False
        last.seen = True
        live_rv = _rv(live)
        # Our own apply, or the watch still lags behind it.
        return live_rv is not None and last.resource_version is not None and live_rv <= last.resource_version

    def _in_sync(
        self,
        key: tuple[str, str],
        kind: kinds.Kind,
        stamped: dict[str, Any],
        live: dict[str, Any] | None,
        *,
        watched: bool = True,
    ) -> bool:
        """``watched``: ``live`` came from the watch (False: read from the API server because
        the watch did not show it, which it still has to before its absence means anything)."""
        name = stamped["metadata"]["name"]
        reason = applied.drift(stamped, live)
        if reason is None:
            assert live is not None
            meta = live["metadata"]
            self._applied.setdefault(key, {})[(kind.plural, name)] = _Applied(
                meta.get("uid", ""), _rv(live), applied.stamp_of(stamped), watched, meta.get("generation")
            )
            return True
        log.info("applying %s %s/%s: %s", kind.kind, key[0], name, reason)
        return False

    def _apply(self, key: tuple[str, str], kind: kinds.Kind, stamped: dict[str, Any]) -> dict[str, Any]:
        response = self.kube.apply(stamped)
        meta = response.get("metadata") or {}
        self._applied.setdefault(key, {})[(kind.plural, stamped["metadata"]["name"])] = _Applied(
            meta.get("uid", ""), _rv(response), applied.stamp_of(stamped), False, meta.get("generation")
        )
        metrics.APPLIES.labels(kind.kind).inc()
        return response

    def _spec(self, key: tuple[str, str], owner: Owner, generation: Any, raw: Any) -> TTSDeploymentSpec:
        # The API server bumps metadata.generation on every change of the spec.
        inputs = (owner.uid, generation)
        known = self._specs.get(key)
        if generation is not None and known is not None and known[0] == inputs:
            return known[1]
        parsed = parse_spec(raw)
        self._specs[key] = (inputs, parsed)
        return parsed

    def _children(
        self, key: tuple[str, str], owner: Owner, generation: Any, spec: TTSDeploymentSpec, starts: dict[str, str]
    ) -> tuple[list[_ChildRef], Callable[[], dict[tuple[kinds.Kind, str], dict[str, Any]]]]:
        """Every desired child by reference, and how to render them all, stamped (applied.stamp),
        once per pass and only when a pass needs more than the references."""
        inputs = (owner.uid, generation, sorted(starts.items()))
        rendered: dict[tuple[kinds.Kind, str], dict[str, Any]] = {}

        def render() -> dict[tuple[kinds.Kind, str], dict[str, Any]]:
            if not rendered:
                for child in desired.build_all(owner, spec, starts):
                    stamped = applied.stamp(child)
                    rendered[(kinds.kind_of(stamped), stamped["metadata"]["name"])] = stamped
            return rendered

        known = self._desired.get(key)
        if generation is not None and known is not None and known[0] == inputs:
            return known[1], render
        refs = [_ChildRef(kind, name, applied.stamp_of(child)) for (kind, name), child in render().items()]
        self._desired[key] = (inputs, refs)
        return refs, render

    def _reconcile(self, body: dict[str, Any], observed: cache.Observed, others_wait: bool = False) -> Result:
        owner = Owner.of(body)
        key = (owner.namespace, owner.name)
        previous: dict[str, Any] = body.get("status") or {}
        generation = body["metadata"].get("generation")
        result = Result()
        try:
            spec = self._spec(key, owner, generation, body.get("spec"))
        except SpecError as err:
            return self._write_invalid(body, previous, generation, str(err))

        # A missing model Secret shows in the pods (problems.pod_problems): the operator holds no
        # permission on Secrets at all.
        found: list[problems.Problem] = []

        starts = (
            schedules.derived_starts(spec.autoscaling, spec.warmup, previous.get("coldStartP95Seconds"))
            if spec.autoscaling.enabled
            else {}
        )
        children, render = self._children(
            key, owner, generation, spec, {name: start for name, (start, _) in starts.items()}
        )
        extra: list[Condition] = []
        served = {kind: self.kube.served(kind) for kind in kinds.OPTIONAL_KINDS}
        for kind, is_served in sorted(served.items(), key=lambda item: item[0].kind):
            scraped = spec.monitoring.service_monitor and served.get(kinds.SERVICEMONITOR, False)
            condition = _optional_kind_condition(spec, kind, is_served, scraped)
            if condition is not None:
                extra.append(condition)

        live = {(kinds.kind_of(c), c["metadata"]["name"]): c for c in observed.children}
        if spec.autoscaling.enabled and served.get(kinds.SCALEDOBJECT, False):
            keda = _keda_not_ready(live.get((kinds.SCALEDOBJECT, owner.name)))
            if keda is not None:
                extra = [c for c in extra if c.type != conditions.AUTOSCALING] + [keda]
        sts_name = naming.statefulset_name(owner)
        sts = live.get((kinds.STATEFULSET, sts_name))
        for ref in children:
            kind = ref.kind
            if not served.get(kind, True):
                continue
            current = live.get((kind, ref.name))
            if self._remembered_in_sync(key, ref, current):
                result.unchanged += 1
                continue
            last = self._applied.get(key, {}).get((kind.plural, ref.name))
            watched = current is not None or last is None or last.seen
            if not watched:
                # Applied by us, yet the watch does not show it: ask the API server, not the cache.
                current = self.kube.find(kind, owner.namespace, ref.name)
            child = render()[(kind, ref.name)]
            if self._in_sync(key, kind, child, current, watched=watched):
                result.unchanged += 1
                continue
            try:
                response = self._apply(key, kind, child)
                result.applied += 1
            except ApiError as err:
                if _addon_in_flux(kind, err):
                    # Its CRD is being removed (or is not served yet): not the fleet's problem;
                    # the CRD's events (discovery.py) bring the pass that settles it.
                    log.info("%s %s/%s not accepted now: %s", kind.kind, owner.namespace, ref.name, err)
                    result.retry = True
                    continue
                if err.status not in _REPORTABLE_STATUSES:
                    raise
                found.append(problems.apply_failed(kind.kind, child["metadata"]["name"], err.message))
                result.retry = True
                continue
            if kind is kinds.STATEFULSET and child["metadata"]["name"] == sts_name:
                sts = response  # fresher than what the watch has shown so far

        result.pruned = self._prune(owner, children, served, observed.children)

        pods = observed.pods
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
            if others_wait:
                result.status_deferred = True
            else:
                self._write_status(body, new_status, transitions)
                result.status_written = True
                result.transitions = transitions
        return result

    def _prune(
        self,
        owner: Owner,
        children: list[_ChildRef],
        served: dict[kinds.Kind, bool],
        live: list[dict[str, Any]],
    ) -> int:
        keep = {(ref.kind, ref.name) for ref in children}
        key = (owner.namespace, owner.name)
        deleting = self._deleting.setdefault(key, set())
        # Deletions the watch has shown done need no memory any more.
        deleting &= {obj["metadata"].get("uid", "") for obj in live}
        pruned = 0
        for obj in live:
            kind = kinds.kind_of(obj)
            meta = obj["metadata"]
            if not served.get(kind, True) or (kind, meta["name"]) in keep or not naming.is_owned_by(obj, owner):
                continue
            if meta.get("deletionTimestamp") or meta.get("uid") in deleting:
                continue  # already on its way out
            log.info("pruning %s %s/%s", kind.kind, owner.namespace, meta["name"])
            self.kube.delete(kind, owner.namespace, meta["name"], meta.get("uid"))
            deleting.add(meta.get("uid", ""))
            self._applied.get(key, {}).pop((kind.plural, meta["name"]), None)
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
            response = self.kube.apply_status(kinds.TTSDEPLOYMENT, meta["namespace"], meta["name"], new_status)
        except ApiError as err:
            if err.status != 404:
                raise
            # Deleted during this pass: garbage collection takes it from here.
            log.debug("fleet %s/%s vanished before its status was written", meta["namespace"], meta["name"])
            return
        metrics.STATUS_WRITES.inc()
        self._status_written[(meta["namespace"], meta["name"])] = (_rv(response), new_status)
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
