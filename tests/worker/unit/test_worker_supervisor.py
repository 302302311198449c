"""The launcher's supervisor with a stand-in server: fail fast on load, reload an unhealthy
engine, give up (exit non-zero) when reloads do not help. The real process is covered in
tests/worker/test_worker_fail_fast.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ttsfleet import contract
from ttsfleet.contract import ServingConfig
from ttsfleet.worker import supervisor
from ttsfleet.worker.supervisor import DRAINED_LOOKS, EXIT_FAILED, Supervisor, engine_healthy, nothing_open

pytestmark = pytest.mark.unit

SERVING = ServingConfig()


@dataclass
class FakeServer:
    metrics_url: str = "http://127.0.0.1:1/metrics"
    load_error: str | None = None
    actions: list[str] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        return SERVING.model_name

    def wait_for(self, path: str, timeout: float, interval: float = 0.05) -> None:
        self.actions.append(f"wait {path}")

    def load_model(self, timeout: float) -> None:
        self.actions.append("load")
        if self.load_error:
            raise RuntimeError(self.load_error)

    def unload_model(self, name: str, timeout: float = 60.0) -> None:
        self.actions.append(f"unload {name}")

    def stop(self, timeout: float | None = None) -> int | None:
        self.actions.append("kill" if timeout == 0 else "stop")
        self.stopped = True
        return 0

    stopped: bool = False

    @property
    def running(self) -> bool:
        return not self.stopped


def _page(healthy: int) -> str:
    return f'# TYPE tts_engine_healthy gauge\n{contract.METRIC_ENGINE_HEALTHY}{{model="chattts"}} {healthy}\n'


def test_engine_gauge_is_read_per_model() -> None:
    assert engine_healthy(_page(1), "chattts") is True
    assert engine_healthy(_page(0), "chattts") is False
    assert engine_healthy(_page(0), "other") is None
    assert engine_healthy("", "chattts") is None


def test_load_failure_stops_the_server_and_leaves_the_reason(tmp_path: Path) -> None:
    server = FakeServer(load_error="load failed: EngineError: ChatTTS refused the checkpoint\n\nAt:\n  model.py(1)")
    log = tmp_path / "termination-log"
    watch = Supervisor(server, SERVING, log)
    watch.run()
    assert server.actions[-1] == "stop"
    assert log.read_text() == "model chattts failed to load: load failed: EngineError: ChatTTS refused the checkpoint"
    assert watch.exit_code(0) == EXIT_FAILED and watch.exit_code(250) == EXIT_FAILED


def test_unhealthy_engine_is_unloaded_and_loaded_again(tmp_path: Path) -> None:
    pages = iter([_page(1), _page(0), _page(1)])
    server = FakeServer()
    watch = Supervisor(server, SERVING, tmp_path / "log", metrics=lambda _url: next(pages))
    assert watch.check() and watch.check() and watch.check()
    assert server.actions == ["unload chattts_unary", "unload chattts", "wait /v2/health/live", "load"]
    assert watch.failure is None and not (tmp_path / "log").exists()


def test_an_engine_that_stays_unhealthy_ends_the_container(tmp_path: Path) -> None:
    now = [0.0]
    server = FakeServer()
    watch = Supervisor(
        server, SERVING, tmp_path / "log", max_recoveries=2, metrics=lambda _url: _page(0), clock=lambda: now[0]
    )
    assert watch.check() and watch.check()  # two reloads
    assert not watch.check()  # the third time within the window: give up
    assert server.actions.count("load") == 2 and server.actions[-1] == "stop"
    assert "stayed unhealthy after 2 reloads" in (tmp_path / "log").read_text()
    # Reloads long apart are separate incidents, not a failing engine.
    later = Supervisor(FakeServer(), SERVING, tmp_path / "log2", max_recoveries=2, metrics=lambda _url: _page(0))
    later.clock = lambda: now[0]
    for step in range(5):
        now[0] = step * 10_000.0
        assert later.check()


def test_a_stopping_container_is_not_failed(tmp_path: Path) -> None:
    server = FakeServer()
    watch = Supervisor(server, SERVING, tmp_path / "log", metrics=lambda _url: _page(0))
    watch.stop()
    assert watch.check() and "load" not in server.actions


def test_metrics_not_answering_is_not_a_sick_engine(tmp_path: Path) -> None:
    def refused(_url: str) -> str:
        raise ConnectionRefusedError

    server = FakeServer()
    assert Supervisor(server, SERVING, tmp_path / "log", metrics=refused).check()
    assert server.actions == []


def test_termination_message_is_capped_and_an_unwritable_path_is_survived(tmp_path: Path) -> None:
    path = tmp_path / "log"
    assert supervisor.fail("x" * 10_000, path) == EXIT_FAILED
    assert len(path.read_bytes()) == supervisor.TERMINATION_MESSAGE_LIMIT
    supervisor.write_termination_message(tmp_path / "missing" / "log", "reason")  # logged, not raised


def test_a_tritonserver_that_exits_on_its_own_passes_its_code_through(tmp_path: Path) -> None:
    watch = Supervisor(FakeServer(), SERVING, tmp_path / "log")
    assert watch.exit_code(137) == 137 and watch.exit_code(0) == 0


def _draining_page(queued: int, in_model: int, unary_loaded: bool) -> str:
    lines = [
        f'nv_inference_pending_request_count{{model="chattts",version="1"}} {queued}',
        f'{contract.METRIC_QUEUE_LENGTH}{{model="chattts"}} {in_model}',
    ]
    if unary_loaded:
        lines.append('nv_inference_pending_request_count{model="chattts_unary",version="1"} 0')
    return "\n".join(lines) + "\n"


def test_a_drain_is_done_only_when_nothing_is_queued_in_progress_or_unary() -> None:
    assert nothing_open(_draining_page(0, 0, unary_loaded=False), "chattts")
    assert not nothing_open(_draining_page(1, 0, unary_loaded=False), "chattts")
    assert not nothing_open(_draining_page(0, 2, unary_loaded=False), "chattts")
    assert not nothing_open(_draining_page(0, 0, unary_loaded=True), "chattts")
    assert not nothing_open("", "chattts")  # not exported (yet, or any more): unknown is busy


def test_a_drain_stops_tritonserver_once_idle_several_looks_in_a_row_and_exits_zero(tmp_path: Path) -> None:
    busy, idle = _draining_page(0, 1, unary_loaded=False), _draining_page(0, 0, unary_loaded=False)
    pages = iter([busy, idle, busy, *[idle] * DRAINED_LOOKS])
    server = FakeServer()
    watch = Supervisor(server, SERVING, tmp_path / "log", metrics=lambda _url: next(pages))
    assert watch.drain(poll_seconds=0)
    assert server.actions == ["kill"]
    assert next(pages, None) is None  # it looked until the idle run, and no further
    assert watch.exit_code(-9) == 0  # killed by us after a finished drain: a clean exit
    assert not watch.drain(poll_seconds=0)  # a second signal starts no second drain


def test_a_drain_that_never_empties_leaves_the_end_to_triton_and_the_kubelet(tmp_path: Path) -> None:
    now = [0.0]

    def busy(_url: str) -> str:
        now[0] += 1.0
        return _draining_page(0, 1, unary_loaded=False)

    server = FakeServer()
    serving = ServingConfig(drain_timeout_seconds=10)
    watch = Supervisor(server, serving, tmp_path / "log", metrics=busy, clock=lambda: now[0])
    assert not watch.drain(poll_seconds=0)
    assert server.actions == [] and now[0] >= 10
    assert watch.exit_code(137) == 137
