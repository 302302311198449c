"""Time to first audio under load, counted in ChatTTS calls: the worker's planner against the
previous oldest-first one, on the same simulated traffic (no torch, no server, no wall clock).

Wall-clock benches on a shared machine measure the machine as much as the scheduler; counting
calls isolates the scheduling policy. Requests arrive open-loop (Poisson, per call), speak 1 to
6 sentences, one voice; a call takes up to ``max_batch`` sentences. Multiply by the ChatTTS call
time of a deployment (``bench/worker_bench.py`` prints it) for seconds.

    .venv/bin/python bench/planner_sim.py [--requests 4000] [--max-batch 8]
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable

from ttsfleet.worker.planner import Item, Progress, Step, next_step

Planner = Callable[[list[Progress], int], Step | None]


def oldest_first(jobs: list[Progress], max_batch: int) -> Step | None:
    """The planner before fairness: every request its next sentence, oldest first, then more."""
    pending = [index for index, job in enumerate(jobs) if job.pending]
    if not pending:
        return None
    taken = dict.fromkeys(pending, 0)
    items: list[Item] = []
    progressed = True
    while progressed and len(items) < max_batch:
        progressed = False
        for index in pending:
            job = jobs[index]
            if len(items) < max_batch and job.pending and taken[index] < job.allowance:
                items.append(Item(index, job.planned))
                job.planned += 1
                taken[index] += 1
                progressed = True
    for index, count in taken.items():
        if count:
            jobs[index].allowance = min(jobs[index].allowance * 2, max_batch)
    return Step(jobs[pending[0]].voice, tuple(items))


def simulate(planner: Planner, load: float, requests: int, max_batch: int, seed: int) -> tuple[list[int], list[int]]:
    """Calls from arrival to first audio and to the last chunk, per request."""
    rng = random.Random(seed)
    sizes = [rng.randint(1, 6) for _ in range(requests)]
    rate = load * max_batch / statistics.fmean(sizes)  # arrivals per call
    arrivals: list[float] = []
    clock = 0.0
    for _ in range(requests):
        clock += rng.expovariate(rate)
        arrivals.append(clock)
    jobs: list[Progress] = []
    born: list[int] = []
    ids: list[int] = []
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    delivered: dict[int, int] = {}
    nxt = 0
    call = 0
    while len(last) < requests:
        while nxt < requests and arrivals[nxt] <= call:  # arrived while the previous call ran
            jobs.append(Progress("v", sizes[nxt]))
            born.append(call)
            ids.append(nxt)
            nxt += 1
        step = planner(jobs, max_batch)
        call += 1
        if step is None:
            continue
        for item in step.items:
            request = ids[item.job]
            delivered[request] = delivered.get(request, 0) + 1
            first.setdefault(request, call - born[item.job])
            if delivered[request] == sizes[request]:
                last[request] = call - born[item.job]
        keep = [i for i, job in enumerate(jobs) if job.pending]
        jobs = [jobs[i] for i in keep]
        born = [born[i] for i in keep]
        ids = [ids[i] for i in keep]
    return [first[r] for r in range(requests)], [last[r] for r in range(requests)]


def _pct(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(f"{args.requests} requests of 1-6 sentences, Poisson arrivals, max_batch={args.max_batch}; in ChatTTS calls")
    print(f"{'load':>5} {'planner':<13}{'TTFA p50':>9}{'TTFA p99':>9}{'TTFA max':>9}{'done p50':>9}{'done p99':>9}")
    for load in (0.5, 0.8, 0.9, 0.95):
        for name, planner in (("oldest-first", oldest_first), ("new-first", next_step)):
            ttfa, done = simulate(planner, load, args.requests, args.max_batch, args.seed)
            print(
                f"{load:>5} {name:<13}{_pct(ttfa, 0.5):>9}{_pct(ttfa, 0.99):>9}{max(ttfa):>9}"
                f"{_pct(done, 0.5):>9}{_pct(done, 0.99):>9}"
            )


if __name__ == "__main__":
    main()
