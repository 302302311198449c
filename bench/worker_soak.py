"""Worker soak: many requests against a real tritonserver serving the worker's models, and what
its processes hold after warm-up and at the end.

Starts tritonserver on the model repository (tiny generated weights by default, as the worker
tests do), sends ``--requests`` streamed requests from ``--concurrency`` clients (each its own
gRPC stream, one request at a time; voices and a few texts alternate, and one request in
``--cancel-every`` is abandoned after its first chunk, as clients that go away do), and samples
after ``--warmup`` requests and at the end, both once the worker is idle (no open stream, nothing
queued): resident memory of tritonserver and of each python-backend stub (the ``chattts`` stub
holds the scheduler and ChatTTS), threads, open files. Prints one JSON line of figures; asserts
nothing (the goal, RSS growth under 5 % after warm-up, is a figure to watch, not a test budget).

    .venv/bin/python bench/worker_soak.py --requests 10000 --warmup 500
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "worker"))  # the worker tests' metrics reader

from worker_support import model_metrics  # noqa: E402

TEXTS = (
    "Hello from the soak.",
    "The quick brown fox jumps over the lazy dog. It was not amused.",
    "One more sentence, and then another one!",
)
IDLE_TIMEOUT_S = 600.0


def _status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def process_figures(pid: int) -> dict[str, int]:
    status = _status(pid)
    return {
        "rss_kib": int(status["VmRSS"].split()[0]),
        "threads": int(status["Threads"]),
        "open_files": len(list(Path(f"/proc/{pid}/fd").iterdir())),
    }


def worker_processes(triton_pid: int) -> dict[str, int]:
    """tritonserver and its live python-backend stubs: name -> pid (stubs as ``stub:<model>#<n>``)."""
    from ttsfleet.worker.supervisor import backend_stubs

    found = {"tritonserver": triton_pid}
    counts: dict[str, int] = {}
    for pid, model in sorted(backend_stubs(triton_pid).items()):
        counts[model] = counts.get(model, 0) + 1
        found[f"stub:{model}#{counts[model]}"] = pid
    return found


def snapshot(triton_pid: int) -> dict[str, dict[str, int]]:
    return {name: process_figures(pid) for name, pid in worker_processes(triton_pid).items()}


def gauges(metrics_url: str) -> dict[str, float]:
    return model_metrics(metrics_url, timeout=10)


def wait_idle(metrics_url: str) -> None:
    """Until no stream is open and nothing is queued: the worker holds only what it keeps."""
    from ttsfleet import contract

    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while True:
        values = gauges(metrics_url)
        if values.get(contract.METRIC_ACTIVE_STREAMS) == 0 and values.get(contract.METRIC_QUEUE_LENGTH) == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker was not idle after {IDLE_TIMEOUT_S:.0f}s: {values}")
        time.sleep(0.2)


class Load:
    """``concurrency`` clients sending requests ``[start, stop)`` between them."""

    def __init__(self, grpc_url: str, concurrency: int, voices: list[str], cancel_every: int) -> None:
        self.deadline = float("inf")  # no new request after this (time.monotonic())
        self.grpc_url = grpc_url
        self.concurrency = concurrency
        self.voices = voices
        self.cancel_every = cancel_every
        self.done = 0
        self.failed: list[str] = []
        self._lock = threading.Lock()

    def run(self, start: int, stop: int) -> None:
        numbers = iter(range(start, stop))

        def client() -> None:
            from ttsfleet.worker.client import TtsClient, TtsError

            with TtsClient(self.grpc_url) as tts:
                while True:
                    with self._lock:
                        number = next(numbers, None) if time.monotonic() < self.deadline else None
                    if number is None:
                        return
                    voice = self.voices[number % len(self.voices)]
                    try:
                        for _chunk in tts.stream(TEXTS[number % len(TEXTS)], voice):
                            if self.cancel_every and number % self.cancel_every == 0:
                                break  # the client goes away mid-stream: the worker must free it
                    except TtsError as error:
                        with self._lock:
                            self.failed.append(f"{number}: {error}")
                    with self._lock:
                        self.done += 1

        threads = [threading.Thread(target=client, daemon=True) for _ in range(self.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def growth(first: dict[str, dict[str, int]], last: dict[str, dict[str, int]]) -> dict[str, float]:
    return {
        name: round(100.0 * (last[name]["rss_kib"] - figures["rss_kib"]) / figures["rss_kib"], 2)
        for name, figures in first.items()
        if name in last
    }


def soak(args: argparse.Namespace) -> dict[str, Any]:
    from ttsfleet.contract import ServingConfig, Voice
    from ttsfleet.worker.checkpoint import ensure_weights
    from ttsfleet.worker.server import ServerOptions, TritonServer

    weights = args.model_cache or ensure_weights("tiny")
    serving = ServingConfig(
        voices=(Voice(id="default", seed=42), Voice(id="bright", seed=7)),
        default_voice="default",
        max_batch_size=max(8, args.concurrency),
        warmup_sentences=("Hello from ttsfleet.",),
    )
    with tempfile.TemporaryDirectory(prefix="worker-soak-") as workdir:
        options = ServerOptions(
            model_cache=weights, workdir=Path(workdir), serving=serving, env={"OMP_NUM_THREADS": "1"}
        )
        server = TritonServer(options)
        with server:
            assert server.process is not None
            server.wait_for("/v2/health/live", 300)
            server.load_model(900)
            load = Load(server.grpc_url, args.concurrency, [v.id for v in serving.voices], args.cancel_every)
            started = time.monotonic()
            load.run(0, args.warmup)
            wait_idle(server.metrics_url)
            after_warmup = snapshot(server.process.pid)
            warmed = time.monotonic()
            reporter = threading.Thread(target=_progress, args=(load, args.requests), daemon=True)
            reporter.start()
            if args.max_seconds:
                load.deadline = warmed + args.max_seconds
            load.run(args.warmup, args.requests)
            measured = time.monotonic() - warmed
            wait_idle(server.metrics_url)
            at_end = snapshot(server.process.pid)
            served = gauges(server.metrics_url)
    total = {
        key: sum(figures["rss_kib"] for figures in sample.values())
        for key, sample in (("first", after_warmup), ("last", at_end))
    }
    return {
        "requests": load.done,
        "requests_asked": args.requests,
        "warmup_requests": args.warmup,
        "concurrency": args.concurrency,
        "cancelled_every": args.cancel_every,
        "failed": len(load.failed),
        "failures_first": load.failed[:3],
        "seconds": round(time.monotonic() - started, 1),
        "requests_per_second_after_warmup": round((load.done - args.warmup) / measured, 2) if measured else None,
        "worker_requests_counted": served.get("tts_request_duration_seconds_count"),
        "after_warmup": after_warmup,
        "at_end": at_end,
        "rss_growth_percent": growth(after_warmup, at_end),
        "rss_growth_percent_all_processes": round(100.0 * (total["last"] - total["first"]) / total["first"], 2),
    }


def _progress(load: Load, total: int) -> None:
    while load.done < total and time.monotonic() < load.deadline:
        time.sleep(30)
        print(f"... {load.done}/{total} requests, {len(load.failed)} failed", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000, help="requests in all, warm-up included")
    parser.add_argument("--warmup", type=int, default=500, help="requests before the first sample")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--cancel-every", type=int, default=10, help="abandon one request in N mid-stream (0: none)")
    parser.add_argument("--model-cache", type=Path, help="real weights instead of the tiny generated ones")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=0,
        help="stop sending after this long past warm-up (then sample as usual): as many requests as time permits",
    )
    args = parser.parse_args()
    if not 0 < args.warmup < args.requests:
        parser.error("--warmup must be between 0 and --requests")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from ttsfleet import logs

    logs.configure_json("WARNING")
    print(json.dumps(soak(args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
