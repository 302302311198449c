"""Bounded waits that say what they waited for, and for how long, when they give up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """A bounded wait ran out; the message names the condition, the limit and the last state."""


def wait_for(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    interval: float = 0.5,
    describe: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy, at most ``timeout`` seconds.

    ``describe`` is called once on failure to add the state seen last (e.g. a pod's conditions),
    which is what a person reading a failed test needs first.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except Exception as error:  # a probe may fail while a component is still starting
            last_error = error
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    detail = ""
    if describe is not None:
        try:
            detail = f"; last state: {describe()}"
        except Exception as error:
            detail = f"; could not describe state: {error}"
    if last_error is not None:
        detail += f"; last error: {last_error!r}"
    raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
