"""Operator soak: create/update/delete cycles of fleets against a local cluster, and what the
operator process holds afterwards: resident memory, threads, open files and sockets, asyncio
tasks on its event loop and the watch streams among them (its own gauges), and the connections
it holds to the API server (counted from /proc, not from the operator).

Brings up its own local cluster (or uses ``--kubeconfig``), runs the operator as a process, and
drives ``--cycles`` cycles (create a fleet with zero replicas, change it, delete it; several at a
time). Samples are taken after ``--warmup`` cycles, every ``--sample-every`` cycles and at the
end, each after Kubernetes' garbage collector has removed the deleted fleets' children and the
operator has finished two more resyncs (so that it is idle, not mid-pass). Prints one JSON line
of figures; it asserts nothing (speed and size are figures to watch, not test budgets).

The warm-up must include a busy period as large as the ones measured: RSS keeps the high-water
mark of the heap (what a burst of watch events used stays mapped, fragmented, between the live
objects), while Python's objects stay flat. After 100 cycles RSS still grew ~10 % by cycle 1,000;
after 1,000 it stays within 1 % for 2,000 more.

    .venv/bin/python bench/operator_soak.py --cycles 3000 --warmup 1000 --sample-every 500
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))

from operator_process import OperatorProcess  # noqa: E402

from ttsfleet.devcluster.cluster import ClusterHandle, default_workdir, running  # noqa: E402
from ttsfleet.operator.naming import FIELD_MANAGER, LABEL_MANAGED_BY  # noqa: E402
from ttsfleet.operator.spec import GROUP, KIND, PLURAL, VERSION  # noqa: E402

NAMESPACE = "soak"


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections of the process to ``port`` (the API server's): each kopf watch
    stream holds one, plus the pooled connections of its requests."""
    inodes = {
        link[len("socket:[") : -1]
        for link in (os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir())
        if link.startswith("socket:[")
    }
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            established = fields[3] == "01"
            count += int(established and remote_port == port and fields[9] in inodes)
    return count


def process_figures(operator: OperatorProcess, apiserver_port: int) -> dict[str, int]:
    pid = pid_of(operator)
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    fds = list(Path(f"/proc/{pid}/fd").iterdir())
    sockets = sum(1 for fd in fds if os.readlink(fd).startswith("socket:"))
    gauges = operator.samples()
    return {
        "rss_kib": int(status["VmRSS"].split()[0]),
        # RSS = anonymous memory (the heaps) + file-backed pages (code and data of the
        # interpreter and its libraries, paged in as code paths first run) + shared memory.
        "rss_anon_kib": int(status["RssAnon"].split()[0]),
        "rss_file_kib": int(status["RssFile"].split()[0]),
        "threads": int(status["Threads"]),
        "open_files": len(fds),
        "sockets": sockets,
        "apiserver_connections": connections_to(pid, apiserver_port),
        "asyncio_tasks": int(gauges[("ttsfleet_operator_asyncio_tasks", frozenset())]),
        "watch_streams": int(gauges[("ttsfleet_operator_watch_streams", frozenset())]),
    }


def apiserver_port(handle: ClusterHandle) -> int:
    server = json.loads(handle.kubectl("config", "view", "--minify", "-o", "json").stdout)["clusters"][0]["cluster"]
    return urllib.parse.urlsplit(server["server"]).port or 443


def body(name: str, generation: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "image": "ttsfleet/worker:0.1.0",
            "replicas": 0,
            "model": {"source": "https://models.example.com/chattts", "revision": "v1"},
            "resources": {"gpu": 0, "cpu": "100m", "memory": "128Mi"},
            "warmup": {"sentences": [f"Cycle {generation}."]},
        },
    }


def cycle(api: Any, index: int) -> None:
    name = f"soak-{index}"
    api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body(name, 0))
    api.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, name, {"spec": {"warmup": {"sentences": [f"Cycle {index}, changed."]}}}
    )
    api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)


def pid_of(operator: OperatorProcess) -> int:
    proc = operator._proc  # the bench reads /proc of the process it started
    assert proc is not None
    return proc.pid


CHILD_KINDS = "statefulsets,services,configmaps,networkpolicies,poddisruptionbudgets,serviceaccounts"


def wait_children_collected(handle: ClusterHandle, timeout: float = 900.0) -> float:
    """Wait until Kubernetes' garbage collector has deleted every child of the deleted fleets.

    Until then the operator is still watching those deletions go by (kopf keeps a worker task per
    object it hears about), so a sample taken earlier measures the collector's backlog, not what
    the operator keeps: after 1,000 cycles that backlog was ~160 tasks and ~15 MB. Returns the
    seconds waited; progress goes to stderr."""
    started = time.monotonic()
    selector = f"{LABEL_MANAGED_BY}={FIELD_MANAGER}"
    while True:
        left = handle.kubectl("get", CHILD_KINDS, "-n", NAMESPACE, "-l", selector, "-o", "name").stdout.split()
        if not left:
            return round(time.monotonic() - started, 1)
        waited = time.monotonic() - started
        if waited > timeout:
            raise RuntimeError(f"{len(left)} children of deleted fleets still there after {timeout:.0f}s")
        print(f"waiting for the garbage collector: {len(left)} children left ({waited:.0f}s)", file=sys.stderr)
        time.sleep(5)


def settled_figures(handle: ClusterHandle, operator: OperatorProcess, port: int) -> dict[str, Any]:
    """Figures once the cluster is quiet: children collected, then two resyncs (longer than kopf's
    5 s idle timeout, after which its per-object workers end)."""
    collector_seconds = wait_children_collected(handle)
    operator.wait_for_resyncs(2, timeout=300)
    return {**process_figures(operator, port), "garbage_collection_wait_s": collector_seconds}


def soak(
    handle: ClusterHandle,
    cycles: int,
    warmup: int,
    parallel: int,
    operator_env: dict[str, str],
    sample_every: int | None = None,
) -> dict[str, Any]:
    handle.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    handle.wait_crds_established("-f", str(REPO / "crds"))
    handle.kubectl("create", "namespace", NAMESPACE)
    log = Path(tempfile.mkdtemp(prefix="soak-")) / "operator.log"
    operator = OperatorProcess({**handle.env, **operator_env}, log, namespace=NAMESPACE)
    operator.start()
    client = kubernetes.config.new_client_from_config(config_file=str(handle.kubeconfig))
    api = kubernetes.client.CustomObjectsApi(client)
    samples: dict[str, Any] = {}
    port = apiserver_port(handle)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda i: cycle(api, i), range(warmup)))
            samples["after_warmup"] = settled_figures(handle, operator, port)
            # RSS along the way (settled at each point): a plateau, or growth without end?
            step = sample_every or cycles
            for done in range(warmup, cycles, step):
                list(pool.map(lambda i: cycle(api, i), range(done, min(done + step, cycles))))
                if done + step < cycles:
                    figures = settled_figures(handle, operator, port)
                    samples.setdefault("rss_kib_along", []).append((done + step, figures["rss_kib"]))
                    print(f"after {done + step} cycles: RSS {figures['rss_kib']} KiB", file=sys.stderr)
        samples["at_end"] = settled_figures(handle, operator, port)
    finally:
        operator.stop()
        client.close()
    first, last = samples["after_warmup"], samples["at_end"]
    return {
        "cycles": cycles,
        "warmup_cycles": warmup,
        "parallel": parallel,
        "operator_env": operator_env,
        "seconds": round(time.monotonic() - started, 1),
        **{f"{key}_after_warmup": value for key, value in first.items()},
        **{f"{key}_at_end": value for key, value in last.items()},
        "rss_kib_along": [[warmup, first["rss_kib"]], *samples.get("rss_kib_along", []), [cycles, last["rss_kib"]]],
        **{
            f"{key[:-4]}_growth_percent": round(100.0 * (last[key] - first[key]) / first[key], 2)
            for key in ("rss_kib", "rss_anon_kib", "rss_file_kib")
        },
        **{f"{key}_growth": last[key] - first[key] for key in ("threads", "asyncio_tasks", "watch_streams")},
        "operator_log": str(log),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--sample-every", type=int, default=500, help="also sample (settled) every this many cycles")
    parser.add_argument("--kubeconfig", type=Path, help="an existing cluster instead of a fresh local one")
    parser.add_argument(
        "--operator-env", action="append", default=[], metavar="NAME=VALUE",
        help="extra environment for the operator process (e.g. to compare allocators)",
    )  # fmt: skip
    args = parser.parse_args()
    operator_env = dict(item.split("=", 1) for item in args.operator_env)
    if args.kubeconfig:
        from ttsfleet.devcluster import binaries

        paths = binaries.ensure_binaries(("kubernetes",))
        handle = ClusterHandle(args.kubeconfig.parent, args.kubeconfig, paths["kubectl"])
        print(json.dumps(soak(handle, args.cycles, args.warmup, args.parallel, operator_env, args.sample_every)))
        return 0
    # kwok nodes only: the fleets have no pods, and the machine's one real node stays free.
    kwargs: dict[str, Any] = {"real_nodes": 0} if "real_nodes" in inspect.signature(running).parameters else {}
    with running(default_workdir(f"soak-{os.getpid()}"), **kwargs) as handle:
        print(json.dumps(soak(handle, args.cycles, args.warmup, args.parallel, operator_env, args.sample_every)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
