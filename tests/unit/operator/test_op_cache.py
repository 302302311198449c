"""The watch-fed cache: what the indexes keep of each object, and what a pass reads back."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from ttsfleet.operator import cache, kinds, naming

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


def test_a_pass_reads_back_the_trimmed_object_that_the_index_keeps_compact() -> None:
    sts = _statefulset()
    stored = asyncio.run(cache.index_child(body=sts, namespace=NS, labels=sts["metadata"]["labels"]))
    fleet_body = {"apiVersion": "tts.ttsfleet.io/v1alpha1", "kind": "TTSDeployment", "metadata": {"name": FLEET}}
    fleet = asyncio.run(cache.index_fleet(body=fleet_body, namespace=NS, name=FLEET))
    indices: dict[str, Any] = {cache.FLEET_INDEX: _index([fleet]), cache.POD_INDEX: {}}
    for kind in kinds.CHILD_KINDS:
        indices[cache.child_index_id(kind)] = _index([stored]) if kind is kinds.STATEFULSET else {}

    observed = cache.Cache(indices).observe(NS, FLEET)

    expected = {**sts, "metadata": {k: v for k, v in sts["metadata"].items() if k != "managedFields"}}
    assert observed.children == [expected]
    assert observed.fleet == fleet_body and observed.pods == []
    # Each read is a fresh object: a pass may not change what the next pass reads.
    observed.children[0]["spec"]["replicas"] = 7
    assert cache.Cache(indices).observe(NS, FLEET).children[0]["spec"]["replicas"] == 2
    # Held as compact JSON, not as nested dicts (several times the size).
    (packed,) = stored.values()
    assert json.loads(packed.data) == expected
    assert sys.getsizeof(packed.data) < _deep_size(expected) / 3


def _deep_size(obj: Any) -> int:
    if isinstance(obj, dict):
        return sys.getsizeof(obj) + sum(_deep_size(k) + _deep_size(v) for k, v in obj.items())
    if isinstance(obj, list):
        return sys.getsizeof(obj) + sum(_deep_size(v) for v in obj)
    return sys.getsizeof(obj)
