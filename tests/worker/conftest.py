"""Fixtures for worker tests: tiny generated weights and a real tritonserver on loopback ports.

The server's log is kept under pytest's tmp dir and shown when a test using it fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_support import TEST_SERVING, RunningServer, start_server


@pytest.fixture(scope="session")
def tiny_weights() -> Path:
    from ttsfleet.worker.checkpoint import ensure_weights

    return ensure_weights("tiny")


@pytest.fixture(scope="session")
def triton(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("triton")
    running: RunningServer | None = None
    try:
        running = start_server(tiny_weights, workdir, TEST_SERVING)
        yield running
    except Exception:
        log = workdir / "triton.log"
        if log.exists():
            print(f"--- tritonserver log ({log}) ---\n{log.read_text()[-20000:]}")
        raise
    finally:
        if running is not None:
            running.server.stop()  # type: ignore[attr-defined]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if report.when == "call" and report.failed and "triton" in getattr(item, "fixturenames", ()):
        running = item.funcargs.get("triton")  # type: ignore[attr-defined]
        if running is not None and running.log_path.exists():
            report.sections.append(("tritonserver log (tail)", running.log_path.read_text()[-8000:]))
    return report
