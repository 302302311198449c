"""ChatTTS in-process (plain ``Chat.infer``) vs through Triton, side by side, same weights.

Reports p50/p99 latency, time to first audio (p50/p99) and throughput at concurrency 1, 4, 8 and 16,
closed-loop (each client sends its next request when the last one ended) and open-loop (``--open-loop``:
Poisson arrivals at the rate the closed loop reached, each request on a fresh client, so a slow
server faces a growing queue as production would). ``--text long`` speaks three sentences per
request, so requests beyond ``--max-batch`` compete with later sentences of older ones.
In-process runs one request per ``infer`` call, sequentially (``Chat`` is not thread-safe): that
is the baseline batching has to beat. Through Triton every concurrent client holds its own gRPC
stream; Triton's dynamic batcher hands requests to the worker's scheduler, which merges every open
request into one ``infer`` call per step. Columns: ``batch`` is the mean batch Triton formed,
``chattts`` the mean sentences per ChatTTS call (tts_batch_size), ``queue ms`` the mean time in
Triton's queue, ``chunks`` the mean audio chunks per request: more chunks than sentences means
the worker streams within a sentence (sub-sentence streaming, reported on the first line).
"Added by serving" is client time minus the model's own time for the same requests (gRPC,
Triton's queue, backend IPC).

    .venv/bin/python bench/worker_bench.py --preset tiny --requests 48 [--queue-delay-us 500]
    .venv/bin/python bench/worker_bench.py --text long --max-batch 8 --open-loop --json out.json

``--open-loop-rates`` fixes the arrival rates (one per concurrency level) so two runs (before and
after a change) face the same load; by default they follow each run's own closed-loop throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

TEXTS = {
    "short": "The quick brown fox jumps over the lazy dog.",
    "long": "The quick brown fox jumps over the lazy dog. It was not amused. Then it ran away, fast.",
}
TEXT = TEXTS["short"]


def triton_stats(http_url: str) -> dict[str, int]:
    """Triton's cumulative counters for the model: requests, executions, queue and compute time."""
    with urllib.request.urlopen(f"{http_url}/v2/models/chattts/stats") as response:
        stats = json.load(response)["model_stats"][0]
    infer = stats["inference_stats"]
    return {
        "inferences": int(stats["inference_count"]),
        "executions": int(stats["execution_count"]),
        "queue_ns": int(infer["queue"]["ns"]),
        "compute_ns": int(infer["compute_infer"]["ns"]),
    }


def worker_counters(metrics_url: str) -> dict[str, float]:
    """Sums and counts of the worker's histograms: tts_request_duration_seconds (request received
    in the model -> last chunk) and tts_batch_size (sentences per ChatTTS call)."""
    from ttsfleet.contract import METRIC_BATCH_SIZE, METRIC_REQUEST_DURATION

    with urllib.request.urlopen(metrics_url) as response:
        text = response.read().decode()
    totals = dict.fromkeys(
        (f"{name}_{part}" for name in (METRIC_REQUEST_DURATION, METRIC_BATCH_SIZE) for part in ("sum", "count")), 0.0
    )
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


@dataclass
class Figures:
    mode: str
    concurrency: float  # clients (closed loop) or arrivals per second (open loop)
    requests: int
    p50_ms: float
    p99_ms: float
    ttfa_p50_ms: float
    ttfa_p99_ms: float
    throughput_rps: float
    audio_seconds_per_second: float
    # Through Triton only: mean batch Triton formed, mean sentences per ChatTTS call, and
    # per-request time in Triton's queue and in the model.
    mean_batch: float | None = None
    engine_batch: float | None = None
    queue_ms: float | None = None
    model_ms: float | None = None  # mean, request received by the model -> last chunk sent
    mean_ms: float | None = None  # mean as the client saw it
    chunks_per_request: float | None = None  # > sentences per request: streaming within sentences


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _figures(mode: str, concurrency: float, latencies: list[float], ttfas: list[float],
             wall: float, audio_seconds: float, chunks: int = 0) -> Figures:  # fmt: skip
    return Figures(
        chunks_per_request=round(chunks / len(latencies), 2) if chunks else None,
        mean_ms=round(statistics.fmean(latencies) * 1000, 1),
        mode=mode,
        concurrency=concurrency,
        requests=len(latencies),
        p50_ms=round(statistics.median(latencies) * 1000, 1),
        p99_ms=round(_percentile(latencies, 0.99) * 1000, 1),
        ttfa_p50_ms=round(statistics.median(ttfas) * 1000, 1),
        ttfa_p99_ms=round(_percentile(ttfas, 0.99) * 1000, 1),
        throughput_rps=round(len(latencies) / wall, 2),
        audio_seconds_per_second=round(audio_seconds / wall, 2),
    )


def bench_in_process(weights: Path, requests: int, text: str = TEXT) -> Figures:
    import numpy as np
    import torch

    from ttsfleet.contract import SAMPLE_RATE_HZ, ServingConfig
    from ttsfleet.worker.engine import Engine
    from ttsfleet.worker.text import split_sentences

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    engine = Engine.load(weights, ServingConfig())
    sentences = split_sentences(text)  # what the worker hands ChatTTS for this text
    engine.synthesize(sentences, "default")  # warm caches like the server's warmup does
    latencies, audio = [], 0.0
    started = time.monotonic()
    for _ in range(requests):
        t0 = time.monotonic()
        clip = np.concatenate(engine.synthesize(sentences, "default"))
        latencies.append(time.monotonic() - t0)
        audio += clip.size / SAMPLE_RATE_HZ
    # Not streaming: the first audio is the whole clip.
    return _figures("in-process", 1, latencies, latencies, time.monotonic() - started, audio)


def bench_triton(grpc_url: str, concurrency: int, requests: int, text: str = TEXT) -> Figures:
    from ttsfleet.contract import SAMPLE_RATE_HZ
    from ttsfleet.worker.client import TtsClient

    latencies: list[float] = []
    ttfas: list[float] = []
    audio = [0.0]
    counted = [0]
    lock = threading.Lock()
    per_client = max(1, requests // concurrency)
    barrier = threading.Barrier(concurrency + 1)

    def run() -> None:
        with TtsClient(grpc_url) as client:
            list(client.stream("Warm up."))  # opens the stream before timing starts
            barrier.wait()
            for _ in range(per_client):
                t0 = time.monotonic()
                chunks = list(client.stream(text))
                with lock:
                    latencies.append(time.monotonic() - t0)
                    ttfas.append(chunks[0].received_after)
                    audio[0] += sum(len(chunk.audio) // 2 for chunk in chunks) / SAMPLE_RATE_HZ
                    counted[0] += len(chunks)

    threads = [threading.Thread(target=run) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    return _figures("triton", concurrency, latencies, ttfas, time.monotonic() - started, audio[0], counted[0])


def bench_open_loop(grpc_url: str, rate_rps: float, requests: int, text: str, seed: int = 1) -> Figures:
    """Poisson arrivals at ``rate_rps``, each request on its own client (own gRPC stream)."""
    from ttsfleet.contract import SAMPLE_RATE_HZ
    from ttsfleet.worker.client import TtsClient

    latencies: list[float] = []
    ttfas: list[float] = []
    audio = [0.0]
    counted = [0]
    lock = threading.Lock()
    arrivals = random.Random(seed)

    def one() -> None:
        with TtsClient(grpc_url) as client:
            t0 = time.monotonic()
            chunks = list(client.stream(text))
        with lock:
            latencies.append(time.monotonic() - t0)
            ttfas.append(chunks[0].received_after)
            audio[0] += sum(len(chunk.audio) // 2 for chunk in chunks) / SAMPLE_RATE_HZ
            counted[0] += len(chunks)

    threads = []
    started = time.monotonic()
    due = started
    for _ in range(requests):
        due += arrivals.expovariate(rate_rps)
        time.sleep(max(0.0, due - time.monotonic()))
        thread = threading.Thread(target=one)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    return _figures("open-loop", round(rate_rps, 2), latencies, ttfas, wall, audio[0], counted[0])


def main() -> None:
    from ttsfleet.contract import ServingConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "full"])
    parser.add_argument("--requests", type=int, default=24, help="requests per concurrency level")
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--text", default="short", choices=sorted(TEXTS), help="what each request speaks")
    parser.add_argument(
        "--max-batch", type=int, default=0, help="max_batch_size (default: the highest concurrency level)"
    )
    parser.add_argument(
        "--open-loop",
        action="store_true",
        help="also run open-loop Poisson arrivals at 0.9x the throughput each closed-loop level reached",
    )
    parser.add_argument(
        "--open-loop-rates",
        default="",
        help="open-loop arrival rates (req/s), one per concurrency level, instead of 0.9x closed-loop throughput",
    )
    parser.add_argument("--gpu", action="store_true", help="serve on the GPU (KIND_GPU)")
    parser.add_argument(
        "--queue-delay-us",
        type=int,
        default=ServingConfig.max_queue_delay_microseconds,
        help="Triton's max_queue_delay_microseconds (default: the fleet default)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # same thread budget in-process and in Triton

    from ttsfleet import logs

    logs.configure_json("WARNING")

    from ttsfleet.worker.checkpoint import ensure_weights
    from ttsfleet.worker.server import ServerOptions, TritonServer
    from ttsfleet.worker.text import split_sentences

    weights = ensure_weights(args.preset)
    levels = [int(level) for level in args.concurrency.split(",")]
    fixed_rates = [float(rate) for rate in args.open_loop_rates.split(",") if rate]
    if fixed_rates and len(fixed_rates) != len(levels):
        parser.error(f"--open-loop-rates needs {len(levels)} rates, one per concurrency level")
    text = TEXTS[args.text]
    results = [bench_in_process(weights, args.requests, text)]
    serving = ServingConfig(
        max_batch_size=args.max_batch or max(levels),
        max_queue_delay_microseconds=args.queue_delay_us,
        gpu=args.gpu,
    )
    with tempfile.TemporaryDirectory() as workdir:
        threads = {"OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"]}
        options = ServerOptions(model_cache=weights, workdir=Path(workdir), serving=serving, env=threads)
        server = TritonServer(options)
        with server:
            server.wait_for("/v2/health/live", 180)
            server.load_model(600)
            for position, level in enumerate(levels):
                before = triton_stats(server.http_url)
                worker_before = worker_counters(server.metrics_url)
                figure = bench_triton(server.grpc_url, level, args.requests, text)
                after = triton_stats(server.http_url)
                worker = {k: v - worker_before[k] for k, v in worker_counters(server.metrics_url).items()}
                delta = {key: after[key] - before[key] for key in after}
                figure.mean_batch = round(delta["inferences"] / max(1, delta["executions"]), 2)
                figure.queue_ms = round(delta["queue_ns"] / max(1, delta["inferences"]) / 1e6, 1)
                served = max(1.0, worker["tts_request_duration_seconds_count"])
                figure.model_ms = round(worker["tts_request_duration_seconds_sum"] / served * 1000, 1)
                calls = max(1.0, worker["tts_batch_size_count"])
                figure.engine_batch = round(worker["tts_batch_size_sum"] / calls, 2)
                results.append(figure)
                if args.open_loop:
                    rate = fixed_rates[position] if fixed_rates else 0.9 * figure.throughput_rps
                    results.append(bench_open_loop(server.grpc_url, rate, args.requests, text))

    baseline = results[0]
    columns = (
        "mode",
        "conc",
        "reqs",
        "p50 ms",
        "p99 ms",
        "TTFA p50",
        "TTFA p99",
        "req/s",
        "x base",
        "batch",
        "chattts",
        "queue ms",
        "chunks",
    )
    widths = (-11, 6, 6, 10, 10, 10, 10, 8, 8, 7, 9, 10, 8)
    header = "".join(f"{name:<{-w}}" if w < 0 else f"{name:>{w}}" for name, w in zip(columns, widths, strict=True))
    sentences = len(split_sentences(text))
    chunk_counts = [figure.chunks_per_request or 0.0 for figure in results[1:]]
    # Measured, not configured: a request that got more chunks than it has sentences was streamed
    # within a sentence (the code under test may predate the setting).
    streaming = "on" if chunk_counts and min(chunk_counts) > sentences else "off"
    print(
        f"weights={args.preset} text={text!r} ({sentences} sentences) max_batch={serving.max_batch_size} "
        f"torch threads={os.environ['OMP_NUM_THREADS']} max_queue_delay={args.queue_delay_us} us "
        f"sub-sentence streaming={streaming}"
    )
    print(header)
    for figure in results:
        speedup = figure.throughput_rps / baseline.throughput_rps
        print(
            f"{figure.mode:<11}{figure.concurrency:>6}{figure.requests:>6}{figure.p50_ms:>10}"
            f"{figure.p99_ms:>10}{figure.ttfa_p50_ms:>10}{figure.ttfa_p99_ms:>10}{figure.throughput_rps:>8}{speedup:>8.2f}"
            f"{figure.mean_batch or '-':>7}{figure.engine_batch or '-':>9}{figure.queue_ms or '-':>10}"
            f"{figure.chunks_per_request or '-':>8}"
        )
    single = next(figure for figure in results if figure.mode == "triton" and figure.concurrency == 1)
    # The p50 difference also carries the model's own run-to-run spread (tens of ms on a shared
    # CPU); client minus model time of the same requests isolates what serving adds.
    print(f"p50 difference (triton c=1 - in-process): {single.p50_ms - baseline.p50_ms:+.1f} ms")
    if single.model_ms is not None and single.mean_ms is not None:
        print(
            f"added by serving at c=1 (gRPC + Triton queue + backend IPC): {single.mean_ms - single.model_ms:+.1f} ms "
            f"({single.mean_ms} ms at the client, {single.model_ms} ms inside the model, means)"
        )
    eight = next((f for f in results if f.mode == "triton" and f.concurrency == 8), None)
    if eight is not None:
        print(f"throughput at c=8: {eight.throughput_rps / baseline.throughput_rps:.2f}x in-process sequential")
    if args.json:
        record = {"sub_sentence_streaming": streaming, "figures": [asdict(figure) for figure in results]}
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
