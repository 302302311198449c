"""The supervisor's watch over Triton's python-backend stubs, with a stand-in /proc and server: a
stub that dies (or lingers as a zombie) ends the worker at once with the reason; stubs that go
away because the supervisor itself reloads the model, or because the container is stopping, do
not. The real Triton is in tests/worker/test_worker_faults.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ttsfleet.contract import ServingConfig
from ttsfleet.worker.client import Overloaded, _rejection
from ttsfleet.worker.supervisor import EXIT_FAILED, STUB_BINARY, Supervisor, backend_stubs, process_alive

pytestmark = pytest.mark.unit

SERVING = ServingConfig()
TRITON_PID = 100


def _proc_entry(proc: Path, pid: int, ppid: int, argv: list[str], state: str = "S") -> None:
    entry = proc / str(pid)
    entry.mkdir(parents=True)
    # The command name in parentheses may hold spaces and parentheses of its own.
    (entry / "stat").write_text(f"{pid} (weird ) name) {state} {ppid} 1 1 0 -1\n")
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def _stub_argv(model: str) -> list[str]:
    return [f"/w/backends/python/{STUB_BINARY}", f"/w/models/{model}/1/model.py", "shm-region", "1048576"]


def test_stubs_are_the_live_children_of_tritonserver_running_the_stub(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    _proc_entry(proc, 201, TRITON_PID, _stub_argv("chattts"))
    _proc_entry(proc, 202, TRITON_PID, _stub_argv("chattts_unary"))
    _proc_entry(proc, 203, TRITON_PID, _stub_argv("chattts"), state="Z")  # died, never reaped
    _proc_entry(proc, 204, 999, _stub_argv("chattts"))  # another server's stub
    _proc_entry(proc, 205, TRITON_PID, ["/usr/bin/something-else"])
    (proc / "self").mkdir()
    assert backend_stubs(TRITON_PID, proc) == {201: "chattts", 202: "chattts_unary"}


@dataclass
class FakeServer:
    metrics_url: str = "http://127.0.0.1:1/metrics"
    actions: list[str] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        return SERVING.model_name

    def wait_for(self, path: str, timeout: float, interval: float = 0.05) -> None:
        self.actions.append("wait")

    def load_model(self, timeout: float) -> None:
        self.actions.append("load")

    def unload_model(self, name: str, timeout: float = 60.0) -> None:
        self.actions.append(f"unload {name}")

    def stop(self, timeout: float | None = None) -> int | None:
        self.actions.append(f"stop grace={timeout}")
        return -9


def _healthy(_url: str) -> str:
    return 'tts_engine_healthy{model="chattts"} 1\n'


def test_a_dead_stub_kills_tritonserver_at_once_and_leaves_the_reason(tmp_path: Path) -> None:
    live = {201: "chattts", 202: "chattts_unary"}
    server = FakeServer()
    log = tmp_path / "termination-log"
    watch = Supervisor(server, SERVING, log, metrics=_healthy, stubs=lambda: dict(live))
    assert watch.load()
    assert watch.watched_stubs == {201: "chattts", 202: "chattts_unary"}
    assert watch.check()  # all there: nothing happens
    assert server.actions == ["wait", "load"]
    del live[201]
    assert not watch.check()
    assert server.actions[-1] == "stop grace=0"  # no drain: the dead stub's streams get no answer
    reason = log.read_text()
    assert "stub of model chattts (pid 201) died" in reason and "restarting the container" in reason
    assert watch.exit_code(-9) == EXIT_FAILED


def test_stubs_replaced_by_the_supervisors_own_reload_are_not_a_death(tmp_path: Path) -> None:
    generation = [{201: "chattts"}]
    pages = iter(['tts_engine_healthy{model="chattts"} 0\n', 'tts_engine_healthy{model="chattts"} 1\n'])
    server = FakeServer()

    def stubs() -> dict[int, str]:
        return dict(generation[0])

    watch = Supervisor(server, SERVING, tmp_path / "log", metrics=lambda _url: next(pages), stubs=stubs)
    assert watch.load()
    original_load = server.load_model

    def reload(timeout: float) -> None:  # the reload forks a fresh stub
        original_load(timeout)
        generation[0] = {301: "chattts"}

    server.load_model = reload  # type: ignore[method-assign]
    assert watch.check()  # unhealthy engine: unloaded and loaded again
    assert watch.watched_stubs == {301: "chattts"}
    assert watch.check() and watch.failure is None


def test_stubs_going_away_while_the_container_stops_are_not_a_failure(tmp_path: Path) -> None:
    live = {201: "chattts"}
    watch = Supervisor(FakeServer(), SERVING, tmp_path / "log", metrics=_healthy, stubs=lambda: dict(live))
    assert watch.load()
    watch.stop()  # SIGTERM: Triton finalizes the models, their stubs exit
    live.clear()
    assert watch.check() and watch.failure is None


def test_a_stub_dead_when_tritonserver_exits_on_its_own_is_the_reason(tmp_path: Path) -> None:
    """Under load Triton 2.51 aborts (exit 250) when a stub dies holding a lock, before the next
    poll sees the stub gone (seen in the real-Triton test): the stub is still named, the exit is a
    failure. Once tritonserver is gone its stubs are nobody's children: liveness is by pid."""
    proc = tmp_path / "proc"
    _proc_entry(proc, 202, 1, _stub_argv("chattts_unary"))  # reparented, still exiting
    _proc_entry(proc, 203, 1, _stub_argv("chattts_unary"), state="Z")
    live = {201: "chattts", 202: "chattts_unary"}
    log = tmp_path / "termination-log"
    watch = Supervisor(
        FakeServer(),
        SERVING,
        log,
        metrics=_healthy,
        stubs=lambda: dict(live),
        alive=lambda pid: process_alive(pid, proc),
    )
    assert watch.load()
    assert watch.exit_code(250) == EXIT_FAILED
    reason = log.read_text()
    assert "stub of model chattts (pid 201) died" in reason and "chattts_unary" not in reason, reason
    assert not process_alive(203, proc) and process_alive(202, proc)


def test_tritonserver_exiting_on_its_own_with_its_stubs_alive_passes_its_code_through(tmp_path: Path) -> None:
    watch = Supervisor(FakeServer(), SERVING, tmp_path / "log", metrics=_healthy, stubs=lambda: {201: "chattts"})
    assert watch.load()
    watch.alive = lambda _pid: True
    assert watch.exit_code(137) == 137 and watch.failure is None


def test_triton_refusing_a_request_for_a_dead_stub_is_a_refusal_another_replica_takes() -> None:
    # Triton 2.51's exact words for a request sent after the stub died (seen on the real server).
    assert isinstance(_rejection("Stub process 'chattts_0_0' is not healthy."), Overloaded)
