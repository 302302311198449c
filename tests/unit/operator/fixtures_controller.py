"""Stand-ins for the controller loop's collaborators: a cache that knows a fixed list of fleets,
and a reconciler that only records which fleets it was asked to reconcile."""

from __future__ import annotations

from fixtures_operator import FakeKube

from ttsfleet.operator.cache import Observed
from ttsfleet.operator.reconcile import Reconciler


class FakeCache:
    def __init__(self, fleets: list[tuple[str, str]] | None = None) -> None:
        self._fleets = fleets or []

    def fleets(self) -> list[tuple[str, str]]:
        return list(self._fleets)

    def observe(self, namespace: str, name: str) -> Observed:
        return Observed(fleet=None)

    async def wait_listed(self) -> None:
        return None


class CountingReconciler(Reconciler):
    def __init__(self, kube: FakeKube) -> None:
        super().__init__(kube)  # type: ignore[arg-type]
        self.passes: list[tuple[str, str]] = []

    def reconcile(self, namespace: str, name: str, observed: Observed | None = None, others_wait: bool = False) -> None:
        self.passes.append((namespace, name))
