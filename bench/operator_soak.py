"""Operator soak: create/update/delete cycles of fleets against a local cluster, and what the
operator process holds afterwards (resident memory, threads, open files and sockets).

Brings up its own local cluster (or uses ``--kubeconfig``), runs the operator as a process, and
drives ``--cycles`` cycles (create a fleet with zero replicas, change it, delete it; several at a
time). Samples are taken after ``--warmup`` cycles and at the end, both after the operator has
finished two more resyncs (so that it is idle, not mid-pass). Prints one JSON line of figures;
it asserts nothing (speed and size are figures to watch, not test budgets).

    .venv/bin/python bench/operator_soak.py --cycles 1000 --warmup 100
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))

from operator_process import OperatorProcess  # noqa: E402

from ttsfleet.devcluster.cluster import ClusterHandle, default_workdir, running  # noqa: E402
from ttsfleet.operator.spec import GROUP, KIND, PLURAL, VERSION  # noqa: E402

NAMESPACE = "soak"


def process_figures(pid: int) -> dict[str, int]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    fds = list(Path(f"/proc/{pid}/fd").iterdir())
    sockets = sum(1 for fd in fds if os.readlink(fd).startswith("socket:"))
    return {
        "rss_kib": int(status["VmRSS"].split()[0]),
        "threads": int(status["Threads"]),
        "open_files": len(fds),
        "sockets": sockets,
    }


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


def soak(handle: ClusterHandle, cycles: int, warmup: int, parallel: int) -> dict[str, Any]:
    handle.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    handle.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))
    handle.kubectl("create", "namespace", NAMESPACE)
    log = Path(tempfile.mkdtemp(prefix="soak-")) / "operator.log"
    operator = OperatorProcess(handle.env, log, namespace=NAMESPACE)
    operator.start()
    client = kubernetes.config.new_client_from_config(config_file=str(handle.kubeconfig))
    api = kubernetes.client.CustomObjectsApi(client)
    samples: dict[str, Any] = {}
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda i: cycle(api, i), range(warmup)))
            operator.wait_for_resyncs(2, timeout=300)
            samples["after_warmup"] = process_figures(pid_of(operator))
            list(pool.map(lambda i: cycle(api, i), range(warmup, cycles)))
        operator.wait_for_resyncs(2, timeout=300)
        samples["at_end"] = process_figures(pid_of(operator))
    finally:
        operator.stop()
        client.close()
    first, last = samples["after_warmup"], samples["at_end"]
    return {
        "cycles": cycles,
        "warmup_cycles": warmup,
        "parallel": parallel,
        "seconds": round(time.monotonic() - started, 1),
        **{f"{key}_after_warmup": value for key, value in first.items()},
        **{f"{key}_at_end": value for key, value in last.items()},
        "rss_growth_percent": round(100.0 * (last["rss_kib"] - first["rss_kib"]) / first["rss_kib"], 2),
        "operator_log": str(log),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--kubeconfig", type=Path, help="an existing cluster instead of a fresh local one")
    args = parser.parse_args()
    if args.kubeconfig:
        from ttsfleet.devcluster import binaries

        paths = binaries.ensure_binaries(("kubernetes",))
        handle = ClusterHandle(args.kubeconfig.parent, args.kubeconfig, paths["kubectl"])
        print(json.dumps(soak(handle, args.cycles, args.warmup, args.parallel)))
        return 0
    # kwok nodes only: the fleets have no pods, and the machine's one real node stays free.
    kwargs: dict[str, Any] = {"real_nodes": 0} if "real_nodes" in inspect.signature(running).parameters else {}
    with running(default_workdir(f"soak-{os.getpid()}"), **kwargs) as handle:
        print(json.dumps(soak(handle, args.cycles, args.warmup, args.parallel)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
