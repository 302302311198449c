"""Two replicas never act at once: an outranked replica stops the moment kopf pauses it (kopf
announces the decision only in its log, which the controller listens to) and says so in its
peering entry once its passes in flight are done; a replica taking over from a live peer waits
for that word."""

from __future__ import annotations

import asyncio
import inspect
import logging
from datetime import UTC, datetime
from typing import Any

import kopf._core.engines.peering as kopf_peering
from fixtures_controller import CountingReconciler, FakeCache
from fixtures_operator import FakeKube

from ttsfleet.operator import metrics, peering
from ttsfleet.operator.controller import Controller, Options
from ttsfleet.operator.kinds import Kind

KOPF_LOG = logging.getLogger(peering.KOPF_PEERING_LOGGER)
PAUSING = "Pausing operations in favour of [<Peer new: priority=100>]."
RESUMING = "Resuming operations after the pause. Conflicting operators with the same priority are gone."


def test_kopf_still_announces_its_decisions_in_the_words_the_listener_knows() -> None:
    # A kopf upgrade that rewords these lines would silently bring back double acting.
    source = inspect.getsource(kopf_peering)
    assert kopf_peering.logger.name == peering.KOPF_PEERING_LOGGER
    for words in ("Pausing operations in favour of", "Pausing all operators, including self", "Resuming operations"):
        assert words in source
    assert PAUSING.startswith(peering.KOPF_PAUSING) and RESUMING.startswith(peering.KOPF_RESUMING)
    # kopf keeps fields of a peer's entry it does not know (our mark survives its keep-alives).
    assert "**_: Any" in inspect.getsource(kopf_peering.Peer.__init__)


class PeeringKube(FakeKube):
    """The peering object, patched as the API server merges a JSON merge patch."""

    def __init__(self, peers: dict[str, dict[str, Any]]) -> None:
        super().__init__()
        self.peering: dict[str, Any] = {"metadata": {"name": "p"}, "status": peers}

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.peering if kind.kind == "ClusterKopfPeering" else super().get(kind, namespace, name)

    def merge_patch(self, kind: Kind, namespace: str | None, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        for peer, fields in patch["status"].items():
            self.peering["status"].setdefault(peer, {}).update(fields)
        return self.peering


def live(priority: int, **fields: Any) -> dict[str, Any]:
    return {"priority": priority, "lifetime": 60, "lastseen": datetime.now(UTC).isoformat(), **fields}


async def settled(controller: Controller) -> None:
    for _ in range(500):
        await asyncio.sleep(0.01)
        if controller.queue.idle() and not controller._taking_over:
            return


def test_an_outranked_replica_runs_no_queued_pass_and_says_it_stopped() -> None:
    kube = PeeringKube({"old": live(5), "new": live(100)})
    reconciler = CountingReconciler(kube)
    options = Options(clusterwide=True, peering="p", identity="old", priority=5, max_workers=2)
    controller = Controller(reconciler, FakeCache(), options)  # type: ignore[arg-type]

    async def scenario() -> None:
        controller.start()
        controller.saw_event("ns")  # kopf delivers events: this replica is active
        controller.enqueue(("ns", "before"))
        await settled(controller)
        assert reconciler.passes == [("ns", "before")]

        KOPF_LOG.info(PAUSING)
        assert metrics.ACTIVE._value.get() == 0
        # An event kopf had queued before the pause, and a retry: neither may act now.
        controller.saw_event("ns")
        controller.enqueue(("ns", "queued"))
        await settled(controller)
        assert reconciler.passes == [("ns", "before")]
        assert kube.peering["status"]["old"][peering.PAUSED_MARK] is True
        await controller.stop()

    asyncio.run(scenario())
    assert not any(isinstance(h, peering.KopfPauseListener) for h in KOPF_LOG.handlers)


def test_a_replica_taking_over_from_a_live_peer_waits_until_it_says_it_stopped() -> None:
    kube = PeeringKube({"old": live(5), "new": live(100, **{peering.PAUSED_MARK: True})})
    reconciler = CountingReconciler(kube)
    options = Options(clusterwide=True, peering="p", identity="new", priority=100, max_workers=2)
    controller = Controller(reconciler, FakeCache([("ns", "x")]), options)  # type: ignore[arg-type]

    async def scenario() -> None:
        controller.start()
        KOPF_LOG.info(RESUMING)
        controller.saw_event("ns")  # kopf's fresh listing
        controller.enqueue(("ns", "x"))
        for _ in range(20):
            await asyncio.sleep(0.05)
        assert reconciler.passes == []  # the old replica may still be writing
        assert kube.peering["status"]["new"][peering.PAUSED_MARK] is False  # ours taken back first
        kube.peering["status"]["old"][peering.PAUSED_MARK] = True
        await settled(controller)
        await controller.stop()

    asyncio.run(scenario())
    assert reconciler.passes == [("ns", "x")]  # what arrived meanwhile is caught up


def test_peers_still_acting_are_live_lower_priority_ones_without_the_mark() -> None:
    now = datetime.now(UTC)
    stale = "2020-01-01T00:00:00+00:00"
    body = {
        "status": {
            "me": live(50),
            "outranked": live(10),
            "stopped": live(10, **{peering.PAUSED_MARK: True}),
            "dead": {"priority": 10, "lifetime": 60, "lastseen": stale},
            "higher": live(90),
        }
    }
    assert peering.still_acting(body, "me", 50, now) == ["outranked"]
    assert peering.still_acting(None, "me", 50, now) == []
