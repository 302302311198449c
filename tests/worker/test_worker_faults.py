"""Faults inside the worker, against the real ``ttsfleet-worker`` entry point and its tritonserver.

The python backend runs the streaming model in a stub process. Killed mid-stream (as the OOM
killer or a crash in a native library would), Triton 2.51 answers its open streams never again,
keeps the model READY and does not restart the stub (seen on this server; see
``ttsfleet.worker.supervisor``). The worker must turn that into errors clients see and a container
Kubernetes restarts. Prints what it injected and measured (figures, not budgets)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from fleet_faults import report
from worker_support import SERVER_ENV, TEST_SERVING

from ttsfleet import contract
from ttsfleet.contract import ServingConfig

pytestmark = pytest.mark.worker

pytest.importorskip("tritonclient.grpc")
from ttsfleet.worker.client import ServerUnavailable, TtsClient  # noqa: E402
from ttsfleet.worker.server import free_port  # noqa: E402
from ttsfleet.worker.supervisor import EXIT_FAILED, STUB_BINARY  # noqa: E402

STREAMS = 3
SENTENCES = 40
LONG_TEXT = " ".join(f"This is sentence number {i} of a long answer." for i in range(SENTENCES))
SERVING = dataclasses.replace(TEST_SERVING, max_text_chars=4_000)
# Hang guards, not speed budgets: what bounds a client's wait is the client's own deadline
# (TtsClient's per-answer timeout, a product setting); these only keep a broken run from hanging.
HANG_GUARD_S = 600


def _stub_pids(workdir: Path, model: str | None = None) -> list[int]:
    """Live stubs of this worker's Triton (by its model repository path), optionally one model's."""
    marker = f"{workdir}/models/{model}/" if model else f"{workdir}/models/"
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if argv[0].endswith(STUB_BINARY.encode()) and len(argv) > 1 and marker in argv[1].decode() and state != "Z":
            found.append(int(entry.name))
    return found


def _model_ready(http_port: int) -> bool:
    try:
        url = f"http://127.0.0.1:{http_port}{contract.model_ready_path()}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait(what: str, done: Callable[[], bool], worker: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not done():
        if worker.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:]
            raise AssertionError(f"the worker exited with {worker.returncode} before {what}:\n{tail}")
        assert time.monotonic() < deadline, f"no {what} after {HANG_GUARD_S}s (hang guard)"
        time.sleep(0.1)


@dataclasses.dataclass(frozen=True)
class Launched:
    process: subprocess.Popen[bytes]
    log: Path
    http_port: int
    grpc_port: int
    workdir: Path
    termination: Path


def _launch(tiny_weights: Path, tmp_path: Path, serving: ServingConfig) -> Launched:
    """``ttsfleet-worker`` as a pod runs it (its own entry point, signal handling and supervisor)."""
    serving_dir = tmp_path / "serving"
    serving_dir.mkdir()
    (serving_dir / contract.SERVING_JSON_FILE).write_text(serving.to_json())
    (serving_dir / contract.TRITON_CONFIG_FILE).write_text(contract.render_triton_config(serving))
    workdir = tmp_path / "work"
    termination = tmp_path / "termination-log"
    http_port, grpc_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "ttsfleet.worker.server",
        "--serving-config", str(serving_dir), "--model-cache", str(tiny_weights),
        "--workdir", str(workdir), "--host", "127.0.0.1",
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(free_port()),
        "--termination-log", str(termination),
    ]  # fmt: skip
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(command, env={**os.environ, **SERVER_ENV}, stdout=out, stderr=subprocess.STDOUT)
    return Launched(worker, log, http_port, grpc_port, workdir, termination)


def test_killed_backend_stub_ends_every_open_stream_with_an_error_and_the_container(
    tiny_weights: Path, tmp_path: Path
) -> None:
    launched = _launch(tiny_weights, tmp_path, SERVING)
    worker, log, http_port, grpc_port = launched.process, launched.log, launched.http_port, launched.grpc_port
    workdir, termination = launched.workdir, launched.termination
    try:
        # The positive signal that the launcher watches the stubs: its own "loaded" line.
        _wait("model loaded", lambda: "model loaded and warmed up" in log.read_text(errors="replace"), worker, log)
        assert _model_ready(http_port)
        stubs = _stub_pids(workdir, contract.MODEL_NAME)
        assert len(stubs) == 1, stubs

        chunks = [0] * STREAMS
        outcomes: list[BaseException | None] = [None] * STREAMS
        ended_at = [0.0] * STREAMS
        first = [threading.Event() for _ in range(STREAMS)]

        def listen(index: int) -> None:
            try:
                with TtsClient(f"127.0.0.1:{grpc_port}") as client:  # the product's default deadline
                    for _chunk in client.stream(LONG_TEXT):
                        chunks[index] += 1
                        first[index].set()
            except BaseException as error:  # recorded, asserted below
                outcomes[index] = error
            finally:
                ended_at[index] = time.monotonic()
                first[index].set()

        listeners = [threading.Thread(target=listen, args=(i,), daemon=True) for i in range(STREAMS)]
        for thread in listeners:
            thread.start()
        for index, event in enumerate(first):
            assert event.wait(HANG_GUARD_S), f"stream {index} got no first chunk"
        assert all(outcome is None for outcome in outcomes), outcomes  # all mid-stream

        os.kill(stubs[0], signal.SIGKILL)
        killed = time.monotonic()
        for thread in listeners:
            thread.join(HANG_GUARD_S)
            assert not thread.is_alive(), "a client stream hung"
        # Every stream ended with a transport error (the server went away), none in silence:
        # not the client's inactivity deadline, not a normal end.
        for index, outcome in enumerate(outcomes):
            assert isinstance(outcome, ServerUnavailable), (index, repr(outcome))
            assert chunks[index] < SENTENCES

        exit_code = worker.wait(HANG_GUARD_S)
        exited = time.monotonic()
        assert exit_code == EXIT_FAILED, exit_code
        reason = termination.read_text()
        # Named whether the supervisor's poll saw it first or Triton aborted first (exit 250 under
        # load): then every stub already gone by the time tritonserver was reaped is named.
        assert f"model {contract.MODEL_NAME} (pid {stubs[0]})" in reason and "died" in reason, reason
        assert reason in log.read_text(errors="replace")  # and in the container log
        # Nothing of it is left behind: every other stub follows its tritonserver.
        _wait_gone(workdir)
        report(
            "stub-kill",
            streams=STREAMS,
            chunks_before_error=chunks,
            stream_errors_after_kill_s=[round(at - killed, 2) for at in ended_at],
            worker_exit_after_kill_s=round(exited - killed, 2),
            exit_code=exit_code,
        )
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(60)
        for pid in _stub_pids(workdir):
            os.kill(pid, signal.SIGKILL)


def _wait_gone(workdir: Path) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while _stub_pids(workdir):
        assert time.monotonic() < deadline, f"stubs left behind: {_stub_pids(workdir)}"
        time.sleep(0.1)


def test_sigterm_finishes_the_open_stream_then_exits_although_an_idle_client_stream_stays_open(
    tiny_weights: Path, tmp_path: Path
) -> None:
    """A pod being deleted: one client is mid-stream, another holds its idle gRPC stream open for
    its next request (as TtsClient and FleetClient do). Triton alone would keep the streaming
    model loaded for the idle stream until its exit timeout (the pod's whole drain period, on
    every rollout); the worker must finish the open stream and then exit 0 by itself."""
    serving = dataclasses.replace(SERVING, drain_timeout_seconds=HANG_GUARD_S)
    launched = _launch(tiny_weights, tmp_path, serving)
    worker, log = launched.process, launched.log
    url = f"127.0.0.1:{launched.grpc_port}"
    idle = TtsClient(url)
    try:
        _wait("model loaded", lambda: "model loaded and warmed up" in log.read_text(errors="replace"), worker, log)
        assert list(idle.stream("Hello."))[-1].final  # its stream stays open, idle, from here on

        chunks: list[int] = []
        finals: list[bool] = []
        outcome: list[BaseException] = []
        first = threading.Event()

        def listen() -> None:
            try:
                with TtsClient(url) as client:
                    for chunk in client.stream(" ".join(LONG_TEXT.split(". ")[:6])):
                        chunks.append(chunk.index)
                        finals.append(chunk.final)
                        first.set()
            except BaseException as error:  # recorded, asserted below
                outcome.append(error)
                first.set()

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        assert first.wait(HANG_GUARD_S), "no first chunk"
        worker.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        listener.join(HANG_GUARD_S)
        assert not listener.is_alive(), f"the open stream never ended after SIGTERM ({len(chunks)} chunks)"
        assert not outcome, f"the open stream broke during the drain: {outcome}"
        # The whole stream, to its final chunk (how many chunks six sentences make depends on how
        # the worker groups them into calls, which depends on timing: 5 on a loaded machine).
        assert chunks == list(range(len(chunks))) and finals and finals[-1] and not any(finals[:-1]), (
            chunks,
            finals,
        )
        stream_done = time.monotonic()

        exit_code = worker.wait(HANG_GUARD_S)
        exited = time.monotonic()
        text = log.read_text(errors="replace")
        # The worker ended the drain itself, not Triton's exit timeout (nor a crash after it).
        assert "drained: no request left open" in text, text[-3000:]
        assert "Exit timeout expired" not in text
        assert exit_code == 0, (exit_code, text[-3000:])
        report(
            "sigterm-with-idle-stream",
            open_stream_chunks=len(chunks),
            open_stream_done_after_sigterm_s=round(stream_done - signalled, 2),
            worker_exit_after_sigterm_s=round(exited - signalled, 2),
            drain_period_s=serving.drain_timeout_seconds,
            exit_code=exit_code,
        )
    finally:
        idle.close()
        if worker.poll() is None:
            worker.kill()
            worker.wait(60)
        for pid in _stub_pids(launched.workdir):
            os.kill(pid, signal.SIGKILL)
