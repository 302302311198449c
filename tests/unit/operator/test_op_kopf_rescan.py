"""The operator's one use of kopf internals: after discovery caught up with an add-on's CRD,
kopf rescans the group and starts watching and indexing the kind (checked against the pinned
kopf, with discovery answered here)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import kopf
import pytest
from kopf._cogs.clients import scanning
from kopf._cogs.structs import references

from ttsfleet.operator import handlers, kinds, kopf_rescan


def test_a_rescan_makes_kopf_watch_and_index_the_new_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    servicemonitors = references.Resource(
        group=kinds.SERVICEMONITOR.group,
        version="v1",
        plural=kinds.SERVICEMONITOR.plural,
        kind=kinds.SERVICEMONITOR.kind,
        namespaced=True,
        verbs=["list", "watch", "get", "patch"],
    )
    asked: list[Collection[str] | None] = []

    async def scan(*, groups: Collection[str] | None = None, **_: Any) -> Collection[references.Resource]:
        asked.append(groups)
        return {servicemonitors}

    monkeypatch.setattr(scanning, "scan_resources", scan)
    insights = kopf_rescan.new_insights()
    assert servicemonitors not in insights.watched_resources

    asyncio.run(
        kopf_rescan.rescan_group(
            kinds.SERVICEMONITOR.group,
            settings=kopf.OperatorSettings(),
            registry=handlers.build_registry(),
            insights=insights,
        )
    )
    assert asked == [{"monitoring.coreos.com"}]
    assert servicemonitors in insights.watched_resources  # its child watch starts
    assert servicemonitors in insights.indexed_resources  # and its index fills
