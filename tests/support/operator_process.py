"""The operator under test as a real process: ``python -P -m ttsfleet.operator`` (``-P``: never
put the working directory on sys.path) against a cluster's kubeconfig, its log in a file so that
failures show its tail."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from prometheus_client.parser import text_string_to_metric_families

from ttsfleet.devcluster.cluster import ClusterHandle, free_port
from ttsfleet.operator.spec import API_VERSION, KIND

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0


class OperatorProcess:
    """The operator under test; stoppable and restartable within the session."""

    def __init__(
        self, env: dict[str, str], log_path: Path, extra_args: tuple[str, ...] = (), namespace: str | None = None
    ) -> None:
        self._env = env
        self._scope = ["--namespace", namespace] if namespace else ["--all-namespaces"]
        self._log_path = log_path
        self._extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.port = free_port()
        self.metrics_port = free_port()

    @property
    def log_path(self) -> Path:
        return self._log_path

    def get(self, path: str, port: int | None = None) -> str:
        """GET one of the operator's HTTP endpoints (liveness by default, or metrics)."""
        url = f"http://127.0.0.1:{port or self.port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """The operator's /metrics, by (sample name, labels)."""
        text = self.get("/metrics", self.metrics_port)
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def resyncs(self) -> float:
        """Periodic resyncs whose passes all finished (every fleet looked at once more)."""
        return self.samples().get(("ttsfleet_operator_resyncs_total", frozenset()), 0.0)

    def wait_for_resyncs(self, count: int = 2, timeout: float = 120.0) -> None:
        """The positive signal for a "nothing happened" check: ``count`` more resyncs finished.
        Two guarantee one that started after this call, so it saw everything done before it."""
        start = self.resyncs()
        deadline = time.monotonic() + timeout
        while self.resyncs() < start + count:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the operator finished no {count} resyncs in {timeout:.0f}s; see {self._log_path}"
                )
            time.sleep(0.2)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        assert not self.running, "operator already running"
        self._log = self._log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-m",
                "ttsfleet.operator",
                *self._scope,
                "--resync-seconds",
                "5",
                "--liveness",
                f"http://127.0.0.1:{self.port}/healthz",
                "--metrics-port",
                str(self.metrics_port),
                *self._extra_args,
            ],
            env=self._env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self._proc.returncode}; see {self._log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        raise RuntimeError(f"operator not live after {START_TIMEOUT_SECONDS:.0f}s; see {self._log_path}")

    def kill(self) -> None:
        """SIGKILL: no goodbye to the peers, as when a node dies."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=STOP_TIMEOUT_SECONDS)
        self._forget()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=STOP_TIMEOUT_SECONDS)
        self._forget()

    def _forget(self) -> None:
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


@contextmanager
def watching(handle: ClusterHandle, namespace: str) -> Iterator[OperatorProcess]:
    """On a cluster a module brought up for itself: the CRDs installed, ``namespace`` created, and
    the operator running, scoped to that namespace; stopped afterwards."""
    handle.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    handle.wait_crds_established()
    handle.wait_for_owner_kind(API_VERSION, KIND)
    handle.create_namespace(namespace)
    handle.logs_dir.mkdir(parents=True, exist_ok=True)
    operator = OperatorProcess(handle.env, handle.logs_dir / "operator.log", namespace=namespace)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
