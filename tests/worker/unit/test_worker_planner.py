from __future__ import annotations

import pytest

from ttsfleet.worker.planner import Item, plan

pytestmark = pytest.mark.unit


def test_concurrent_single_sentences_share_one_call() -> None:
    steps = plan(["a"] * 5, [1] * 5, max_batch=8)
    assert len(steps) == 1 and len(steps[0].items) == 5


def test_calls_never_exceed_max_batch_and_never_mix_voices() -> None:
    voices = ["a", "b", "a", "b", "a"]
    steps = plan(voices, [3, 2, 4, 1, 2], max_batch=3)
    seen = []
    for step in steps:
        assert 0 < len(step.items) <= 3
        assert {voices[item.job] for item in step.items} == {step.voice}
        seen.extend(step.items)
    assert sorted(seen, key=lambda item: (item.job, item.sentence)) == [
        Item(job, sentence) for job, count in enumerate([3, 2, 4, 1, 2]) for sentence in range(count)
    ]


def test_each_request_sentences_come_in_order() -> None:
    steps = plan(["a", "a"], [6, 2], max_batch=4)
    order: dict[int, list[int]] = {0: [], 1: []}
    for step in steps:
        for item in step.items:
            order[item.job].append(item.sentence)
    assert order == {0: list(range(6)), 1: [0, 1]}


def test_first_call_takes_one_sentence_per_request_so_first_audio_is_fast() -> None:
    steps = plan(["a"], [7], max_batch=8)
    assert [len(step.items) for step in steps] == [1, 2, 4]


def test_zero_batch_is_rejected() -> None:
    with pytest.raises(ValueError):
        plan(["a"], [1], max_batch=0)
