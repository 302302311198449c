"""The operator at N fleets, on a local cluster of its own (kwok nodes): how long until every child
exists, against server-side applying the same rendered children directly; what an idle fleet
costs the API server; how much memory the operator holds.

For each N:

- fleets: N TTSDeployments are server-side applied with no operator watching their namespace
  (timed: what applying the fleets costs by itself, which the operator's time includes);
- direct: their children are rendered with the operator's own builders and server-side applied
  by ``--workers`` threads, timed from the first apply until a watch has shown every child (the
  same watch that times the operator); then the bench waits until their pods are Ready, so that
  the controllers' work on them is over before the operator's window starts;
- operator: the operator runs for another namespace, as its own ServiceAccount; once it has
  finished its first resync, N TTSDeployments are server-side applied at once (``--workers``
  threads, as the baseline), timed from the first of them until every child exists and until
  every fleet is Ready;
- direct, again: the fleets and the direct apply once more in a namespace of their own, after the
  operator's window (the cluster holds more objects by then); the window's ratio is the operator's
  time against the mean of the baselines on either side of it;
- ``--rounds`` times (default 3) an operator window (a fresh operator, a namespace of its own) and
  a baseline after it: the headline ratio is the median of the rounds' ratios (on 2 cores one
  window's ratio varied from 1.0 to 1.8 with nothing changed);
- with ``--reference``, each round also a window of bench/reference_controller.py in the
  operator's place (the same watches and identity, children applied as each fleet appears,
  nothing else: the least any controller does) and a baseline after it: its ratio is the floor
  this machine sets, and the operator's window against it is what the operator adds;
- idle (after the first window only, as the RSS and the reactions): once every fleet is settled,
  the API server's own counters (priority-and-fairness, by the operator's identity:
  ttsfleet.devcluster.traffic) over ``--idle-periods`` resync periods, each period ending on the
  operator's ``ttsfleet_operator_resyncs_total`` (all passes of that resync done);
- CPU seconds of each process on the machine's cores (the cluster's components, the operator,
  the bench) during the direct apply and during the operator's window: both are CPU-bound on a
  small machine, so the ratio of times follows the ratio of CPU work;
- RSS of the operator process after the idle periods (VmRSS);
- reaction: ``--edits`` spec edits (a new image), one at a time, each timed until the
  StatefulSet carries it (p50, p99); then as many fleets scaled up by one pod, one at a time,
  each timed from the new pod first seen Ready until the fleet's status counts it.

    .venv/bin/python bench/operator_bench.py --fleets 10 100 [--replicas 1] [--resync-seconds 10] [--reference]
    .venv/bin/python bench/operator_bench.py --fleets 1000 --immediate-binding --idle-periods 2 --rounds 1

``--immediate-binding`` puts the cache volumes in a class of the bench's own that binds a claim
when it is created: with the local-SSD class a thousand pending pods take over an hour to bind.
The controllers' work on the pods (volumes bound, pods scheduled) then runs during both timed
windows instead of after them, so its ratio is not comparable with a run without it.

TTSFLEET_BENCH_OPERATOR_LOG_LEVEL=info keeps the operator's log of every apply and condition
(for a timeline of one run; the default, warning, keeps it out of the measured CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.dynamic import DynamicClient
from prometheus_client.parser import text_string_to_metric_families

from ttsfleet.devcluster import addons, traffic
from ttsfleet.devcluster.cluster import ClusterHandle, free_port, running
from ttsfleet.devcluster.waiting import wait_for
from ttsfleet.operator import applied, desired, kinds, naming
from ttsfleet.operator.kube import Kube
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import API_VERSION, GROUP, KIND, PLURAL, VERSION, parse_spec

REPO = Path(__file__).resolve().parents[1]
IMAGE = "ttsfleet/worker:0.1.0"


# A StorageClass of the bench's own, bound as soon as a claim exists: with the local-SSD class
# (WaitForFirstConsumer), once a thousand pods were pending the local cluster bound about 20 a
# minute (somewhere in the scheduler's and the volume controller's matching; not looked into).
IMMEDIATE_CLASS = "bench-immediate"


def fleet(name: str, replicas: int, storage_class: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "image": IMAGE,
            "replicas": replicas,
            # hf:// sources must pin a full commit (admission refuses branches and short hashes).
            "model": {"source": "hf://2Noise/ChatTTS", "revision": "1a3c2f6e9b8d4c7f0e5a2b1d3c6f9e8a7b4d2c1f"},
            "resources": {"gpu": 0, "cpu": "100m", "memory": "128Mi"},
            "modelCache": {"storageClassName": storage_class},
        },
    }


def immediate_volumes(plan: addons.NodePlan, per_node: int) -> list[dict[str, Any]]:
    """The bench's class and ``per_node`` local volumes of it on each node."""
    volumes = [
        addons.local_volume(plan, node_name, slot, class_name=IMMEDIATE_CLASS)
        for node_name in plan.node_names()
        for slot in range(per_node)
    ]
    return [addons.storage_class(IMMEDIATE_CLASS, binding="Immediate"), *volumes]


def wait(what: str, probe: Callable[[], bool], timeout: float, interval: float = 0.2) -> float:
    """``wait_for``, returning when (monotonic) the probe first held."""
    wait_for(probe, what=what, timeout=timeout, interval=interval)
    return time.monotonic()


def kubectl_json(cluster: ClusterHandle, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cluster.kubectl(*args, "-o", "json", timeout=300).stdout)
    return data


def rendered_children(cluster: ClusterHandle, namespace: str) -> list[dict[str, Any]]:
    """What the operator would apply for every fleet in the namespace (stamped as it stamps them)."""
    out: list[dict[str, Any]] = []
    for body in kubectl_json(cluster, "get", "ttsd", "-n", namespace)["items"]:
        owner = Owner.of(body)
        out += [applied.stamp(child) for child in desired.build_all(owner, parse_spec(body["spec"]), {})]
    return out


class NamespaceWatch:
    """Every child the operator creates in a namespace, seen through one watch per kind (what
    the API server sends every watcher anyway): polling with lists would load the API server, and
    the 2 cores it shares with the operator, during the very time measured. With ``fleets`` the
    fleets' conditions instead (waiting for a thousand fleets to turn Ready, after that time)."""

    def __init__(self, cluster: ClusterHandle, namespace: str, fleets: bool = False) -> None:
        watched = [] if fleets else [kind for kind in kinds.CHILD_KINDS if kind not in kinds.OPTIONAL_KINDS]
        self._api = admin_client(cluster, pool=len(watched) + 1)
        self._seen: set[tuple[str, str]] = set()
        self._ready: set[str] = set()  # StatefulSets with every replica Ready
        self._fleets: dict[str, tuple[bool, bool]] = {}  # fleet -> (Ready, Ready and settled)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        dynamic = DynamicClient(self._api)
        selector = f"{naming.LABEL_MANAGED_BY}={naming.FIELD_MANAGER}"
        targets = [(kind, selector) for kind in watched] + ([(kinds.TTSDEPLOYMENT, "")] if fleets else [])
        self._threads: list[threading.Thread] = []
        for kind, label_selector in targets:
            resource = dynamic.resources.get(api_version=kind.api_version, kind=kind.kind)
            thread = threading.Thread(
                target=self._watch, args=(dynamic, resource, namespace, label_selector), daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _watch(self, dynamic: DynamicClient, resource: Any, namespace: str, selector: str) -> None:
        try:
            while not self._stop.is_set():
                # A watch the API server ends (its timeout) starts again; names already seen stay.
                for event in dynamic.watch(resource, namespace=namespace, label_selector=selector, timeout=60):
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._note(resource.kind, event["object"])
                    if self._stop.is_set():
                        return
        except Exception:
            if not self._stop.is_set():  # closing the client ends a watch with an error: expected
                raise

    def _note(self, kind: str, obj: Any) -> None:
        name = obj.metadata.name
        with self._lock:
            if kind == kinds.TTSDEPLOYMENT.kind:
                status = obj.to_dict().get("status") or {}
                conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
                ready = conditions.get("Ready") == "True"
                self._fleets[name] = (ready, ready and conditions.get("Progressing") == "False")
                return
            self._seen.add((kind, name))
            if kind == kinds.STATEFULSET.kind:
                ready = (obj.status.readyReplicas or 0) >= (obj.spec.replicas or 0)
                (self._ready.add if ready else self._ready.discard)(name)

    def count(self) -> int:
        with self._lock:
            return len(self._seen)

    def statefulsets_ready(self) -> int:
        with self._lock:
            return len(self._ready)

    def fleets_ready(self, settled: bool = False) -> int:
        """Fleets whose Ready condition is True (and, with ``settled``, Progressing False)."""
        with self._lock:
            return sum(1 for ready, calm in self._fleets.values() if (calm if settled else ready))

    def close(self) -> None:
        self._stop.set()
        self._api.close()


def apply_all(cluster: ClusterHandle, objects: list[dict[str, Any]], workers: int) -> float:
    """Server-side apply every object from ``workers`` threads (as the admin); seconds taken."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = workers
    kube = Kube(client.ApiClient(configuration), field_manager="operator-bench")
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(kube.apply, objects))
    elapsed = time.monotonic() - start
    kube.close()
    return elapsed


def admin_client(cluster: ClusterHandle, pool: int = 4) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = pool
    return client.ApiClient(configuration)


def _worker_image(sts: Any) -> str | None:
    pod = sts.spec.template.spec
    return str(pod.containers[0].image) if pod is not None else None


def reaction_seconds(cluster: ClusterHandle, namespace: str, names: list[str]) -> list[float]:
    """One spec edit at a time (a new image), each timed until the StatefulSet carries it."""
    api = admin_client(cluster)
    custom, apps = client.CustomObjectsApi(api), client.AppsV1Api(api)
    out: list[float] = []
    for index, name in enumerate(names):
        image = f"{IMAGE}-edit{index}"
        start = time.monotonic()
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": {"image": image}})
        while _worker_image(apps.read_namespaced_stateful_set(name, namespace)) != image:
            if time.monotonic() - start > 60:
                raise TimeoutError(f"StatefulSet {namespace}/{name} did not follow a spec edit in 60 s")
            time.sleep(0.02)
        out.append(time.monotonic() - start)
    api.close()
    return out


def _pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def pod_ready_to_status_seconds(cluster: ClusterHandle, namespace: str, names: list[str]) -> list[float]:
    """One fleet at a time scaled up by one pod: seconds from the new pod first seen Ready to the
    fleet's status counting it (through the StatefulSet controller's status and one pass)."""
    api = admin_client(cluster)
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    out: list[float] = []
    for name in names:
        fleet_now = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        replicas = int(fleet_now["spec"]["replicas"]) + 1
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": {"replicas": replicas}})
        pod, start = f"{name}-{replicas - 1}", time.monotonic()
        ready_at: float | None = None
        while True:
            if ready_at is None:
                with contextlib.suppress(client.ApiException):
                    if _pod_ready(core.read_namespaced_pod(pod, namespace)):
                        ready_at = time.monotonic()
            fleet_obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            if ready_at is not None and int(fleet_obj.get("status", {}).get("readyReplicas") or 0) >= replicas:
                out.append(time.monotonic() - ready_at)
                break
            if time.monotonic() - start > 120:
                raise TimeoutError(f"{namespace}/{name}: pod {pod} Ready={ready_at is not None}, status not updated")
            time.sleep(0.02)
    api.close()
    return out


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of proc(5); the split above starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds of every process that matters to the measured window: the
    cluster's components, the controller (the operator or the reference) and this bench."""

    def __init__(self, cluster: ClusterHandle, controller: tuple[str, int] | None = None) -> None:
        self.pids: dict[str, int] = {**cluster.component_pids(), "bench": os.getpid()}
        if controller is not None:
            self.pids[controller[0]] = controller[1]

    def read(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    @staticmethod
    def between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: after[name] - before.get(name, 0.0) for name in after}


def print_cpu(what: str, cpu: dict[str, float]) -> None:
    busiest = sorted(cpu.items(), key=lambda item: -item[1])
    print(f"{what}: {sum(cpu.values()):.2f} in all; " + ", ".join(f"{k} {v:.2f}" for k, v in busiest), flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def fleets_in(namespace: str, n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    storage_class = IMMEDIATE_CLASS if args.immediate_binding else addons.LOCAL_SSD_CLASS
    docs = [fleet(f"f{i:04d}", args.replicas, storage_class) for i in range(n)]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    return docs


class ReferenceController:
    """bench/reference_controller.py for one namespace, as the operator's identity."""

    SCRIPT = REPO / "bench" / "reference_controller.py"

    def __init__(self, kubeconfig: Path, namespace: str, workers: int, log_path: Path) -> None:
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-P", str(self.SCRIPT), "-n", namespace, "--workers", str(workers)],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"listed":
            raise RuntimeError(f"the reference controller exited before it listed; see {log_path}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()


class Operator:
    def __init__(self, kubeconfig: Path, namespace: str, resync: float, workers: int, log_path: Path) -> None:
        self.metrics_port, self.health_port = free_port(), free_port()
        self._log = log_path.open("ab")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-m",
                "ttsfleet.operator",
                "-n",
                namespace,
                "--resync-seconds",
                str(resync),
                "--workers",
                str(workers),
                "--metrics-port",
                str(self.metrics_port),
                "--liveness",
                f"http://127.0.0.1:{self.health_port}/healthz",
                "--log-level",
                os.environ.get("TTSFLEET_BENCH_OPERATOR_LOG_LEVEL", "warning"),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

        def live() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2):
                    return True
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"operator exited; see {log_path}") from None
                return False

        wait("the operator to be live", live, 60)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return math.nan

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


APPLIES = "ttsfleet_operator_applies_total"
STATUS_WRITES = "ttsfleet_operator_status_writes_total"
PASSES = "ttsfleet_operator_reconcile_duration_seconds_count"
COUNTED = (APPLIES, STATUS_WRITES, PASSES)


def consistent_counts(
    cluster: ClusterHandle, identity: traffic.Identity, operator: Operator
) -> tuple[traffic.Requests, dict[str, float]]:
    """The API server's count of the operator's requests and the operator's own counters as of one
    moment: read the counters on both sides of the API server's figure until they did not move
    in between (a busy operator moves them; the last try is taken as it is). Read one after the
    other, a counter read later includes requests the API server's figure does not."""
    for _ in range(50):
        first = {name: operator.metric(name) for name in COUNTED}
        seen = traffic.requests(cluster, identity)
        last = {name: operator.metric(name) for name in COUNTED}
        if first == last:
            break
        time.sleep(0.02)
    return seen, last


@dataclass
class Window:
    """One controller's window (the operator's or the reference's): N fleets applied at once,
    until every child existed; and the direct baselines on either side of it."""

    children_s: float
    cpu_s: float  # every process's CPU seconds in the window
    controller_cpu_s: float
    direct_before_s: float = math.nan
    direct_after_s: float = math.nan

    @property
    def ratio(self) -> float:
        """Against the mean of the direct baselines on either side of it."""
        return self.children_s / ((self.direct_before_s + self.direct_after_s) / 2)

    def describe(self) -> str:
        return (
            f"{self.children_s:.2f} s ({self.ratio:.2f}x; CPU {self.cpu_s:.1f} s, "
            f"controller {self.controller_cpu_s:.1f})"
        )


@dataclass
class Steady:
    """What the first window's fleets cost and how the operator reacts, once they converged."""

    converge_writes_per_fleet: float
    # What those writes were, per fleet (the operator's own counters): child applies, status
    # writes, and the rest (Events on condition changes), and how many passes made them.
    converge_applies_per_fleet: float
    converge_status_writes_per_fleet: float
    converge_passes_per_fleet: float
    idle_reads: float  # per fleet per resync period
    idle_writes: float
    rss_mb: float
    edit_p50: float
    edit_p99: float
    # A new pod first seen Ready → the fleet's status counting it.
    pod_ready_p50: float
    pod_ready_p99: float


def steady_state(
    cluster: ClusterHandle,
    identity: traffic.Identity,
    operator: Operator,
    ns: str,
    n: int,
    args: argparse.Namespace,
    before: traffic.Requests,
    counted_before: dict[str, float],
) -> Steady:
    """The requests of converging (since ``before``), then ``--idle-periods`` idle resyncs, the
    operator's RSS, and its reaction to spec edits and to new Ready pods."""
    converged = traffic.requests(cluster, identity) - before
    counted = {name: (operator.metric(name) - counted_before[name]) / n for name in COUNTED}
    idle_start = traffic.requests(cluster, identity)
    resyncs = operator.metric("ttsfleet_operator_resyncs_total")
    wait(
        f"{args.idle_periods} idle resyncs",
        lambda: operator.metric("ttsfleet_operator_resyncs_total") >= resyncs + args.idle_periods,
        args.idle_periods * args.resync_seconds * 10,
        0.5,
    )
    idle = traffic.requests(cluster, identity) - idle_start
    rss = operator.rss_mb()
    step = max(1, n // args.edits)
    edited = [f"f{i:04d}" for i in range(0, n, step)][: args.edits]
    reactions = reaction_seconds(cluster, ns, edited)
    ready_reactions = pod_ready_to_status_seconds(cluster, ns, edited)
    per = n * args.idle_periods
    return Steady(
        converge_writes_per_fleet=converged.writes / n,
        converge_applies_per_fleet=counted[APPLIES],
        converge_status_writes_per_fleet=counted[STATUS_WRITES],
        converge_passes_per_fleet=counted[PASSES],
        idle_reads=idle.reads / per,
        idle_writes=idle.writes / per,
        rss_mb=rss,
        edit_p50=percentile(reactions, 0.5),
        edit_p99=percentile(reactions, 0.99),
        pod_ready_p50=percentile(ready_reactions, 0.5),
        pod_ready_p99=percentile(ready_reactions, 0.99),
    )


@dataclass
class Row:
    fleets: int
    children: int
    fleets_s: float
    # Every direct baseline: before the first window and after each one.
    direct_s: list[float]
    windows: list[Window]
    ready_s: float
    steady: Steady
    # With --reference: the reference controller's windows, one per round.
    reference: list[Window] = field(default_factory=list)

    def ratios(self) -> list[float]:
        return [w.ratio for w in self.windows]

    @property
    def ratio(self) -> float:
        """The median round's ratio."""
        return statistics.median(self.ratios())

    @property
    def children_s(self) -> float:
        return statistics.median(w.children_s for w in self.windows)

    def over_reference(self) -> list[float]:
        """Each round's operator window against that round's reference window."""
        return [w.children_s / r.children_s for w, r in zip(self.windows, self.reference, strict=True)]


def direct_window(
    cluster: ClusterHandle, ns: str, n: int, args: argparse.Namespace, when: str
) -> tuple[float, float, int]:
    """N fleets applied with no operator watching ``ns``, then their children server-side applied
    directly, timed until a watch has shown every child. Waits until their pods are Ready, so that
    the controllers' work on them lands in no later window. Returns the seconds the fleets took,
    the seconds the children took, and how many children there were."""
    create_namespace(cluster, ns)
    meter = CpuMeter(cluster)
    cpu_before = meter.read()
    fleets_s = apply_all(cluster, fleets_in(ns, n, args), args.workers)
    print(f"N={n} ({when}): server-side apply of {n} fleets, no operator watching: {fleets_s:.2f} s", flush=True)
    print_cpu(f"N={n} ({when}): CPU seconds of applying the fleets", CpuMeter.between(cpu_before, meter.read()))
    children = rendered_children(cluster, ns)
    cpu_before = meter.read()
    # Timed as the operator's run is: until the same watch has shown every child (the watch's
    # own cost to the API server then weighs on both runs alike).
    watch = NamespaceWatch(cluster, ns)
    try:
        start = time.monotonic()
        answered_s = apply_all(cluster, children, args.workers)
        direct_s = wait(f"{len(children)} children", lambda: watch.count() >= len(children), 600, 0.05) - start
        print(
            f"N={n} ({when}): direct server-side apply of {len(children)} children: every one seen after "
            f"{direct_s:.2f} s (the last apply answered after {answered_s:.2f} s)",
            flush=True,
        )
        print_cpu(f"N={n} ({when}): CPU seconds of the direct apply", CpuMeter.between(cpu_before, meter.read()))
        # The controllers go on after the last apply answered (pods, volumes, their status; the
        # controller-manager's client is rate-limited): let them finish, or their work would land
        # in the next measured window.
        waited = wait(f"{n} direct StatefulSets Ready", lambda: watch.statefulsets_ready() >= n, 1800, 0.5)
    finally:
        watch.close()
    ready_s = waited - start
    print(f"N={n} ({when}): the direct fleets' pods were Ready {ready_s:.0f} s after the first apply", flush=True)
    return fleets_s, direct_s, len(children)


def create_namespace(cluster: ClusterHandle, ns: str) -> None:
    cluster.kubectl("create", "namespace", ns)

    def has_default_sa() -> bool:
        return cluster.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0

    wait(f"ServiceAccount default in {ns}", has_default_sa, 60)


def operator_window(
    cluster: ClusterHandle,
    identity: traffic.Identity,
    operator: Operator,
    ns: str,
    n: int,
    expected: int,
    args: argparse.Namespace,
) -> tuple[Window, float, traffic.Requests, dict[str, float]]:
    """N fleets applied at once in the operator's (empty) namespace, timed until a watch has shown
    every child; then until every fleet is Ready and settled and one more resync is done. Returns
    the window, when the fleets were first Ready (seconds after the first apply), and the API
    server's and the operator's counts as of the window's start."""
    # Started, listed and through one resync: what follows is the reaction to new fleets.
    wait("the operator's first resync", lambda: operator.metric("ttsfleet_operator_resyncs_total") >= 1, 300, 0.5)
    before, counted_before = consistent_counts(cluster, identity, operator)
    watch = NamespaceWatch(cluster, ns)
    try:
        start, applied_at, children_at, cpu = time_children(
            cluster, ns, n, expected, args, watch, ("operator", operator.proc.pid)
        )
    finally:
        watch.close()
    # As of that moment (the operator's counters move on at once: status writes follow).
    counted_now = {name: operator.metric(name) for name in COUNTED}
    until = {name: (counted_now[name] - counted_before[name]) / n for name in COUNTED}
    print(
        f"N={n} ({ns}): until every child existed, per fleet: {until[PASSES]:.1f} passes, "
        f"{until[APPLIES]:.1f} child applies, {until[STATUS_WRITES]:.1f} status writes",
        flush=True,
    )
    # Started once the children exist, so that its events weigh on none of the measured time.
    fleet_watch = NamespaceWatch(cluster, ns, fleets=True)
    try:
        ready_at = wait(f"{n} fleets Ready", lambda: fleet_watch.fleets_ready() >= n, 900, 0.2)
        wait(f"{n} fleets settled", lambda: fleet_watch.fleets_ready(settled=True) >= n, 900, 0.2)
        resyncs = operator.metric("ttsfleet_operator_resyncs_total")
        wait("a resync after settling", lambda: operator.metric("ttsfleet_operator_resyncs_total") > resyncs, 900, 0.5)
    finally:
        fleet_watch.close()
    print(
        f"N={n} ({ns}): children after {children_at - start:.2f} s (applying the fleets took "
        f"{applied_at - start:.2f} s), Ready after {ready_at - start:.2f} s",
        flush=True,
    )
    window = Window(children_s=children_at - start, cpu_s=sum(cpu.values()), controller_cpu_s=cpu["operator"])
    return window, ready_at - start, before, counted_before


def time_children(
    cluster: ClusterHandle,
    ns: str,
    n: int,
    expected: int,
    args: argparse.Namespace,
    watch: NamespaceWatch,
    controller: tuple[str, int],
) -> tuple[float, float, float, dict[str, float]]:
    """N fleets applied at once in the controller's (empty) namespace, the way the baseline applies
    the children (--workers threads), timed until ``watch`` has shown every child. Returns when
    (monotonic) the first fleet was applied, the last applied and every child seen, and the CPU
    seconds of every process in between."""
    meter = CpuMeter(cluster, controller)
    cpu_before = meter.read()
    start = time.monotonic()
    applied_at = start + apply_all(cluster, fleets_in(ns, n, args), args.workers)
    children_at = wait(f"{expected} children", lambda: watch.count() >= expected, 600, 0.05)
    cpu = CpuMeter.between(cpu_before, meter.read())
    print_cpu(f"N={n} ({ns}): CPU seconds until every child existed", cpu)
    return start, applied_at, children_at, cpu


def reference_window(
    cluster: ClusterHandle,
    identity: traffic.Identity,
    ns: str,
    n: int,
    expected: int,
    args: argparse.Namespace,
    logs: Path,
) -> Window:
    """The same window with bench/reference_controller.py in the operator's place; then until
    every StatefulSet is Ready, so that the controllers' work on its pods lands in no later window."""
    create_namespace(cluster, ns)
    reference = ReferenceController(identity.kubeconfig, ns, args.operator_workers, logs / f"reference-{ns}.log")
    watch = NamespaceWatch(cluster, ns)
    try:
        start, applied_at, children_at, cpu = time_children(
            cluster, ns, n, expected, args, watch, ("reference", reference.proc.pid)
        )
        ready_at = wait(f"{n} StatefulSets Ready", lambda: watch.statefulsets_ready() >= n, 1800, 0.5)
    finally:
        watch.close()
        reference.stop()
    print(
        f"N={n} ({ns}): children after {children_at - start:.2f} s (applying the fleets took "
        f"{applied_at - start:.2f} s), StatefulSets Ready after {ready_at - start:.2f} s",
        flush=True,
    )
    return Window(children_s=children_at - start, cpu_s=sum(cpu.values()), controller_cpu_s=cpu["reference"])


def run_one(cluster: ClusterHandle, identity: traffic.Identity, n: int, args: argparse.Namespace, logs: Path) -> Row:
    # The baseline runs before the first operator window and after each: the cluster holds more
    # objects each time (the earlier fleets and their Running pods; the same direct apply took
    # 40 % longer after one window), and each operator window is compared with the mean of the
    # baselines on either side of it. On 2 cores one window's ratio varied from 1.0 to 1.8 with
    # nothing changed, so ``--rounds`` repeats the pair and the headline is the median.
    fleets_s, first_direct_s, expected = direct_window(cluster, f"bench-direct-{n}", n, args, "before")
    direct_s = [first_direct_s]
    windows: list[Window] = []
    reference: list[Window] = []

    def baseline_after(window: Window, ns: str, when: str) -> None:
        # No controller watches this namespace: it sees none of it.
        window.direct_before_s = direct_s[-1]
        direct_s.append(direct_window(cluster, ns, n, args, when)[1])
        window.direct_after_s = direct_s[-1]
        print(f"N={n} {when}: {window.describe()} against direct {direct_s[-2]:.2f}/{direct_s[-1]:.2f} s", flush=True)

    for round_index in range(args.rounds):
        op_ns = f"bench-operator-{n}-{round_index + 1}"
        create_namespace(cluster, op_ns)
        # A fresh operator for each window, watching only its namespace: every window starts alike.
        operator = Operator(
            identity.kubeconfig, op_ns, args.resync_seconds, args.operator_workers, logs / f"operator-{op_ns}.log"
        )
        try:
            window, ready_s, before, counted_before = operator_window(
                cluster, identity, operator, op_ns, n, expected, args
            )
            windows.append(window)
            if round_index == 0:  # the rest is measured once, after the first window
                steady = steady_state(cluster, identity, operator, op_ns, n, args, before, counted_before)
                first_ready_s = ready_s
        finally:
            operator.stop()
        baseline_after(window, f"bench-direct-{n}-{round_index + 1}", f"operator round {round_index + 1}")
        if args.reference:
            ref_ns = f"bench-reference-{n}-{round_index + 1}"
            reference.append(reference_window(cluster, identity, ref_ns, n, expected, args, logs))
            baseline_after(reference[-1], f"bench-direct-{n}-{round_index + 1}r", f"reference round {round_index + 1}")
    return Row(
        fleets=n,
        children=expected,
        fleets_s=fleets_s,
        direct_s=direct_s,
        windows=windows,
        ready_s=first_ready_s,
        steady=steady,
        reference=reference,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fleets", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--replicas", type=int, default=1, help="pods per fleet (each with a local PV)")
    parser.add_argument("--resync-seconds", type=float, default=10.0)
    parser.add_argument("--idle-periods", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8, help="threads of the direct-apply baseline")
    parser.add_argument("--operator-workers", type=int, default=8, help="the operator's --workers")
    parser.add_argument("--edits", type=int, default=20, help="spec edits timed until the StatefulSet follows")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="operator windows per N, each followed by one more direct baseline; the ratio is their median",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="each round also times bench/reference_controller.py (the least any controller does) in "
        "the operator's place, followed by one more baseline: the floor this machine sets for the ratio",
    )
    parser.add_argument(
        "--immediate-binding",
        action="store_true",
        help="cache volumes bound when their claim is created, not when the pod is scheduled "
        "(for a thousand fleets with pods: see IMMEDIATE_CLASS)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    # The first baseline, and per round an operator window and a baseline (and with --reference a
    # reference window and a baseline); nothing is deleted between them (a namespace's deletion
    # would weigh on the next window).
    windows_per_round = 4 if args.reference else 2  # each controller window and its baseline
    pods = (windows_per_round * args.rounds + 1) * sum(args.fleets) * args.replicas
    # Room for every pod of every window on the three kwok nodes: a local PV each, and CPU for the
    # fetch init container's request.
    per_node = math.ceil(pods / 3) + 8
    plan = addons.NodePlan(
        volumes_per_node=16 if args.immediate_binding else per_node,
        pods=max(110, per_node + 30),
        cpu=str(max(32, 2 * per_node)),
        # Each pod is scheduled on its fetch init container's 1 GiB; with immediate binding the
        # volumes (and so the pods) are not spread by the scheduler: one node may get them all.
        memory=f"{max(128, 2 * per_node)}Gi",
    )
    with tempfile.TemporaryDirectory(prefix="operator-bench-") as tmp:
        workdir = Path(tmp) / "cluster"
        # kwok nodes only: the machine's one real node stays free for whatever else runs.
        with running(workdir, plan, real_nodes=0) as cluster:
            crds = REPO / "crds"
            cluster.kubectl("apply", "--server-side", "-f", str(crds))
            cluster.wait_crds_established()
            cluster.wait_for_owner_kind(API_VERSION, KIND)
            if args.immediate_binding:
                cluster.apply_objects(immediate_volumes(plan, per_node))
            identity = traffic.issue(cluster, "ttsfleet-bench-operator", "ttsfleet-bench", Path(tmp) / "op.kubeconfig")
            logs = Path(tempfile.mkdtemp(prefix="operator-bench-logs-"))
            rows = [run_one(cluster, identity, n, args, logs) for n in args.fleets]

    print()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{args.replicas} pod(s) per fleet, resync every {args.resync_seconds:.0f} s, {args.rounds} round(s); "
        f"operator logs in {logs}"
    )
    header = (
        f"{'N':>5} {'children':>8} {'fleets s':>8} {'direct s':>8} {'operator s':>10} {'ratio':>6} {'Ready s':>8} "
        f"{'writes/fleet':>12} {'idle reads':>10} {'idle writes':>11} {'RSS MB':>7} {'edit p50':>8} {'edit p99':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        st = r.steady
        print(
            f"{r.fleets:>5} {r.children:>8} {r.fleets_s:>8.2f} {statistics.median(r.direct_s):>8.2f} "
            f"{r.children_s:>10.2f} {r.ratio:>6.2f} {r.ready_s:>8.2f} {st.converge_writes_per_fleet:>12.1f} "
            f"{st.idle_reads:>10.2f} {st.idle_writes:>11.2f} {st.rss_mb:>7.0f} {st.edit_p50:>8.2f} {st.edit_p99:>8.2f}"
        )
    print(
        "(fleets s: applying the fleets alone, no operator; direct s and operator s: medians of the windows; "
        "ratio: the median of the rounds' ratios, each window against the mean of the baselines on either side; "
        "writes/fleet: while converging; idle reads and writes: per fleet per resync period; "
        "edit: seconds from a spec edit to the StatefulSet carrying it, one edit at a time)"
    )
    for r in rows:
        st = r.steady
        print(
            f"N={r.fleets}: baselines {' / '.join(f'{d:.2f}' for d in r.direct_s)} s; operator windows "
            + ", ".join(w.describe() for w in r.windows)
        )
        if r.reference:
            print(
                f"N={r.fleets}: reference windows {', '.join(w.describe() for w in r.reference)}; "
                f"reference against direct {statistics.median(w.ratio for w in r.reference):.2f}x (median), "
                f"operator against reference {statistics.median(r.over_reference()):.2f}x (median of "
                + ", ".join(f"{x:.2f}" for x in r.over_reference())
                + ")"
            )
        others = st.converge_writes_per_fleet - st.converge_applies_per_fleet - st.converge_status_writes_per_fleet
        print(
            f"N={r.fleets}: per fleet while converging: {st.converge_passes_per_fleet:.1f} passes, "
            f"{st.converge_applies_per_fleet:.1f} child applies, "
            f"{st.converge_status_writes_per_fleet:.1f} status writes, {others:.1f} other writes (Events); "
            f"pod Ready to fleet status p50 {st.pod_ready_p50:.2f} s, p99 {st.pod_ready_p99:.2f} s"
        )
    big = rows[-1]
    ratios = big.ratios()
    print(
        f"headline: N={big.fleets}: every child {big.children_s:.1f} s after the fleets were applied vs "
        f"{statistics.median(big.direct_s):.1f} s applying them directly, {big.ratio:.2f}x (median of "
        f"{len(ratios)} rounds, {min(ratios):.2f}-{max(ratios):.2f}x); idle {big.steady.idle_writes:.2f} writes and "
        f"{big.steady.idle_reads:.2f} reads per fleet per {args.resync_seconds:.0f} s resync; operator RSS "
        f"{big.steady.rss_mb:.0f} MB; spec edit to StatefulSet p50 {big.steady.edit_p50:.2f} s, "
        f"p99 {big.steady.edit_p99:.2f} s"
        + (
            f"; the reference controller {statistics.median(w.ratio for w in big.reference):.2f}x, "
            f"the operator {statistics.median(big.over_reference()):.2f}x the reference's time"
            if big.reference
            else ""
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
