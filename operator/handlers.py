"""kopf wiring: indexes that keep what the watches show, and event handlers that only enqueue.

Read top to bottom, a fleet goes: handlers (enqueue its key) → controller (work queue, one pass
per fleet at a time, resync from memory) → reconcile (desired/<kind>, apply what differs, status).

Triggers: the TTSDeployment's own watch events, watch events of its children and pods (drift,
deletion, readiness), the optional add-ons' CRDs appearing, and the periodic resync. kopf
watches the fleets, the add-ons' kinds and the CRDs; the operator's own streams (streams.py)
watch the other children and the pods and call ``child_event``/``pod_event`` the same way. All
of them are ``on.event``-style or operator-level: no kopf state is stored on the fleets and no
finalizer is ever added (kopf timers would add one), so a fleet deleted while the operator is
away is simply garbage-collected. The handlers run on kopf's event loop, next to the queue and
the cache, and never wait on the API server. Events that only echo our own writes (our status
write, our apply of a child) and the initial listings of children and pods enqueue nothing: the
fleets' own initial listing runs every fleet once, once the cache has listed too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from ttsfleet.operator import cache, discovery, kinds, kopf_rescan, metrics, naming, requeue, spec, streams
from ttsfleet.operator.controller import Controller, Options
from ttsfleet.operator.kube import ApiError, Kube
from ttsfleet.operator.reconcile import Reconciler

__all__ = ["Options", "build_registry", "ensure_peering"]

log = logging.getLogger(__name__)

OPTIONAL_KINDS_BY_CRD = {kind.crd_name: kind for kind in kinds.OPTIONAL_KINDS}
OPTIONAL_CRDS = frozenset(OPTIONAL_KINDS_BY_CRD)
CHILD_LABELS: dict[str, Any] = {naming.LABEL_MANAGED_BY: naming.FIELD_MANAGER, naming.LABEL_DEPLOYMENT: kopf.PRESENT}


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds every event's "essence" (a deep copy of the whole body) and diffs it against
    the last handled one, for on.create/on.update/on.field handlers. This operator has none (its
    handlers are on.event and indexes), so the copy was a quarter of kopf's CPU per event, spent
    on every child's and pod's event at 1,000 fleets. Nothing is ever stored on the objects."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _selector(kind: kinds.Kind) -> tuple[str, str, str]:
    group, _, version = kind.api_version.rpartition("/")
    return group, version, kind.plural


async def on_fleet_event(memo: Any, type: str | None, namespace: str | None, name: str, body: Any, **_: Any) -> None:
    controller: Controller = memo["controller"]
    controller.saw_event(namespace)
    if namespace is None:
        return
    if type == "DELETED":
        controller.reconciler.forget(namespace, name)  # garbage collection follows the owner references
        return
    resource_version = (body.get("metadata") or {}).get("resourceVersion")
    if controller.reconciler.own_status_write(namespace, name, resource_version):
        return
    controller.enqueue((namespace, name))


def child_event(controller: Controller, type: str, namespace: str, fleet: str, body: Mapping[str, Any]) -> None:
    """A child of ``fleet`` was added, changed or deleted (from kopf or a stream)."""
    child = dict(body)
    if type == "DELETED":
        controller.reconciler.child_deleted(namespace, fleet, child)
    elif controller.reconciler.own_apply(namespace, fleet, child):
        return
    # A deleted child, or one whose spec someone changed, is urgent; a controller reporting on a
    # child we applied (a StatefulSet's status) is something the fleet reports on.
    if type == "DELETED" or not controller.reconciler.known_generation(namespace, fleet, child):
        controller.enqueue((namespace, fleet))
    else:
        controller.enqueue_report((namespace, fleet))


def pod_event(controller: Controller, type: str, namespace: str, fleet: str, body: Mapping[str, Any]) -> None:
    """A pod of ``fleet`` moved (from a stream): its status follows, coalesced."""
    controller.enqueue_report((namespace, fleet))


async def on_child_event(
    memo: Any, type: str | None, labels: Mapping[str, str], namespace: str | None, body: Any, **_: Any
) -> None:
    """kopf's events of the add-ons' children."""
    controller: Controller = memo["controller"]
    controller.saw_event(namespace)
    owner = labels.get(naming.LABEL_DEPLOYMENT)
    if type is not None and owner and namespace:
        child_event(controller, type, namespace, owner, body)


async def on_optional_crd_event(memo: Any, type: str | None, name: str, body: Any, **_: Any) -> None:
    """KEDA's or the Prometheus Operator's CRD installed or removed while fleets run: once
    discovery agrees with the CRD (discovery.py), kopf rescans and every fleet is reconciled, so
    ScaledObjects and ServiceMonitors (and the conditions saying they cannot exist) follow within
    seconds, not at the discovery cache's TTL."""
    follower: discovery.DiscoveryFollower = memo["discovery"]
    kind = OPTIONAL_KINDS_BY_CRD[name]
    if type is None:
        follower.note(kind, body)  # the initial listing: every fleet's first pass reads discovery anyway
    else:
        follower.follow(kind, None if type == "DELETED" else body)


async def on_discovery_agreement(memo: Any, settings: kopf.OperatorSettings, agreement: discovery.Agreement) -> None:
    controller: Controller = memo["controller"]
    controller.reconciler.kube.forget_served()
    insights = memo.get("insights")
    if insights is not None:
        try:
            await kopf_rescan.rescan_group(
                agreement.kind.group, settings=settings, registry=memo["registry"], insights=insights
            )
        except Exception as err:  # the passes below still see the new kind
            log.warning(
                "kopf could not rescan %s (its watch waits for the next CRD event): %s", agreement.kind.group, err
            )
    count = controller.enqueue_all()
    log.info(
        "CRD %s: discovery %s %s after %.1f s; reconciling %d fleets",
        agreement.kind.crd_name,
        "lists" if agreement.served else "does not list",
        agreement.kind.kind,
        agreement.waited_seconds,
        count,
    )


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


async def on_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    options: Options = memo["options"]
    # Quiet by default: kopf's own Kubernetes events only for real trouble.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 600
    settings.persistence.diffbase_storage = NoDiffBase()
    for kind in kinds.OPTIONAL_CHILD_KINDS:
        settings.watching.label_selectors[_selector(kind)] = streams.CHILD_SELECTOR
    if options.peering is not None:
        # A standby takes over at most this long after the active replica's last keep-alive.
        settings.peering.lifetime = options.peering_lifetime
    # A peering replica starts paused until kopf (and our resync) see it is the active one.
    metrics.ACTIVE.set(0 if options.peering is not None else 1)
    metrics.watch_loop(asyncio.get_running_loop())
    # One connection per pass worker, and two for the resync and the peering.
    kube = await asyncio.to_thread(Kube.connect, None, connections=options.max_workers + 2)
    if options.peering is not None:
        await asyncio.to_thread(ensure_peering, kube, options)
    retries: requeue.Backoff[tuple[str, str]] = requeue.Backoff(limit=max(1.0, options.resync_seconds))
    reconciler = Reconciler(kube, instance=options.identity or None, retries=retries)
    # The streams' own connections: each holds one open for as long as it watches.
    connections = streams.Streams.connections(options.namespaces, options.clusterwide)
    watches = streams.Streams(
        await asyncio.to_thread(Kube.connect, None, connections=connections), options.namespaces, options.clusterwide
    )
    # kopf hands its indexes to every handler, this one included (empty until the listings).
    controller = Controller(reconciler, cache.Cache(kwargs, watches), options)
    memo["controller"] = controller
    memo["streams"] = watches
    memo["discovery"] = discovery.DiscoveryFollower(
        kube.discover, lambda agreement: on_discovery_agreement(memo, settings, agreement)
    )
    watches.start(functools.partial(child_event, controller), functools.partial(pod_event, controller))
    controller.start()


async def on_cleanup(memo: kopf.Memo, **_: Any) -> None:
    follower: discovery.DiscoveryFollower | None = memo.get("discovery")
    if follower is not None:
        await follower.stop()
    watches: streams.Streams | None = memo.get("streams")
    if watches is not None:
        watches.stop()
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        await controller.stop()
        controller.reconciler.kube.close()
    if watches is not None:
        watches.kube.close()


def build_registry() -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_via_client)
    kopf.on.startup(registry=registry)(on_startup)
    kopf.on.cleanup(registry=registry)(on_cleanup)

    kopf.index(spec.GROUP, spec.VERSION, spec.PLURAL, id=cache.FLEET_INDEX, registry=registry)(cache.index_fleet)
    kopf.on.event(spec.GROUP, spec.VERSION, spec.PLURAL, registry=registry)(on_fleet_event)
    # The add-ons' kinds alike (the other children and the pods are the streams'): a new optional
    # kind in kinds.CHILD_KINDS is cached and watched with no change here.
    for kind in kinds.OPTIONAL_CHILD_KINDS:
        selector = _selector(kind)
        kopf.index(*selector, labels=CHILD_LABELS, id=cache.child_index_id(kind), registry=registry)(cache.index_child)
        kopf.on.event(*selector, labels=CHILD_LABELS, id=f"child-{kind.plural}", registry=registry)(on_child_event)
    kopf.on.event(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        when=lambda name, **_: name in OPTIONAL_CRDS,
        registry=registry,
        id="optional-crds",
    )(on_optional_crd_event)
    return registry
