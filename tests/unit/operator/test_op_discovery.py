"""Following an add-on's CRD into discovery: what the CRD says discovery should list, and a
follower that acts once discovery agrees (the API server lists a new kind a moment after the
CRD's Established event), or after a limit, and only for the CRD's newest event."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ttsfleet.operator import discovery, kinds
from ttsfleet.operator.kube import Kube

SM = kinds.SERVICEMONITOR


def crd(*, established: bool = True, versions: tuple[tuple[str, bool], ...] = (("v1", True),)) -> dict[str, Any]:
    return {
        "metadata": {"name": SM.crd_name},
        "spec": {"group": SM.group, "versions": [{"name": n, "served": s} for n, s in versions]},
        "status": {"conditions": [{"type": "Established", "status": "True" if established else "False"}]},
    }


def test_discovery_should_list_a_kind_whose_crd_is_established_and_serves_its_version() -> None:
    assert discovery.expected_served(SM, crd())
    assert not discovery.expected_served(SM, None)  # deleted
    assert not discovery.expected_served(SM, crd(established=False))  # names not accepted yet
    assert not discovery.expected_served(SM, crd(versions=(("v1alpha1", True),)))  # not our version
    assert not discovery.expected_served(SM, crd(versions=(("v1", False),)))  # version not served
    terminating = crd()
    terminating["metadata"]["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    assert not discovery.expected_served(SM, terminating)


class LaggingDiscovery:
    """Discovery that lists the kind from a given look on, and stops on another (None: never)."""

    def __init__(self, lists_from: int | None, drops_from: int | None = None) -> None:
        self.lists_from = lists_from
        self.drops_from = drops_from
        self.looks = 0

    def __call__(self, kind: kinds.Kind) -> bool:
        self.looks += 1
        listed = self.lists_from is not None and self.looks >= self.lists_from
        return listed and not (self.drops_from is not None and self.looks >= self.drops_from)


NOTHING = object()


def follow(
    events: list[dict[str, Any] | None],
    source: Callable[[kinds.Kind], bool],
    *,
    listed: Any = NOTHING,
    limit: float = 60.0,
) -> list[discovery.Agreement]:
    """Agreements acted on after ``events``; ``listed``: the CRD in the initial listing."""
    agreements: list[discovery.Agreement] = []

    async def agreed(agreement: discovery.Agreement) -> None:
        agreements.append(agreement)

    async def run() -> None:
        follower = discovery.DiscoveryFollower(source, agreed, limit=limit, first_delay=0.001, max_delay=0.002)
        if listed is not NOTHING:
            follower.note(SM, listed)
        for event in events:
            follower.follow(SM, event)
        await follower.idle()

    asyncio.run(run())
    return agreements


def test_a_new_crd_is_acted_on_once_discovery_lists_it_not_at_its_event() -> None:
    source = LaggingDiscovery(lists_from=4)
    [agreement] = follow([crd()], source)
    assert source.looks == 4
    assert (agreement.served, agreement.agreed) == (True, True)


def test_a_crd_not_yet_established_changes_nothing_until_it_is() -> None:
    source = LaggingDiscovery(lists_from=2)
    assert follow([crd(established=False)], source) == []  # discovery agrees: nothing served
    source = LaggingDiscovery(lists_from=3)
    [agreement] = follow([crd(established=False), crd()], source)
    assert (agreement.served, agreement.agreed) == (True, True)


def test_a_deleted_crd_is_acted_on_once_discovery_drops_it() -> None:
    source = LaggingDiscovery(lists_from=1, drops_from=3)  # still listed on the first two looks
    [agreement] = follow([None], source, listed=crd())
    assert source.looks == 3
    assert (agreement.served, agreement.agreed) == (False, True)


def test_an_edit_of_an_installed_crd_changes_nothing() -> None:
    source = LaggingDiscovery(lists_from=1)
    assert follow([crd(), crd()], source, listed=crd()) == []
    assert source.looks >= 1  # it did look


def test_only_the_newest_event_of_a_crd_counts() -> None:
    # Installed, then deleted before discovery listed it: nothing was ever served, nothing to do.
    source = LaggingDiscovery(lists_from=None)
    assert follow([crd(), None], source) == []
    # Deleted, then installed again before discovery dropped it: still served, nothing to do.
    source = LaggingDiscovery(lists_from=1)
    assert follow([None, crd()], source, listed=crd()) == []


def test_discovery_that_never_catches_up_is_believed_after_the_limit() -> None:
    assert follow([crd()], LaggingDiscovery(lists_from=None), limit=0.01) == []  # not served, as before
    assert follow([None], LaggingDiscovery(lists_from=1), listed=crd(), limit=0.01) == []  # still served


def test_discovery_that_cannot_be_asked_leaves_the_crd_to_be_believed_after_the_limit() -> None:
    def refused(kind: kinds.Kind) -> bool:
        raise ConnectionRefusedError("an API server that is away")

    [agreement] = follow([crd()], refused, limit=0.01)
    assert (agreement.served, agreement.agreed) == (True, False)


def test_a_refused_look_is_retried_like_a_stale_one() -> None:
    looks = 0

    def refused_once(kind: kinds.Kind) -> bool:
        nonlocal looks
        looks += 1
        if looks == 1:
            raise ConnectionRefusedError("the API server restarts")
        return True

    [agreement] = follow([crd()], refused_once)
    assert looks == 2
    assert (agreement.served, agreement.agreed) == (True, True)


def test_a_discovery_answer_older_than_a_crd_event_is_not_cached() -> None:
    class RacingKube(Kube):
        """The CRD event (forget_served) lands while the first look is on its way."""

        looks = 0

        def discover(self, kind: kinds.Kind) -> bool:
            self.looks += 1
            if self.looks == 1:
                self.forget_served()
                return False  # what discovery said before the CRD existed
            return True

    kube = RacingKube(None)  # type: ignore[arg-type]
    assert kube.served(SM) is False
    assert kube.served(SM) is True  # asked again, not the stale answer from the cache
    assert kube.served(SM) is True
    assert kube.looks == 2  # a fresh answer is cached


def test_an_expired_answer_is_asked_for_once_when_every_worker_needs_it() -> None:
    import threading

    class SlowKube(Kube):
        looks = 0
        answering = threading.Event()

        def discover(self, kind: kinds.Kind) -> bool:
            self.looks += 1
            self.answering.wait(5)  # every other worker asks while this request is on its way
            return True

    kube = SlowKube(None)  # type: ignore[arg-type]
    answers: list[bool] = []
    workers = [threading.Thread(target=lambda: answers.append(kube.served(SM))) for _ in range(8)]
    for worker in workers:
        worker.start()
    kube.answering.set()
    for worker in workers:
        worker.join()
    assert answers == [True] * 8
    assert kube.looks == 1
