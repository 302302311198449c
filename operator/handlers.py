"""kopf wiring: every trigger calls :meth:`Reconciler.reconcile` and nothing else.

Triggers: the TTSDeployment's own watch events (the initial listing is "resume", then
create/update), watch events of its children and pods (drift, deletion, readiness), and a
periodic resync. All of them are ``on.event``-style or operator-level: no kopf state is stored
on the fleets and no finalizer is ever added (kopf timers would add one), so a fleet deleted
while the operator is away is simply garbage-collected.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from ttsfleet.operator import kinds, metrics, naming, peering, requeue, spec
from ttsfleet.operator.kube import ApiError, Kube
from ttsfleet.operator.peering import DEFAULT_LIFETIME_SECONDS
from ttsfleet.operator.reconcile import Reconciler

log = logging.getLogger(__name__)

# Children (and the pods the StatefulSet creates) whose changes may change a fleet.
WATCHED_CHILDREN: tuple[tuple[str, str, str], ...] = (
    ("apps", "v1", "statefulsets"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("", "v1", "pods"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("keda.sh", "v1alpha1", "scaledobjects"),
    ("monitoring.coreos.com", "v1", "servicemonitors"),
)


@dataclass(frozen=True)
class Options:
    namespaces: tuple[str, ...] = ()
    clusterwide: bool = False
    resync_seconds: float = 30.0
    max_workers: int = 8
    # HA: the kopf peering this replica belongs to (None: standalone), its identity and priority.
    peering: str | None = None
    identity: str = ""
    priority: int = 0
    peering_lifetime: int = DEFAULT_LIFETIME_SECONDS


def _reconcile(memo: Any, namespace: str, name: str) -> None:
    reconciler: Reconciler = memo["reconciler"]
    # kopf delivers events only to a replica that is active (not paused by its peering).
    metrics.ACTIVE.set(1)
    reconciler.reconcile(namespace, name)


def on_fleet_event(memo: Any, type: str, namespace: str | None, name: str, **_: Any) -> None:
    if type == "DELETED" or namespace is None:
        return  # garbage collection follows the owner references
    _reconcile(memo, namespace, name)


def on_child_event(memo: Any, labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    owner = labels.get(naming.LABEL_DEPLOYMENT)
    if owner and namespace:
        _reconcile(memo, namespace, owner)


OPTIONAL_CRDS = frozenset(kind.crd_name for kind in kinds.OPTIONAL_KINDS)


def on_optional_crd_event(memo: Any, type: str | None, name: str, **_: Any) -> None:
    """KEDA's or the Prometheus Operator's CRD installed or removed while fleets run: re-read
    discovery and reconcile every fleet now, so ScaledObjects and ServiceMonitors (and the
    conditions saying they cannot exist) follow within seconds, not at the discovery cache's TTL."""
    if type is None:
        return  # the initial listing: every fleet's first pass reads discovery anyway
    reconciler: Reconciler = memo["reconciler"]
    options: Options = memo["options"]
    reconciler.kube.forget_served()
    fleets, _active = _fleets_to_resync(reconciler.kube, options)
    log.info("CRD %s %s: reconciling %d fleets", name, type.lower(), len(fleets))
    for namespace, fleet in fleets:
        reconciler.reconcile(namespace, fleet)


def _active_for(kube: Kube, options: Options, namespace: str) -> bool:
    if options.peering is None:
        return True
    if options.clusterwide:
        obj = kube.get(kinds.CLUSTER_PEERING, None, options.peering)
    else:
        obj = kube.get(kinds.PEERING, namespace, options.peering)
    return peering.is_active(obj, options.identity, options.priority, datetime.now(UTC))


def _fleets_to_resync(kube: Kube, options: Options) -> tuple[list[tuple[str, str]], bool]:
    """The fleets this replica is active for, and whether it is active anywhere."""
    exact = [ns for ns in options.namespaces if not any(ch in ns for ch in "*?[!")]
    if options.clusterwide or len(exact) != len(options.namespaces):
        items = kube.list_objects(kinds.TTSDEPLOYMENT, None)
        if not options.clusterwide:
            items = [
                i for i in items if any(fnmatch.fnmatch(i["metadata"]["namespace"], p) for p in options.namespaces)
            ]
    else:
        items = [i for ns in exact for i in kube.list_objects(kinds.TTSDEPLOYMENT, ns)]
    fleets = [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items]
    if options.clusterwide:
        # One cluster-wide peering decides for every namespace.
        everywhere = _active_for(kube, options, "")
        return (fleets if everywhere else []), everywhere
    active = {ns: _active_for(kube, options, ns) for ns in {ns for ns, _ in fleets} | set(exact)}
    return [(ns, name) for ns, name in fleets if active[ns]], any(active.values())


def ensure_peering(kube: Kube, options: Options) -> None:
    """Create the peering object when missing: without it kopf keeps every replica paused, silently."""
    if options.peering is None:
        return
    if options.clusterwide:
        targets: list[tuple[kinds.Kind, str | None]] = [(kinds.CLUSTER_PEERING, None)]
    else:
        exact = [ns for ns in options.namespaces if not any(ch in ns for ch in "*?[!")]
        targets = [(kinds.PEERING, ns) for ns in exact]
    for kind, namespace in targets:
        if kube.get(kind, namespace, options.peering) is not None:
            continue
        metadata: dict[str, Any] = {"name": options.peering}
        if namespace:
            metadata["namespace"] = namespace
        try:
            kube.create(kind, namespace, {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": metadata})
            log.info("created %s %s", kind.kind, options.peering)
        except ApiError as err:
            if err.status != 409:  # another replica created it first
                log.warning("could not create %s %s: %s", kind.kind, options.peering, err)


async def resync_forever(reconciler: Reconciler, options: Options) -> None:
    """Periodic level-based pass over every fleet (catches what no event announces, e.g. a
    Secret created after the fleet). Failures are logged and retried at the next period."""
    while True:
        await asyncio.sleep(options.resync_seconds)
        try:
            fleets, active = await asyncio.to_thread(_fleets_to_resync, reconciler.kube, options)
        except Exception:
            log.exception("resync: listing TTSDeployments failed")
            continue
        metrics.ACTIVE.set(1 if active else 0)
        reconciler.fleets.retain(fleets)
        for namespace, name in fleets:
            try:
                await asyncio.to_thread(reconciler.reconcile, namespace, name)
            except Exception:
                log.exception("resync of %s/%s failed", namespace, name)


async def retry_forever(reconciler: Reconciler, options: Options, tick: float = 0.5) -> None:
    """Passes that failed are tried again on their backoff (reconcile.Reconciler.retries), so a
    transient failure heals in seconds rather than at the next resync."""
    while True:
        await asyncio.sleep(tick)
        for namespace, name in reconciler.retries.due(time.monotonic()):
            try:
                if await asyncio.to_thread(_active_for, reconciler.kube, options, namespace):
                    await asyncio.to_thread(reconciler.reconcile, namespace, name)
            except Exception:
                log.exception("retry of %s/%s failed", namespace, name)


async def on_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    options: Options = memo["options"]
    # Quiet by default: kopf's own Kubernetes events only for real trouble.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = options.max_workers
    settings.watching.server_timeout = 600
    if options.peering is not None:
        # A standby takes over at most this long after the active replica's last keep-alive.
        settings.peering.lifetime = options.peering_lifetime
    # A peering replica starts paused until kopf (and our resync) see it is the active one.
    metrics.ACTIVE.set(0 if options.peering is not None else 1)
    kube = await asyncio.to_thread(Kube.connect)
    if options.peering is not None:
        await asyncio.to_thread(ensure_peering, kube, options)
    retries: requeue.Backoff[tuple[str, str]] = requeue.Backoff(limit=max(1.0, options.resync_seconds))
    reconciler = Reconciler(kube, instance=options.identity or None, retries=retries)
    memo["reconciler"] = reconciler
    memo["resync"] = asyncio.create_task(resync_forever(reconciler, options), name="ttsfleet-resync")
    memo["retry"] = asyncio.create_task(retry_forever(reconciler, options), name="ttsfleet-retry")


async def on_cleanup(memo: kopf.Memo, **_: Any) -> None:
    tasks: list[asyncio.Task[None]] = [memo[name] for name in ("resync", "retry") if memo.get(name) is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    reconciler: Reconciler | None = memo.get("reconciler")
    if reconciler is not None:
        reconciler.kube.close()


def build_registry() -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_via_client)
    kopf.on.startup(registry=registry)(on_startup)
    kopf.on.cleanup(registry=registry)(on_cleanup)
    kopf.on.event(spec.GROUP, spec.VERSION, spec.PLURAL, registry=registry)(on_fleet_event)
    managed: dict[str, Any] = {
        naming.LABEL_MANAGED_BY: naming.FIELD_MANAGER,
        naming.LABEL_DEPLOYMENT: kopf.PRESENT,
    }
    kopf.on.event(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        when=lambda name, **_: name in OPTIONAL_CRDS,
        registry=registry,
        id="optional-crds",
    )(on_optional_crd_event)
    for group, version, plural in WATCHED_CHILDREN:
        kopf.on.event(group, version, plural, labels=managed, registry=registry, id=f"child-{plural}")(on_child_event)
    return registry
