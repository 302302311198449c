"""The operator's own watch streams: what reaches the handlers and the cache across reconnects
and an expired resourceVersion (scripted API events; e2e runs the streams on a real API server)."""

from __future__ import annotations

import asyncio
from typing import Any

from fixtures_streams import ScriptedKube

from ttsfleet.operator import naming, streams
from ttsfleet.operator.kinds import STATEFULSET

NS = "team-a"
FEED = streams.CHILD_FEEDS[0]
assert FEED.kind is STATEFULSET


def sts(name: str, fleet: str, rv: str, replicas: int = 1, namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "resourceVersion": rv,
            "labels": {naming.LABEL_DEPLOYMENT: fleet},
            "managedFields": [{"manager": "x"}],
        },
        "spec": {"replicas": replicas},
    }


def event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": obj}


async def run_stream(kube: ScriptedKube, in_scope: Any = lambda _: True) -> tuple[streams.Stream, list[Any]]:
    """Run one stream until the scripted API has sent everything and the loop has taken it in."""
    seen: list[tuple[str, str, str, str]] = []

    def handler(kind: str, namespace: str, fleet: str, obj: dict[str, Any]) -> None:
        seen.append((kind, namespace, fleet, obj["metadata"]["name"]))

    loop = asyncio.get_running_loop()
    stream = streams.Stream(kube, FEED, None, in_scope, loop, handler, lambda _: None)  # type: ignore[arg-type]
    stream.start()
    try:
        # A guard against a hang, not a budget.
        assert await asyncio.to_thread(kube.parked.wait, 30), "the stream never reached the end of the script"
        # The stream hands events over before it watches again: they are ahead of this one.
        drained = loop.create_future()
        loop.call_soon_threadsafe(drained.set_result, None)
        await drained
    finally:
        stream.stop()
        kube.close()
    return stream, seen


def test_a_watch_goes_on_from_the_last_version_and_an_expired_one_is_listed_again_with_what_changed() -> None:
    kube = ScriptedKube(
        lists={
            "statefulsets": [
                ([sts("a", "f1", "1"), sts("b", "f2", "2")], "10"),
                # After the 410: b was deleted and c created while no watch was running.
                ([sts("a", "f1", "11", replicas=2), sts("c", "f1", "14")], "15"),
            ]
        },
        watches={
            "statefulsets": [
                [event("MODIFIED", sts("a", "f1", "11", replicas=2)), event("BOOKMARK", sts("a", "f1", "12"))],
                ConnectionResetError("the API server went away"),
                [event("ERROR", {"kind": "Status", "code": 410, "reason": "Expired"})],
            ]
        },
    )
    stream, seen = asyncio.run(run_stream(kube))

    # The first listing is no event (the fleets' own listing runs every fleet); the edit is; the
    # relist hands over what the missed events would have said, and nothing about the unchanged a.
    assert seen == [
        ("MODIFIED", NS, "f1", "a"),
        ("DELETED", NS, "f2", "b"),
        ("ADDED", NS, "f1", "c"),
    ]
    # A bookmark moves the version on; a dropped connection resumes there; a 410 lists again.
    assert kube.watched_from == ["10", "12", "12", "15"]
    assert kube.listings == ["statefulsets", "statefulsets"]
    assert stream.relists == 1
    kept = {key: {name: packed.unpack() for name, packed in named.items()} for key, named in stream.objects.items()}
    assert set(kept) == {(NS, "f1")}
    assert kept[(NS, "f1")]["a"]["spec"]["replicas"] == 2
    assert "managedFields" not in kept[(NS, "f1")]["c"]["metadata"]


def test_a_deleted_or_relabelled_child_leaves_its_fleet_and_objects_out_of_scope_never_enter() -> None:
    unlabelled = sts("c", "f1", "16")
    del unlabelled["metadata"]["labels"][naming.LABEL_DEPLOYMENT]
    kube = ScriptedKube(
        lists={"statefulsets": [([sts("a", "f1", "1"), sts("x", "f9", "2", namespace="kube-system")], "10")]},
        watches={
            "statefulsets": [
                [
                    event("ADDED", sts("b", "f1", "11")),
                    event("ADDED", sts("y", "f9", "12", namespace="kube-system")),
                    event("DELETED", sts("a", "f1", "13")),
                    event("ADDED", sts("c", "f1", "14")),
                    # Hand edits of the label that names the fleet: moved to another, then removed.
                    event("MODIFIED", sts("b", "f2", "15")),
                    event("MODIFIED", unlabelled),
                ]
            ]
        },
    )
    stream, seen = asyncio.run(run_stream(kube, in_scope=lambda ns: ns != "kube-system"))

    assert seen == [
        ("ADDED", NS, "f1", "b"),
        ("DELETED", NS, "f1", "a"),
        ("ADDED", NS, "f1", "c"),
        ("DELETED", NS, "f1", "b"),  # f1 lost b: its next pass finds it missing
        ("MODIFIED", NS, "f2", "b"),
        ("DELETED", NS, "f1", "c"),
    ]
    assert {key: set(named) for key, named in stream.objects.items()} == {(NS, "f2"): {"b"}}


def test_exact_namespaces_get_a_stream_each_and_globs_one_filtered_cluster_wide_stream() -> None:
    assert streams.scopes([], clusterwide=True)[0] == [None]
    where, in_scope = streams.scopes(["team-b", "team-a"], clusterwide=False)
    assert where == ["team-a", "team-b"]
    # kopf's patterns, as kopf reads them: a namespace served by any one of them is kept.
    where, in_scope = streams.scopes(["team-*,!team-x", "ops"], clusterwide=False)
    assert where == [None]
    assert in_scope("team-a") and in_scope("ops")
    assert not in_scope("team-x") and not in_scope("other")
    assert streams.Streams.connections(["team-a", "team-b"], clusterwide=False) == 2 * (len(streams.CHILD_FEEDS) + 1)
