"""A failed wait tells what it waited for, how long, and what it saw last."""

from __future__ import annotations

import pytest

from ttsfleet.devcluster.waiting import WaitTimeout, wait_for


def test_wait_returns_the_first_truthy_result() -> None:
    answers = iter([None, 0, "ready"])
    assert wait_for(lambda: next(answers), what="x", timeout=5, interval=0) == "ready"


def test_timeout_message_names_the_condition_limit_and_last_state() -> None:
    def failing() -> None:
        raise ConnectionError("refused")

    with pytest.raises(WaitTimeout) as caught:
        wait_for(failing, what="the API server", timeout=0.2, interval=0.05, describe=lambda: "pods: 0/2")
    message = str(caught.value)
    assert "the API server" in message
    assert "0s" in message or "timed out after" in message
    assert "pods: 0/2" in message
    assert "refused" in message
