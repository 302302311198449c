"""The watch-fed cache: what the indexes and streams keep of each object, and what a pass reads back."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from fixtures_streams import ScriptedKube

from ttsfleet.operator import cache, kinds, naming, streams

NS, FLEET = "team-a", "voice"


def _statefulset() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": FLEET,
            "namespace": NS,
            "uid": "u-1",
            "resourceVersion": "42",
            "labels": {naming.LABEL_DEPLOYMENT: FLEET},
            "managedFields": [{"manager": "ttsfleet-operator", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "w", "image": "i:1"}] * 3}}},
        "status": {"replicas": 2, "readyReplicas": 1},
    }


def _index(entries: list[Any]) -> dict[Any, list[Any]]:
    index: dict[Any, list[Any]] = {}
    for entry in entries:
        for key, value in entry.items():
            index.setdefault(key, []).append(value)
    return index


def _scaledobject() -> dict[str, Any]:
    meta = {"name": FLEET, "namespace": NS, "labels": {naming.LABEL_DEPLOYMENT: FLEET}, "managedFields": [{}]}
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": meta, "spec": {}}


async def _listed(kube: ScriptedKube) -> streams.Streams:
    watches = streams.Streams(kube, (), clusterwide=True)  # type: ignore[arg-type]
    watches.start(lambda *_: None, lambda *_: None)
    await watches.wait_listed()
    return watches


def test_a_pass_reads_back_the_trimmed_objects_that_the_streams_and_indexes_keep_compact() -> None:
    sts = _statefulset()
    kube = ScriptedKube(lists={"statefulsets": [([sts], "5")]})
    scaled = _scaledobject()
    stored = asyncio.run(cache.index_child(body=scaled, namespace=NS, labels=scaled["metadata"]["labels"]))
    fleet_body = {"apiVersion": "tts.ttsfleet.io/v1alpha1", "kind": "TTSDeployment", "metadata": {"name": FLEET}}
    fleet = asyncio.run(cache.index_fleet(body=fleet_body, namespace=NS, name=FLEET))
    # kopf hands the indexes of the kinds it watches: the fleets and the add-ons' children.
    indices: dict[str, Any] = {cache.FLEET_INDEX: _index([fleet])}
    for kind in kinds.OPTIONAL_KINDS:
        indices[cache.child_index_id(kind)] = _index([stored]) if kind is kinds.SCALEDOBJECT else {}
    watches = asyncio.run(_listed(kube))
    watches.stop()
    kube.close()

    observed = cache.Cache(indices, watches).observe(NS, FLEET)

    expected = {**sts, "metadata": {k: v for k, v in sts["metadata"].items() if k != "managedFields"}}
    assert sorted(observed.children, key=lambda c: c["kind"]) == [
        {**scaled, "metadata": {k: v for k, v in scaled["metadata"].items() if k != "managedFields"}},
        expected,
    ]
    assert observed.fleet == fleet_body and observed.pods == []
    # Each read is a fresh object: a pass may not change what the next pass reads.
    next(c for c in observed.children if c["kind"] == "StatefulSet")["spec"]["replicas"] = 7
    again = cache.Cache(indices, watches).observe(NS, FLEET).children
    assert next(c for c in again if c["kind"] == "StatefulSet")["spec"]["replicas"] == 2
    # Held as compact JSON, not as nested dicts (several times the size).
    (packed,) = watches.children((NS, FLEET))
    assert json.loads(packed.data) == expected
    assert sys.getsizeof(packed.data) < _deep_size(expected) / 3


def _deep_size(obj: Any) -> int:
    if isinstance(obj, dict):
        return sys.getsizeof(obj) + sum(_deep_size(k) + _deep_size(v) for k, v in obj.items())
    if isinstance(obj, list):
        return sys.getsizeof(obj) + sum(_deep_size(v) for v in obj)
    return sys.getsizeof(obj)
