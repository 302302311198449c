"""The stamp on an applied child: the hash of the desired object without the stamp itself, so
that a new operator version computing it differently would re-apply every child of every fleet."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ttsfleet.operator import applied

pytestmark = pytest.mark.unit

CHILD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "tts", "namespace": "team", "labels": {"app": "tts"}},
    "data": {"config.pbtxt": "max_batch_size: 8"},
}


def test_the_stamp_is_the_hash_of_the_object_without_it_and_the_input_is_left_alone() -> None:
    original = copy.deepcopy(CHILD)
    stamped = applied.stamp(CHILD)
    assert original == CHILD
    assert stamped["metadata"]["annotations"] == {applied.ANNOTATION: applied.digest(CHILD)}
    # Stamping again (a live child carries the old stamp) gives the same stamp.
    assert applied.stamp(stamped) == stamped


def test_other_annotations_are_kept_and_hashed() -> None:
    child = copy.deepcopy(CHILD)
    child["metadata"]["annotations"] = {"team/owner": "speech", applied.ANNOTATION: "stale"}
    stamped = applied.stamp(child)
    without = copy.deepcopy(child)
    without["metadata"]["annotations"] = {"team/owner": "speech"}
    assert stamped["metadata"]["annotations"] == {"team/owner": "speech", applied.ANNOTATION: applied.digest(without)}
    assert applied.stamp_of(stamped) != applied.stamp_of(applied.stamp(CHILD))
