"""Graceful drain: on SIGTERM open streams finish, new ones are refused, the server exits."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from pathlib import Path

import pytest
from worker_support import TEST_SERVING, start_server

pytestmark = pytest.mark.worker

pytest.importorskip("tritonclient.grpc")
from ttsfleet.worker.client import Overloaded, ServerUnavailable, TtsClient  # noqa: E402

LONG_TEXT = " ".join(f"This is sentence number {i} of a long answer." for i in range(12))


def test_sigterm_drains_open_stream_then_exits(tiny_weights: Path, tmp_path: Path) -> None:
    serving = dataclasses.replace(TEST_SERVING, drain_timeout_seconds=60, max_text_chars=2_000)
    running = start_server(tiny_weights, tmp_path, serving)
    server = running.server
    try:
        chunks = []
        first = threading.Event()
        outcome: list[BaseException] = []

        def listen() -> None:
            try:
                with TtsClient(running.grpc_url) as client:
                    for chunk in client.stream(LONG_TEXT):
                        chunks.append(chunk)
                        first.set()
            except BaseException as error:  # recorded, asserted below
                outcome.append(error)
                first.set()

        listener = threading.Thread(target=listen)
        listener.start()
        assert first.wait(120), "no first chunk within 120s"
        server.process.send_signal(signal.SIGTERM)
        # Wait for Triton to say it has taken the signal (it logs that it waits for in-flight
        # requests) rather than sleeping and hoping it has.
        deadline = time.monotonic() + 60
        while "Waiting for in-flight requests" not in running.log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, "Triton never acknowledged SIGTERM"
            time.sleep(0.05)
        # Refused before it started, whatever stage of the drain Triton is in (scheduler stopping,
        # model unloading, unloaded): a FleetClient sends such a request to the next pod.
        with pytest.raises((Overloaded, ServerUnavailable)), TtsClient(running.grpc_url, timeout=30) as late:
            list(late.stream("Too late."))
        listener.join(120)
        assert not outcome, f"the open stream broke during drain: {outcome}"
        # Every sentence's audio (the worker streams within sentences: 12 or more chunks).
        assert len(chunks) >= 12 and [chunk.index for chunk in chunks] == list(range(len(chunks)))
        assert chunks[-1].final
        assert server.process.wait(60) == 0
    finally:
        server.stop()
