"""kopf wiring: which triggers reach reconcile(), and that none of them needs a finalizer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fixtures_operator import FakeKube

from ttsfleet.operator import handlers, naming, peering


def fleet(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "tts.ttsfleet.io/v1alpha1",
        "kind": "TTSDeployment",
        "metadata": {"name": name, "namespace": namespace},
    }


def test_registry_has_no_finalizer_requiring_handlers() -> None:
    registry = handlers.build_registry()
    assert not registry._changing.get_all_handlers()  # no create/update/delete state on fleets
    assert not registry._spawning.get_all_handlers()  # no timers/daemons (they add finalizers)
    watched = {h.selector.any_name for h in registry._watching.get_all_handlers() if h.selector}
    assert {"ttsdeployments", "statefulsets", "services", "configmaps", "pods"} <= watched


class Recorder:
    def __init__(self, kube: FakeKube | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.kube = kube

    def reconcile(self, namespace: str, name: str) -> None:
        self.calls.append((namespace, name))


def test_events_route_to_the_owning_fleet() -> None:
    recorder = Recorder()
    memo = {"reconciler": recorder}
    handlers.on_fleet_event(memo=memo, type="MODIFIED", namespace="ns", name="a")
    handlers.on_fleet_event(memo=memo, type="DELETED", namespace="ns", name="b")
    handlers.on_child_event(memo=memo, labels={naming.LABEL_DEPLOYMENT: "c"}, namespace="ns")
    handlers.on_child_event(memo=memo, labels={}, namespace="ns")
    assert recorder.calls == [("ns", "a"), ("ns", "c")]


def test_installing_keda_or_prometheus_crds_reconciles_every_fleet_with_fresh_discovery() -> None:
    kube = FakeKube()
    for ns, name in [("team-a", "x"), ("team-b", "y")]:
        kube.put(fleet(ns, name))
    reconciler = Recorder(kube)
    memo = {"reconciler": reconciler, "options": handlers.Options(clusterwide=True)}
    assert {"scaledobjects.keda.sh", "servicemonitors.monitoring.coreos.com"} == handlers.OPTIONAL_CRDS
    handlers.on_optional_crd_event(memo=memo, type=None, name="servicemonitors.monitoring.coreos.com")
    assert reconciler.calls == []  # the initial listing: nothing changed
    handlers.on_optional_crd_event(memo=memo, type="ADDED", name="servicemonitors.monitoring.coreos.com")
    assert sorted(reconciler.calls) == [("team-a", "x"), ("team-b", "y")]
    assert kube.discovery_resets == 1  # type: ignore[attr-defined]


def test_resync_lists_the_served_namespaces() -> None:
    kube = FakeKube()
    for ns, name in [("team-a", "x"), ("team-b", "y"), ("other", "z")]:
        kube.put(fleet(ns, name))
    listed, active = handlers._fleets_to_resync(kube, handlers.Options(clusterwide=True))  # type: ignore[arg-type]
    assert sorted(listed) == [("other", "z"), ("team-a", "x"), ("team-b", "y")]
    assert active  # no peering: always the active replica
    exact, _ = handlers._fleets_to_resync(kube, handlers.Options(namespaces=("team-a",)))  # type: ignore[arg-type]
    assert exact == [("team-a", "x")]
    globbed, _ = handlers._fleets_to_resync(kube, handlers.Options(namespaces=("team-*",)))  # type: ignore[arg-type]
    assert sorted(globbed) == [("team-a", "x"), ("team-b", "y")]


def test_resync_only_in_the_active_replica() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    fresh = "2026-01-01T11:59:50+00:00"
    stale = "2026-01-01T11:00:00+00:00"
    body = {
        "status": {
            "me": {"priority": 10, "lifetime": 60, "lastseen": fresh},
            "standby": {"priority": 5, "lifetime": 60, "lastseen": fresh},
            "dead-boss": {"priority": 99, "lifetime": 60, "lastseen": stale},
        }
    }
    assert peering.is_active(body, "me", 10, now)
    assert not peering.is_active(body, "standby", 5, now)
    assert not peering.is_active(None, "me", 10, now)
    kube = FakeKube()
    kube.put(fleet("team-a", "x"))
    live = {"lifetime": 60, "lastseen": datetime.now(UTC).isoformat()}
    peers = {"me": {"priority": 10, **live}, "standby": {"priority": 5, **live}}
    kube.put(
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": "p"},
            "status": peers,
        }
    )
    options = handlers.Options(clusterwide=True, peering="p", identity="standby", priority=5)
    assert handlers._fleets_to_resync(kube, options) == ([], False)  # type: ignore[arg-type]
    options = handlers.Options(clusterwide=True, peering="p", identity="me", priority=10)
    assert handlers._fleets_to_resync(kube, options) == ([("team-a", "x")], True)  # type: ignore[arg-type]


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
