"""The worker container's entry point (``ttsfleet-worker``) fails fast: a model that cannot load,
or a serving config from another contract major version, ends the process non-zero with the
reason in its log and in the termination message, instead of a pod that idles not-ready. An
engine that turns unhealthy takes the model out of service and back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from worker_support import SERVER_ENV, TEST_SERVING, start_server

from ttsfleet import contract

pytestmark = pytest.mark.worker

EXIT_TIMEOUT_S = 600  # a hang guard: the point is that it exits at all, rather than idling not-ready


def _serving_dir(tmp_path: Path, serving_json: str) -> Path:
    directory = tmp_path / "serving"
    directory.mkdir()
    (directory / contract.SERVING_JSON_FILE).write_text(serving_json)
    (directory / contract.TRITON_CONFIG_FILE).write_text(contract.render_triton_config(TEST_SERVING))
    return directory


def _run_worker(tmp_path: Path, serving: Path, model_cache: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    from ttsfleet.worker.server import free_port

    termination = tmp_path / "termination-log"
    command = [
        sys.executable, "-m", "ttsfleet.worker.server",
        "--serving-config", str(serving), "--model-cache", str(model_cache),
        "--workdir", str(tmp_path / "work"), "--host", "127.0.0.1",
        "--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port()),
        "--termination-log", str(termination),
    ]  # fmt: skip
    env = {**os.environ, **SERVER_ENV}
    done = subprocess.run(command, capture_output=True, text=True, timeout=EXIT_TIMEOUT_S, env=env, check=False)
    return done, termination


def test_model_that_cannot_load_ends_the_container_with_the_reason(tmp_path: Path) -> None:
    empty_cache = tmp_path / "cache"
    empty_cache.mkdir()
    done, termination = _run_worker(tmp_path, _serving_dir(tmp_path, TEST_SERVING.to_json()), empty_cache)
    assert done.returncode != 0
    reason = termination.read_text()
    assert reason.startswith("model chattts failed to load") and "ChatTTS refused the checkpoint" in reason, reason
    assert "ChatTTS refused the checkpoint" in done.stdout + done.stderr  # and in the container log


def test_serving_config_of_another_major_version_is_refused_before_anything_starts(
    tmp_path: Path, tiny_weights: Path
) -> None:
    raw = json.loads(TEST_SERVING.to_json())
    raw["version"] = "2.0"
    done, termination = _run_worker(tmp_path, _serving_dir(tmp_path, json.dumps(raw)), tiny_weights)
    assert done.returncode != 0
    reason = termination.read_text()
    assert "serving config version 2.0 is not supported" in reason and "worker image" in reason, reason
    assert not (tmp_path / "work").exists()  # refused before tritonserver was even set up


def test_unhealthy_engine_takes_the_model_out_of_service_and_back(tiny_weights: Path, tmp_path: Path) -> None:
    from ttsfleet.worker.client import TtsClient
    from ttsfleet.worker.supervisor import Supervisor

    running = start_server(tiny_weights, tmp_path, TEST_SERVING)
    server = running.server
    ready = contract.model_ready_path()
    # The engine's gauge says "unhealthy" once (as after 3 failed ChatTTS calls); the rest is real:
    # the launcher's unload and load through Triton's (key-protected) repository API.
    pages = iter([f'{contract.METRIC_ENGINE_HEALTHY}{{model="chattts"}} 0\n'])
    watch = Supervisor(server, TEST_SERVING, tmp_path / "termination-log", metrics=lambda _url: next(pages, ""))
    outcome: list[bool] = []
    try:
        recovering = threading.Thread(target=lambda: outcome.append(watch.check()))
        recovering.start()
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        while server.probe(ready) is not False:  # the pod leaves the Service: model not ready
            assert time.monotonic() < deadline, "the model never turned not-ready"
            time.sleep(0.05)
        recovering.join(EXIT_TIMEOUT_S)
        assert outcome == [True] and watch.failure is None
        assert server.probe(ready) is True  # ...and is back after a fresh load and warmup
        with TtsClient(running.grpc_url) as client:
            assert list(client.stream("Serving again."))[-1].final
    finally:
        server.stop()
