"""Shared by the worker test modules: the test fleet's serving config and a server starter."""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsfleet import contract
from ttsfleet.contract import ServingConfig, Voice

# One torch thread per process: the CI machines have two shared cores, and oversubscribing them
# makes every synthesis several times slower.
SERVER_ENV = {"OMP_NUM_THREADS": "1", "TTSFLEET_LOG_LEVEL": "INFO"}
STARTUP_TIMEOUT_S = 180
LOAD_TIMEOUT_S = 300

TEST_SERVING = ServingConfig(
    voices=(Voice(id="default", seed=42), Voice(id="bright", seed=7)),
    default_voice="default",
    max_batch_size=8,
    max_queue_delay_microseconds=200_000,  # wide window: concurrent test requests land in one batch
    max_text_chars=500,
    warmup_sentences=("Hello from ttsfleet.",),
    drain_timeout_seconds=20,
)


@dataclass
class RunningServer:
    server: object  # ttsfleet.worker.server.TritonServer (imported lazily: needs the worker extra)
    grpc_url: str
    http_url: str
    metrics_url: str
    log_path: Path
    # (seconds since start, /v2/health/ready, /v2/models/<m>/ready) seen while loading
    readiness: list[tuple[float, bool | None, bool | None]] = field(default_factory=list)
    live_after: float = 0.0  # seconds from start to /v2/health/live
    loading_after: float = 0.0  # seconds from start to Triton knowing the model (loading)


def _model_state(server: Any, model_name: str) -> str | None:
    """The model's state in Triton's index; None while the index does not answer in time (it can
    wait on the repository lock a load holds, for seconds on a busy machine)."""
    try:
        return server.model_states().get(model_name)
    except OSError:
        return None


def start_server(tiny_weights: Path, workdir: Path, serving: ServingConfig, log_verbose: int = 0) -> RunningServer:
    from ttsfleet.worker.server import ServerOptions, TritonServer

    options = ServerOptions(
        model_cache=tiny_weights, workdir=workdir, serving=serving, env=SERVER_ENV, log_verbose=log_verbose
    )
    server = TritonServer(options)
    server.start()
    running = RunningServer(server, server.grpc_url, server.http_url, server.metrics_url, server.log_path)
    started = time.monotonic()
    server.wait_for(contract.LIVE_PATH, timeout=STARTUP_TIMEOUT_S)
    running.live_after = time.monotonic() - started
    running.readiness.append((running.live_after, None, server.probe(contract.model_ready_path())))
    loader = server.start_loading()
    deadline = started + LOAD_TIMEOUT_S
    # The index lists every model in the repository; a state appears once loading has begun.
    while _model_state(server, serving.model_name) not in ("LOADING", "READY"):
        assert time.monotonic() < deadline, f"Triton did not start loading within {LOAD_TIMEOUT_S}s"
        time.sleep(0.02)
    running.loading_after = time.monotonic() - started
    while loader.is_alive() and time.monotonic() < deadline:
        running.readiness.append(
            (
                time.monotonic() - started,
                server.probe(contract.READY_PATH),
                server.probe(contract.model_ready_path(serving.model_name)),
            )
        )
        time.sleep(0.25)
    server.wait_for(contract.READY_PATH, timeout=max(1.0, deadline - time.monotonic()))
    running.readiness.append((time.monotonic() - started, True, server.probe(contract.model_ready_path())))
    return running


def model_metrics(metrics_url: str, **urlopen: Any) -> dict[str, float]:
    """The worker's metrics for the streaming model, each sample summed over its other labels
    (also read by bench/worker_soak.py; ``urlopen``: e.g. its timeout)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, **urlopen) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") == contract.MODEL_NAME:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals
