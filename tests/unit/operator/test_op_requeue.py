"""Backoff for fleets whose pass failed."""

from __future__ import annotations

from ttsfleet.operator.requeue import Backoff


def test_delays_double_up_to_the_limit_and_reset_on_success() -> None:
    backoff: Backoff[str] = Backoff(first=1, limit=5)
    assert [backoff.failed("a", 0) for _ in range(5)] == [1, 2, 4, 5, 5]
    backoff.succeeded("a")
    assert backoff.pending("a") is None
    assert backoff.failed("a", 100) == 1


def test_each_failure_is_handed_out_once_when_due() -> None:
    backoff: Backoff[str] = Backoff(first=1, limit=30)
    backoff.failed("a", 0)
    backoff.failed("b", 0)
    backoff.failed("b", 0)  # b failed twice: 2 s
    assert backoff.due(0.5) == []
    assert backoff.due(1.0) == ["a"]
    assert backoff.due(1.5) == []
    assert backoff.due(2.0) == ["b"]
    assert backoff.due(10.0) == []
