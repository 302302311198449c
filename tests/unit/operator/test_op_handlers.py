"""kopf wiring and the controller loop: which events enqueue which fleet, what a resync runs, and
that no handler needs a finalizer."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any

import kopf
from fixtures_controller import CountingReconciler, FakeCache
from fixtures_operator import FakeKube

from ttsfleet.operator import cache, discovery, handlers, kinds, metrics, naming, peering, streams
from ttsfleet.operator import controller as controller_module
from ttsfleet.operator.cache import Observed
from ttsfleet.operator.controller import Controller, Options
from ttsfleet.operator.reconcile import Reconciler
from ttsfleet.operator.requeue import WorkQueue


def test_registry_has_no_finalizer_requiring_handlers() -> None:
    registry = handlers.build_registry()
    assert not registry._changing.get_all_handlers()  # no create/update/delete state on fleets
    assert not registry._spawning.get_all_handlers()  # no timers/daemons (they add finalizers)
    watched = {h.selector.any_name for h in registry._watching.get_all_handlers() if h.selector}
    assert {"ttsdeployments", "customresourcedefinitions", "scaledobjects", "servicemonitors"} <= watched


def test_every_child_kind_and_the_pods_are_cached_and_watched_once_without_naming_them() -> None:
    registry = handlers.build_registry()
    indexed = {h.id for h in registry._indexing.get_all_handlers()}
    by_kopf = {kind for kind in kinds.CHILD_KINDS if cache.child_index_id(kind) in indexed}
    watched = {h.selector.any_name for h in registry._watching.get_all_handlers() if h.selector}
    assert {kind.plural for kind in by_kopf} <= watched
    # The streams take every other child and the pods; nothing is watched twice.
    assert by_kopf | streams.STREAMED_KINDS == {*kinds.CHILD_KINDS, kinds.POD}
    assert not by_kopf & streams.STREAMED_KINDS
    assert not {kind.plural for kind in streams.STREAMED_KINDS} & watched
    assert indexed == {cache.FLEET_INDEX, *(cache.child_index_id(kind) for kind in by_kopf)}


class FakeReconciler:
    def __init__(self, kube: FakeKube | None = None) -> None:
        self.kube = kube or FakeKube()
        self.forgotten: list[tuple[str, str]] = []
        self.written: dict[tuple[str, str], str] = {}
        self.own_applies: set[str] = set()
        self.deleted: list[tuple[str, str]] = []

    def forget(self, namespace: str, name: str) -> None:
        self.forgotten.append((namespace, name))

    def own_status_write(self, namespace: str, name: str, resource_version: str | None) -> bool:
        return self.written.get((namespace, name)) == resource_version

    def own_apply(self, namespace: str, fleet: str, child: dict[str, Any]) -> bool:
        return child["metadata"]["resourceVersion"] in self.own_applies

    def known_generation(self, namespace: str, fleet: str, child: dict[str, Any]) -> bool:
        return child["metadata"]["resourceVersion"] == "5"  # a status report of the controller

    def child_deleted(self, namespace: str, fleet: str, child: dict[str, Any]) -> None:
        self.deleted.append((namespace, fleet))


class FakeController:
    def __init__(self, fleets: list[tuple[str, str]] | None = None) -> None:
        self.reconciler = FakeReconciler()
        self.queued: list[tuple[str, str]] = []
        self.urgent: list[bool] = []
        self.fleets = fleets or []
        self.events = 0

    def enqueue(self, key: tuple[str, str], urgent: bool = True) -> None:
        self.queued.append(key)
        self.urgent.append(urgent)

    def enqueue_report(self, key: tuple[str, str]) -> None:
        self.enqueue(key, urgent=False)

    def enqueue_all(self) -> int:
        self.queued += self.fleets
        return len(self.fleets)

    def saw_event(self, namespace: str | None) -> None:
        self.events += 1


def body(rv: str) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": rv}}


def test_events_enqueue_the_owning_fleet_and_nothing_else() -> None:
    controller = FakeController()
    memo = {"controller": controller}
    controller.reconciler.written[("ns", "a")] = "7"
    controller.reconciler.own_applies.add("9")

    async def events() -> None:
        await handlers.on_fleet_event(memo=memo, type="MODIFIED", namespace="ns", name="a", body=body("6"))
        await handlers.on_fleet_event(memo=memo, type="MODIFIED", namespace="ns", name="a", body=body("7"))
        await handlers.on_fleet_event(memo=memo, type="DELETED", namespace="ns", name="b", body=body("8"))
        labels = {naming.LABEL_DEPLOYMENT: "c"}
        # kopf's events of the add-ons' children.
        await handlers.on_child_event(memo=memo, type="MODIFIED", labels=labels, namespace="ns", body=body("5"))
        await handlers.on_child_event(memo=memo, type="MODIFIED", labels=labels, namespace="ns", body=body("9"))
        await handlers.on_child_event(memo=memo, type=None, labels=labels, namespace="ns", body=body("4"))
        await handlers.on_child_event(memo=memo, type="DELETED", labels=labels, namespace="ns", body=body("9"))
        await handlers.on_child_event(memo=memo, type="MODIFIED", labels={}, namespace="ns", body=body("3"))
        assert controller.events == 8  # kopf's events: this replica is the active one
        # The streams' events of the other children and the pods (their listings hand over none).
        handlers.child_event(controller, "MODIFIED", "ns", "e", body("9"))  # type: ignore[arg-type]
        handlers.child_event(controller, "MODIFIED", "ns", "e", body("6"))  # type: ignore[arg-type]
        handlers.pod_event(controller, "MODIFIED", "ns", "d", body("1"))  # type: ignore[arg-type]
        # A standby's streams keep running: their events say nothing about who is active.
        assert controller.events == 8

    asyncio.run(events())
    # rv 7 is our own status write, rv 9 our own apply, None an initial listing: no pass for those;
    # a deleted child is drift (and what was remembered of applying it is dropped), a deleted
    # fleet is forgotten.
    assert controller.queued == [("ns", "a"), ("ns", "c"), ("ns", "c"), ("ns", "e"), ("ns", "d")]
    # A controller's status report and a pod moving wait behind fleets with real work (coalesced).
    assert controller.urgent == [True, False, True, True, False]
    assert controller.reconciler.deleted == [("ns", "c")]
    assert controller.reconciler.forgotten == [("ns", "b")]


def test_installing_keda_or_prometheus_crds_reconciles_every_fleet_once_discovery_lists_the_kind() -> None:
    controller = FakeController([("team-a", "x"), ("team-b", "y")])
    assert {
        "scaledobjects.keda.sh",
        "triggerauthentications.keda.sh",
        "servicemonitors.monitoring.coreos.com",
    } == handlers.OPTIONAL_CRDS
    lists_it_at = 3  # the API server's discovery catches up on the third look
    looks: list[kinds.Kind] = []

    def discover(kind: kinds.Kind) -> bool:
        looks.append(kind)
        return len(looks) >= lists_it_at

    memo: dict[str, Any] = {"controller": controller}
    agreements: list[discovery.Agreement] = []

    async def agreed(agreement: discovery.Agreement) -> None:
        agreements.append(agreement)
        await handlers.on_discovery_agreement(memo, kopf.OperatorSettings(), agreement)

    async def events() -> None:
        memo["discovery"] = discovery.DiscoveryFollower(discover, agreed, first_delay=0.001, max_delay=0.001)
        name = "servicemonitors.monitoring.coreos.com"
        await handlers.on_optional_crd_event(memo=memo, type="ADDED", name=name, body=established_crd())
        await memo["discovery"].idle()
        assert len(agreements) == 1
        # KEDA's CRD, there since before the start, edited by its chart's upgrade: nothing to do.
        keda = "scaledobjects.keda.sh"
        await handlers.on_optional_crd_event(memo=memo, type=None, name=keda, body=established_crd("v1alpha1"))
        await handlers.on_optional_crd_event(memo=memo, type="MODIFIED", name=keda, body=established_crd("v1alpha1"))
        await memo["discovery"].idle()

    asyncio.run(events())
    assert looks == [kinds.SERVICEMONITOR] * lists_it_at + [kinds.SCALEDOBJECT]
    assert agreements == [discovery.Agreement(kinds.SERVICEMONITOR, True, agreements[0].waited_seconds, True)]
    assert sorted(controller.queued) == [("team-a", "x"), ("team-b", "y")]
    assert controller.reconciler.kube.discovery_resets == 1


def established_crd(version: str = "v1") -> dict[str, Any]:
    return {
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {"group": "monitoring.coreos.com", "versions": [{"name": version, "served": True}]},
        "status": {"conditions": [{"type": "Established", "status": "True"}]},
    }


def test_a_resync_runs_every_known_fleet_from_memory_once() -> None:
    kube = FakeKube()
    reconciler = CountingReconciler(kube)
    fleets = [("team-a", "x"), ("team-b", "y")]
    controller = Controller(reconciler, FakeCache(fleets), Options(clusterwide=True, max_workers=2))  # type: ignore[arg-type]

    async def resync() -> None:
        controller.start()
        before = metrics.RESYNCS._value.get()
        await controller.resync()
        assert metrics.RESYNCS._value.get() == before + 1  # all passes done before it counts
        await controller.stop()

    asyncio.run(resync())
    assert sorted(reconciler.passes) == fleets
    assert kube.reads == 0  # no listing: the fleets come from the cache


def test_resync_only_in_the_active_replica() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    fresh = "2026-01-01T11:59:50+00:00"
    stale = "2026-01-01T11:00:00+00:00"
    peering_body = {
        "status": {
            "me": {"priority": 10, "lifetime": 60, "lastseen": fresh},
            "standby": {"priority": 5, "lifetime": 60, "lastseen": fresh},
            "dead-boss": {"priority": 99, "lifetime": 60, "lastseen": stale},
        }
    }
    assert peering.is_active(peering_body, "me", 10, now)
    assert not peering.is_active(peering_body, "standby", 5, now)
    assert not peering.is_active(None, "me", 10, now)
    kube = FakeKube()
    live = {"lifetime": 60, "lastseen": datetime.now(UTC).isoformat()}
    peers = {"me": {"priority": 10, **live}, "standby": {"priority": 5, **live}}
    kube.put({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "p"}, "status": peers})
    standby = Options(clusterwide=True, peering="p", identity="standby", priority=5)
    assert controller_module.active_namespaces(kube, standby, {"team-a"}) == set()  # type: ignore[arg-type]
    active = Options(clusterwide=True, peering="p", identity="me", priority=10)
    assert controller_module.active_namespaces(kube, active, {"team-a"}) is None  # type: ignore[arg-type]
    assert controller_module.active_namespaces(kube, Options(clusterwide=True), set()) is None  # type: ignore[arg-type]

    reconciler = CountingReconciler(kube)
    controller = Controller(reconciler, FakeCache([("team-a", "x")]), standby)  # type: ignore[arg-type]

    async def resync() -> None:
        controller.start()
        await controller.resync()
        await controller.stop()

    asyncio.run(resync())
    assert reconciler.passes == []


def test_peering_object_is_created_when_missing() -> None:
    kube = FakeKube()
    handlers.ensure_peering(kube, handlers.Options(clusterwide=True, peering="ha"))  # type: ignore[arg-type]
    assert kube.events == [{"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "ha"}}]
    kube = FakeKube()
    options = handlers.Options(namespaces=("team-a", "team-*"), peering="ha")
    handlers.ensure_peering(kube, options)  # type: ignore[arg-type]
    assert kube.events == [
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "ha", "namespace": "team-a"}}
    ]
    kube = FakeKube()
    kube.put({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "ha"}})
    handlers.ensure_peering(kube, handlers.Options(clusterwide=True, peering="ha"))  # type: ignore[arg-type]
    handlers.ensure_peering(kube, handlers.Options(clusterwide=True))  # type: ignore[arg-type]
    assert kube.events == []


def test_peering_lifetime_flag() -> None:
    from ttsfleet.operator.__main__ import parse_args

    assert parse_args(["-A"]).peering_lifetime == peering.DEFAULT_LIFETIME_SECONDS == 60
    args = parse_args(["-A", "--peering", "ha", "--priority", "100", "--peering-lifetime", "15"])
    assert (args.peering, args.priority, args.peering_lifetime) == ("ha", 100, 15)


def test_identical_replicas_get_distinct_priorities_so_one_of_them_is_active() -> None:
    """A Deployment cannot give its pods different flags; equal priorities would pause all of them."""
    from ttsfleet.operator.__main__ import parse_args

    priorities = {parse_args(["-A", "--peering", "ha"]).priority for _ in range(20)}
    assert len(priorities) > 1
    assert all(priority > 0 for priority in priorities)
    assert parse_args(["-A", "--peering", "ha", "--priority", "7"]).priority == 7
    assert parse_args(["-A"]).priority == 0


class DeferringReconciler(Reconciler):
    """Defers the status of its first pass of each fleet, as a real pass does while others wait."""

    def __init__(self, kube: FakeKube) -> None:
        super().__init__(kube)  # type: ignore[arg-type]
        self.passes: list[tuple[tuple[str, str], bool]] = []

    def reconcile(self, namespace: str, name: str, observed: Observed | None = None, others_wait: bool = False) -> Any:
        from ttsfleet.operator.reconcile import Result

        first = all(key != (namespace, name) for key, _ in self.passes)
        self.passes.append(((namespace, name), others_wait))
        return Result(applied=1, status_deferred=True) if first else Result(status_written=True)


def test_a_pass_that_left_its_status_for_later_comes_back_after_the_waiting_fleets() -> None:
    kube = FakeKube()
    reconciler = DeferringReconciler(kube)
    controller = Controller(reconciler, FakeCache([]), Options(clusterwide=True, max_workers=1))  # type: ignore[arg-type]

    async def burst() -> None:
        for name in ("a", "b", "c"):
            controller.enqueue(("ns", name))
        controller.start()
        while not controller.queue.idle():
            await asyncio.sleep(0.01)
        await controller.stop()

    asyncio.run(burst())
    order = [key[1] for key, _ in reconciler.passes]
    # Every fleet gets its children before any fleet comes back for its status.
    assert order[:3] == ["a", "b", "c"] and sorted(order[3:]) == ["a", "b", "c"]
    # The last of the burst waits too (the others' passes ended just before); the passes that
    # come back from the later lane write.
    assert [wait for _, wait in reconciler.passes] == [True, True, True, False, False, False]


class GatedReconciler(Reconciler):
    """Holds the pass of fleet "new" until the test lets it go; records when each pass started
    and ended."""

    def __init__(self, kube: FakeKube) -> None:
        super().__init__(kube)  # type: ignore[arg-type]
        self.gate = threading.Event()
        self.steps: list[str] = []

    def reconcile(self, namespace: str, name: str, observed: Observed | None = None, others_wait: bool = False) -> Any:
        from ttsfleet.operator.reconcile import Result

        self.steps.append(f"{name} started")
        if name == "new":
            self.gate.wait(30)
        self.steps.append(f"{name} ended")
        return Result()


def test_a_report_waits_for_the_children_of_a_new_fleet_even_with_a_worker_free() -> None:
    reconciler = GatedReconciler(FakeKube())
    controller = Controller(reconciler, FakeCache([]), Options(clusterwide=True, max_workers=2))  # type: ignore[arg-type]
    looks = 0

    def clock() -> float:  # the queue reads it whenever a worker looks at the later lane
        nonlocal looks
        looks += 1
        return time.monotonic()

    controller.queue = WorkQueue(clock=clock)

    async def run() -> None:
        controller.start()
        controller.enqueue(("ns", "new"))
        while reconciler.steps != ["new started"]:
            await asyncio.sleep(0.01)
        controller.queue.add(("ns", "pods-moved"), urgent=False)
        added = looks
        while looks == added:  # the free worker looked at the report, and left it queued
            await asyncio.sleep(0.01)
        assert len(controller.queue) == 1
        reconciler.gate.set()
        while not controller.queue.idle():
            await asyncio.sleep(0.01)
        await controller.stop()

    asyncio.run(run())
    assert reconciler.steps == ["new started", "new ended", "pods-moved started", "pods-moved ended"]
