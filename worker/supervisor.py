"""The launcher's watch over its tritonserver: load the model or fail fast, then keep it honest.

* **Fail fast.** A serving config this worker cannot read, or a model that fails to load (bad
  weights, bad voices, failed warmup), ends the container at once with a non-zero exit and the
  reason in the log and in the termination message (``/dev/termination-log``, which
  ``kubectl describe pod`` and the operator see), instead of a pod that stays not-ready until its
  startup budget (up to 900 s) runs out.
* **Stay honest.** The model exports ``tts_engine_healthy`` (0 when ChatTTS calls keep failing or
  one hangs past its bound). The supervisor then unloads the model, so ``/v2/models/<m>/ready``
  turns false and the pod leaves the Service, and loads it again (a fresh python-backend stub,
  a fresh ChatTTS, warmup): the pod returns when warmup passes. A model that needs more than
  ``max_recoveries`` reloads within ``recovery_window_seconds`` is not getting better: the
  container exits non-zero and the kubelet restarts it.
* **A dead backend stub ends the container.** Triton runs each python model instance in a stub
  process (``triton_python_backend_stub``). When one dies (OOM kill, segfault in a native
  library), Triton 2.51 neither restarts it nor fails the requests it held: their streams stay
  open without another answer, the model stays READY (so liveness stays green), new requests
  get "Stub process ... is not healthy", and a SIGTERM then waits out the whole exit timeout.
  The supervisor notices the missing stub at its next poll and kills tritonserver at once: every
  open client stream ends with a connection error instead of silence, and the container exits
  non-zero with the reason, so the kubelet restarts it with a fresh Triton. Under load Triton may
  abort on its own first (a lock the stub held, exit code 250): the supervisor still names the
  stub that died in the termination message and exits non-zero.
* **A drain ends when nothing is left open.** On SIGTERM Triton refuses new requests and lets the
  open ones finish, but a client's idle gRPC stream (the client library keeps one per pod for its
  next request) holds the streaming model loaded until Triton's exit timeout, after which
  tritonserver may crash instead of exiting: every pod would take its whole drain period to go,
  on every rollout and scale-down. Once the model has no request queued or in progress and the
  unary model has unloaded (its HTTP requests done), the supervisor stops tritonserver itself;
  the idle streams end, and the container exits 0.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ttsfleet import contract

log = logging.getLogger("ttsfleet.worker.supervisor")

ENV_TERMINATION_LOG = "TTSFLEET_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")
TERMINATION_MESSAGE_LIMIT = 4096  # what the kubelet reads of the file
EXIT_FAILED = 1
STUB_BINARY = "triton_python_backend_stub"
TRITON_PENDING = "nv_inference_pending_request_count"
# Consecutive idle looks before a drain counts as done: the model's gauge trails a request that
# just finished or just arrived by a moment.
DRAINED_LOOKS = 3
PROC = Path("/proc")


class Server(Protocol):
    """What the supervisor needs of ``server.TritonServer``."""

    metrics_url: str

    @property
    def model_name(self) -> str: ...

    def wait_for(self, path: str, timeout: float, interval: float = 0.05) -> None: ...

    def load_model(self, timeout: float) -> None: ...

    def unload_model(self, name: str, timeout: float = 60.0) -> None: ...

    def stop(self, timeout: float | None = None) -> int | None: ...

    @property
    def running(self) -> bool: ...


def termination_log_path() -> Path:
    return Path(os.environ.get(ENV_TERMINATION_LOG) or DEFAULT_TERMINATION_LOG)


def write_termination_message(path: Path, message: str) -> None:
    """Best effort: a read-only or missing path must not hide the reason (it is logged too)."""
    data = message.encode("utf-8", errors="replace")[:TERMINATION_MESSAGE_LIMIT]
    try:
        path.write_bytes(data)
    except OSError as error:
        log.warning("cannot write the termination message", extra={"path": str(path), "error": str(error)})


def fail(reason: str, termination_log: Path) -> int:
    """Log ``reason``, leave it as the termination message, and give the exit code to return."""
    log.error("worker stopping: %s", reason, extra={"reason": reason})
    write_termination_message(termination_log, reason)
    return EXIT_FAILED


def _gauge_values(exposition: str, name: str, model: str) -> list[float]:
    """Every sample of gauge ``name`` labelled with ``model`` on a metrics page (one per instance
    or other label set); empty while the page does not export it."""
    pattern = re.compile(rf'^{name}\{{[^}}]*model="{re.escape(model)}"[^}}]*\}}\s+(\S+)', re.M)
    return [float(value) for value in pattern.findall(exposition)]


def _gauge(exposition: str, name: str, model: str) -> float | None:
    values = _gauge_values(exposition, name, model)
    return sum(values) if values else None


def nothing_open(exposition: str, model: str) -> bool:
    """Whether a draining worker has nothing left to finish: ``model`` has no request queued in
    Triton or in progress in the model (``tts_queue_length``), and the unary model is gone from
    the page (Triton unloads it once its HTTP requests are done). Unknown counts as busy."""
    queued = _gauge(exposition, TRITON_PENDING, model)
    in_model = _gauge(exposition, contract.METRIC_QUEUE_LENGTH, model)
    unary_loaded = _gauge(exposition, TRITON_PENDING, contract.unary_model_name(model)) is not None
    return queued == 0 and in_model == 0 and not unary_loaded


def engine_healthy(exposition: str, model: str) -> bool | None:
    """``tts_engine_healthy`` for ``model`` from a metrics page; None while it is not exported."""
    values = _gauge_values(exposition, contract.METRIC_ENGINE_HEALTHY, model)
    return None if not values else min(values) >= 1.0


def backend_stubs(parent_pid: int, proc: Path = PROC) -> dict[int, str]:
    """Triton's live python-backend stubs, pid -> model name: the processes the backend forks for
    each model instance, children of tritonserver. A zombie counts as gone (Triton does not reap
    a stub that died)."""
    stubs: dict[int, str] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # exited while we looked
        state, ppid = _state_and_parent(stat)
        if ppid != parent_pid or state in ("Z", "X") or not argv[0].endswith(STUB_BINARY.encode()):
            continue
        # argv[1] is <repository>/<model>/<version>/model.py
        parts = Path(argv[1].decode(errors="replace")).parts if len(argv) > 1 else ()
        stubs[int(entry.name)] = parts[-3] if len(parts) >= 3 else "?"
    return stubs


def _state_and_parent(stat: str) -> tuple[str, int]:
    # The command name in parentheses may hold spaces and parentheses of its own.
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def process_alive(pid: int, proc: Path = PROC) -> bool:
    """Whether ``pid`` is still a running process (a zombie has died, whoever reaps it)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return False
    return _state_and_parent(stat)[0] not in ("Z", "X")


def stub_death_reason(dead: dict[int, str]) -> str:
    stubs = ", ".join(f"model {model} (pid {pid})" for pid, model in sorted(dead.items()))
    which = "stub" if len(dead) == 1 else "stubs"
    return (
        f"the python backend {which} of {stubs} died; Triton does not restart a stub and leaves its "
        "open streams unanswered: restarting the container"
    )


def read_metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def first_line(text: str, limit: int = 1500) -> str:
    """Triton wraps the model's exception in a traceback; the reason is its first lines."""
    return text.strip().split("\nAt:", 1)[0].strip()[:limit]


class Supervisor:
    def __init__(
        self,
        server: Server,
        serving: contract.ServingConfig,
        termination_log: Path,
        poll_seconds: float = 2.0,
        max_recoveries: int = 3,
        recovery_window_seconds: float = 1800.0,
        metrics: Callable[[str], str] = read_metrics,
        clock: Callable[[], float] = time.monotonic,
        stubs: Callable[[], dict[int, str]] | None = None,
        alive: Callable[[int], bool] = process_alive,
    ) -> None:
        self.server = server
        self.serving = serving
        self.termination_log = termination_log
        self.poll_seconds = poll_seconds
        self.max_recoveries = max_recoveries
        self.recovery_window_seconds = recovery_window_seconds
        self.metrics = metrics
        self.clock = clock
        self.stubs = stubs or self._server_stubs
        self.alive = alive
        # The supervisor's thread and the main thread (once tritonserver has exited) may both
        # find a failure: the first one's reason is the one left.
        self._failing = threading.Lock()
        self.failure: str | None = None
        self.drained = False  # the drain finished and the supervisor stopped tritonserver
        self._draining = threading.Event()
        self.recoveries: list[float] = []
        # The stubs of the loaded models (pid -> model), recorded after each load.
        self.watched_stubs: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="ttsfleet-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The container is being stopped (SIGTERM): a draining model is not a failure."""
        self._stop.set()

    def exit_code(self, triton_code: int) -> int:
        """The worker's exit code once tritonserver has exited with ``triton_code``."""
        # After a failure we stopped tritonserver ourselves: whatever it exited with (killed,
        # or its own code for an interrupted shutdown) is a consequence, and the reason is the
        # termination message. After a finished drain, likewise: success.
        if self.failure is None and not self.drained and not self._stop.is_set():
            # It ended on its own. A stub that died under it is the reason (Triton aborts when
            # one dies holding a lock, before the next poll would have seen the stub gone).
            dead = {pid: model for pid, model in self.watched_stubs.items() if not self.alive(pid)}
            if dead:
                self._record_failure(stub_death_reason(dead))
        if self.failure is not None:
            return EXIT_FAILED
        return 0 if self.drained else triton_code

    def drain(self, poll_seconds: float = 0.5) -> bool:
        """After SIGTERM: wait until nothing is open (``nothing_open``, seen DRAINED_LOOKS times
        in a row), then stop tritonserver. Gives up (Triton's exit timeout and the kubelet's
        grace period rule) after the drain period. True when it stopped tritonserver."""
        if self._draining.is_set():
            return False  # a second signal: one drain is enough
        self._draining.set()
        deadline = self.clock() + self.serving.drain_timeout_seconds
        idle_looks = 0
        while self.clock() < deadline and self.server.running:
            try:
                idle = nothing_open(self.metrics(self.server.metrics_url), self.serving.model_name)
            except OSError:
                idle = False  # metrics not answering: Triton may be exiting by itself
            idle_looks = idle_looks + 1 if idle else 0
            if idle_looks >= DRAINED_LOOKS:
                log.info("drained: no request left open; stopping tritonserver (idle client streams would hold it)")
                self.drained = True
                self.server.stop(timeout=0)
                return True
            time.sleep(poll_seconds)
        return False

    def _server_stubs(self) -> dict[int, str]:
        process = getattr(self.server, "process", None)
        return {} if process is None else backend_stubs(process.pid)

    def watch_stubs(self) -> None:
        """Remember the loaded models' stubs; ``check`` fails the worker when one goes away."""
        self.watched_stubs = self.stubs()

    def run(self) -> None:
        if self.load():
            while not self._stop.wait(self.poll_seconds):
                if not self.check():
                    return

    def load(self) -> bool:
        try:
            self.server.wait_for(contract.LIVE_PATH, timeout=120)
            self.server.load_model(self.serving.warmup_timeout_seconds)
        except Exception as error:  # whatever it was, the pod cannot serve: say why and exit
            if not self._stop.is_set():
                self._fail(f"model {self.serving.model_name} failed to load: {first_line(str(error))}")
            return False
        self.watch_stubs()
        log.info(
            "model loaded and warmed up",
            extra={"model": self.serving.model_name, "backend_stubs": len(self.watched_stubs)},
        )
        return True

    def check(self) -> bool:
        """One look at the engine; reload it when unhealthy. False once the worker is failing."""
        if self.watched_stubs and not self._stop.is_set():
            alive = self.stubs()
            dead = {pid: model for pid, model in self.watched_stubs.items() if pid not in alive}
            if dead:
                # Nothing left to drain: the dead stub's streams get no further answer, and
                # Triton would hold a SIGTERM for its whole exit timeout. Kill it now, so every
                # client stream ends with a connection error and the kubelet restarts us.
                self._fail(stub_death_reason(dead), grace=0)
                return False
        try:
            healthy = engine_healthy(self.metrics(self.server.metrics_url), self.serving.model_name)
        except OSError:
            return True  # metrics not answering (busy, or shutting down): not evidence of a sick engine
        if healthy is not False or self._stop.is_set():
            return True
        return self.recover()

    def recover(self) -> bool:
        now = self.clock()
        self.recoveries = [at for at in self.recoveries if now - at < self.recovery_window_seconds]
        if len(self.recoveries) >= self.max_recoveries:
            self._fail(
                f"the speech engine stayed unhealthy after {len(self.recoveries)} reloads within "
                f"{self.recovery_window_seconds:.0f}s; restarting the container"
            )
            return False
        self.recoveries.append(now)
        log.error(
            "speech engine unhealthy: reloading the model (not ready until warmup passes)",
            extra={"model": self.serving.model_name, "reload": len(self.recoveries)},
        )
        try:
            for name in (contract.unary_model_name(self.serving.model_name), self.serving.model_name):
                self.server.unload_model(name, timeout=self.serving.drain_timeout_seconds + 60)
        except Exception as error:
            self._fail(f"unloading the unhealthy model failed: {first_line(str(error))}")
            return False
        return self.load()

    def _record_failure(self, reason: str) -> bool:
        with self._failing:
            if self.failure is not None:
                return False
            self.failure = reason
        fail(reason, self.termination_log)
        return True

    def _fail(self, reason: str, grace: float = 30) -> None:
        if self._record_failure(reason):
            self.server.stop(timeout=grace)
