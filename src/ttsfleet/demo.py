"""``python -m ttsfleet.demo`` (``make demo``): the whole system on one machine, step by step.

A local Kubernetes cluster (or the current kube context with ``--use-current-context``), the
operator installed with its Helm chart, an example fleet applied and waited for until Ready, and
a sentence streamed into a WAV file.

Where the local cluster has a real node with the project's images (``ttsfleet-cluster images``),
nothing is simulated: the operator runs as a pod from its image under the chart's ServiceAccount
and RBAC, a model server pod serves generated weights inside the cluster, ``examples/cpu.yaml``
runs on the real node (image, model source and the node's toleration/selector changed; see
``ttsfleet.realpods``), and the speech comes from the fleet's Service. Without one (or with
``--use-current-context``), the operator runs here under the chart's ServiceAccount identity,
the fleet's pods run on simulated (kwok) nodes, and a worker started here on a real Triton
server, with the serving configuration the operator rendered for that fleet, speaks instead.

``--with-addons`` (``make demo ADDONS=1``) also starts the cluster's optional add-ons, KEDA's
operator and metrics adapter and Prometheus (``--with-addons=prometheus,keda,argocd`` picks them),
built once from source and cached like the other binaries; the plain demo starts none.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttsfleet import contract, logs
from ttsfleet.devcluster import binaries
from ttsfleet.devcluster.cluster import ClusterHandle, LocalCluster, default_workdir
from ttsfleet.devcluster.waiting import wait_for

if TYPE_CHECKING:  # the worker stack (torch) is imported only when the demo streams
    from ttsfleet.worker.client import TtsClient

log = logging.getLogger("ttsfleet.demo")

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ttsfleet-operator"
EXAMPLE = REPO / "examples" / "cpu.yaml"
SYSTEM_NAMESPACE = "ttsfleet-system"
DEMO_NAMESPACE = "demo"
RELEASE = "ttsfleet"
SENTENCE = "Hello from ttsfleet. This sentence was streamed from a Triton server."
# What --with-addons starts when it names none: the add-ons KEDA's autoscaling paths need.
DEFAULT_ADD_ONS = ("prometheus", "keda")


class StepFailed(RuntimeError):
    pass


@dataclass
class Steps:
    total: int
    out: Path
    current: int = 0

    @contextmanager
    def step(self, title: str, logs_hint: str) -> Iterator[None]:
        self.current += 1
        started = time.monotonic()
        log.info("step %d/%d: %s", self.current, self.total, title)
        try:
            yield
        except Exception as error:
            raise StepFailed(
                f"step {self.current}/{self.total} ({title}) failed: {error}\n  logs: {logs_hint}"
            ) from error
        log.info("step %d/%d done in %.1fs", self.current, self.total, time.monotonic() - started)


def _fleet_name(example: Path) -> str:
    import yaml

    return str(yaml.safe_load(example.read_text())["metadata"]["name"])


def _operator_kubeconfig(cluster: ClusterHandle, out: Path) -> Path:
    """The admin kubeconfig, impersonating the ServiceAccount the chart created for the operator."""
    import yaml

    document = yaml.safe_load(cluster.kubeconfig.read_text())
    for user in document["users"]:
        user["user"]["as"] = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{RELEASE}-operator"
    path = out / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path


def _install_chart(cluster: ClusterHandle) -> None:
    assert cluster.helm_path is not None
    subprocess.run(
        [
            str(cluster.helm_path), "upgrade", "--install", RELEASE, str(CHART),
            "--namespace", SYSTEM_NAMESPACE, "--create-namespace",
            "--kubeconfig", str(cluster.kubeconfig), "--wait", "--timeout", "120s",
        ],
        check=True, capture_output=True, text=True,
    )  # fmt: skip


def _start_operator(kubeconfig: Path, out: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    log_file = (out / "operator.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "ttsfleet.operator", "--namespace", DEMO_NAMESPACE, "--log-level", "info"],
        env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in body.get("status", {}).get("conditions", []):
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def parse_add_ons(value: str) -> tuple[str, ...]:
    """``--with-addons`` value: comma-separated add-on names, checked against the known ones."""
    from ttsfleet.devcluster.addons_cluster import ADD_ONS

    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    unknown = [name for name in names if name not in ADD_ONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown add-ons {unknown}; known: {', '.join(ADD_ONS)}")
    return names


def _local_cluster(cluster_name: str, add_ons: tuple[str, ...]) -> LocalCluster:
    if not add_ons:
        return LocalCluster(default_workdir(cluster_name))
    from ttsfleet.devcluster.addons_cluster import ClusterWithAddons

    return ClusterWithAddons(default_workdir(cluster_name), add_ons=add_ons)


def _show_add_ons(local: LocalCluster, cluster: ClusterHandle) -> None:
    """One line per add-on: where a person reaches it, or how to see it working."""
    from ttsfleet.devcluster import addons_keda
    from ttsfleet.devcluster.addons_cluster import ClusterWithAddons

    if not isinstance(local, ClusterWithAddons):
        return
    info = local.addon_info()
    for name in local.add_ons:
        details = ", ".join(f"{key}={value}" for key, value in sorted(info.get(name, {}).items()))
        print(f"add-on {name}: {details or 'running'}", flush=True)
    if "keda" in local.add_ons:
        # The HPA's view of KEDA: the external metrics API its adapter serves.
        print(cluster.kubectl("get", "apiservice", addons_keda.APISERVICE).stdout, flush=True)


def run(
    use_current_context: bool, keep: bool, out: Path, cluster_name: str = "demo", add_ons: tuple[str, ...] = ()
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(total=6, out=out)
    fleet = _fleet_name(EXAMPLE)
    title = f"Kubernetes cluster with add-ons {', '.join(add_ons)}" if add_ons else "Kubernetes cluster"
    with ExitStack() as cleanup:
        with steps.step(title, str(default_workdir(cluster_name) / "logs")):
            if use_current_context:
                paths = binaries.ensure_binaries(("kubernetes", "helm"))
                kubeconfig = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
                cluster = ClusterHandle(out, kubeconfig, paths["kubectl"], paths["helm"], out)
            else:
                local = _local_cluster(cluster_name, add_ons)
                cluster = local.up()
                if not keep:
                    cleanup.callback(local.down)
                _show_add_ons(local, cluster)
        if cluster.real_nodes and {"operator", "worker"} <= set(cluster.images):
            return _run_on_real_pods(cluster, steps, keep, out)
        log.info("no real node with the project's images: the worker runs here as a local process")

        with steps.step("install the CRD and operator with Helm", f"{out} and `helm status {RELEASE}`"):
            _install_chart(cluster)
            from ttsfleet.operator import spec

            cluster.wait_for_owner_kind(spec.API_VERSION, spec.KIND)
            operator = _start_operator(_operator_kubeconfig(cluster, out), out)
            if not keep:
                cleanup.callback(_stop, operator)

        with steps.step(f"apply {EXAMPLE.relative_to(REPO)} and wait for Ready", str(out / "operator.log")):
            cluster.kubectl("create", "namespace", DEMO_NAMESPACE, check=False)
            cluster.kubectl("apply", "-n", DEMO_NAMESPACE, "-f", str(EXAMPLE))

            def ready() -> bool:
                body = json.loads(cluster.kubectl("get", "ttsd", fleet, "-n", DEMO_NAMESPACE, "-o", "json").stdout)
                return _condition(body, "Ready").get("status") == "True"

            wait_for(
                ready, what=f"TTSDeployment {fleet} Ready", timeout=180,
                describe=lambda: cluster.kubectl("get", "ttsd,sts,pods,pvc", "-n", DEMO_NAMESPACE, check=False).stdout,
            )  # fmt: skip
            print(cluster.kubectl("get", "ttsd", "-n", DEMO_NAMESPACE).stdout, flush=True)

        with steps.step("worker weights and the fleet's serving config", str(out)):
            from ttsfleet.worker import checkpoint

            weights = checkpoint.ensure_weights("tiny")
            from ttsfleet.operator import naming

            owner = naming.Owner(name=fleet, namespace=DEMO_NAMESPACE, uid="")
            configmap = json.loads(
                cluster.kubectl("get", "configmap", naming.configmap_name(owner), "-n", DEMO_NAMESPACE,
                                "-o", "json").stdout
            )["data"]  # fmt: skip

        with steps.step("start Triton with the fleet's model configuration", str(out / "worker" / "triton.log")):
            from ttsfleet.contract import ServingConfig
            from ttsfleet.worker.server import ServerOptions, TritonServer

            serving = ServingConfig.from_json(configmap[contract.SERVING_JSON_FILE])
            server = TritonServer(ServerOptions(
                model_cache=weights, workdir=out / "worker", serving=serving,
                config_pbtxt=configmap[contract.TRITON_CONFIG_FILE],
            ))  # fmt: skip
            server.start()
            cleanup.callback(server.stop)
            server.wait_for(contract.LIVE_PATH, timeout=120)
            server.load_model(timeout=serving.warmup_timeout_seconds)
            server.wait_for(contract.model_ready_path(serving.model_name), timeout=60)

        with steps.step("stream a sentence into a WAV file", str(out / "worker" / "triton.log")):
            from ttsfleet.worker.client import TtsClient

            with TtsClient(server.grpc_url, model=serving.model_name) as client:
                client.check_ready()
                wav_path = _stream_to_wav(client, out / "speech.wav")
    if keep:
        print(f"cluster left running: export KUBECONFIG={cluster.kubeconfig}")
    return wav_path


def _run_on_real_pods(cluster: ClusterHandle, steps: Steps, keep: bool, out: Path) -> Path:
    """Steps 2-6 with nothing simulated: the chart's operator pod, an in-cluster model source, the
    example fleet on the real node (only image, model source and the node's toleration/selector
    changed), and speech streamed through the fleet's Service (its ClusterIP, via kube-proxy)."""
    from ttsfleet.realpods import model_server, operator_pod, real_fleet
    from ttsfleet.worker.client import TtsClient, TtsError

    fleet = _fleet_name(EXAMPLE)
    with steps.step("install the CRD and the operator pod with Helm", f"kubectl logs -n {SYSTEM_NAMESPACE} deploy"):
        operator_pod.install(cluster, RELEASE, SYSTEM_NAMESPACE)
    with steps.step("model server pod (generated weights over http)", f"kubectl describe pod -n {DEMO_NAMESPACE}"):
        cluster.create_namespace(DEMO_NAMESPACE)
        source = model_server.start(cluster, DEMO_NAMESPACE)
    with steps.step(f"apply {EXAMPLE.relative_to(REPO)} on the real node and wait for Ready", "kubectl get ttsd,pods"):
        import yaml

        body = real_fleet.adapt(
            real_fleet.load_example(EXAMPLE.name),
            image=cluster.images["worker"],
            source=source,
            revision=model_server.REVISION,
        )
        cluster.kubectl("apply", "-n", DEMO_NAMESPACE, "-f", "-", input=yaml.safe_dump(body))
        started = time.monotonic()
        wait_for(
            lambda: (
                real_fleet.condition(real_fleet.get(cluster, DEMO_NAMESPACE, "ttsd", fleet), "Ready").get("status")
                == "True"
            ),
            what=f"TTSDeployment {fleet} Ready (fetch, Triton load, warmup on the real node)",
            timeout=900,
            interval=2,
            describe=lambda: real_fleet.describe(cluster, DEMO_NAMESPACE),
        )
        log.info("fleet Ready %.1fs after apply", time.monotonic() - started)
        print(cluster.kubectl("get", "ttsd", "-n", DEMO_NAMESPACE).stdout, flush=True)
    service = real_fleet.get(cluster, DEMO_NAMESPACE, "service", fleet)
    address = f"{service['spec']['clusterIP']}:{contract.GRPC_PORT}"
    with steps.step(f"reach the fleet's Service at {address}", "kube-proxy's log in the cluster's logs"):

        def answers() -> bool:
            try:
                with TtsClient(address) as probe:
                    probe.check_ready()
                return True
            except TtsError:  # not programmed yet: wait_for shows the wait
                return False

        wait_for(answers, what=f"the fleet's Service {address} answering", timeout=120, interval=2)
    streaming = steps.step("stream a sentence through the Service into a WAV file", f"kubectl logs -n {DEMO_NAMESPACE}")
    with streaming, TtsClient(address) as client:
        wav_path = _stream_to_wav(client, out / "speech.wav")
    if keep:
        print(f"cluster left running: export KUBECONFIG={cluster.kubeconfig}")
    return wav_path


def _stream_to_wav(client: TtsClient, wav_path: Path) -> Path:
    """Stream the demo sentence and write it as a WAV file, logging each chunk as it arrives."""
    from ttsfleet.worker import audio

    pcm = bytearray()
    first: float | None = None
    for chunk in client.stream(SENTENCE):
        first = chunk.received_after if first is None else first
        pcm += chunk.audio
        log.info("chunk=%d bytes=%d after=%.2fs", chunk.index, len(chunk.audio), chunk.received_after)
    samples = audio.decode(bytes(pcm), audio.DEFAULT_FORMAT)
    wav_path.write_bytes(audio.to_wav_bytes(samples))
    duration = audio.duration_seconds(len(samples))
    print(f"\nwrote {wav_path} ({duration:.2f} s of 24 kHz audio, first audio after {first or 0:.2f} s)")
    return wav_path


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ttsfleet-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--use-current-context", action="store_true", help="use $KUBECONFIG instead of a local cluster")
    parser.add_argument("--keep", action="store_true", help="leave the cluster and operator running")
    parser.add_argument("--cluster-name", default="demo", help="name of the local cluster (its files' folder)")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "demo", help="where logs and the WAV go")
    parser.add_argument(
        "--with-addons",
        nargs="?",
        const=DEFAULT_ADD_ONS,
        default="",
        type=parse_add_ons,
        metavar="LIST",
        help=f"also start the local cluster's add-ons (default {','.join(DEFAULT_ADD_ONS)}; argocd on request)",
    )
    args = parser.parse_args(argv)
    if args.use_current_context and args.with_addons:
        parser.error(
            "--with-addons starts add-ons next to the local cluster; it cannot be used with --use-current-context"
        )
    logs.configure()
    try:
        run(args.use_current_context, args.keep, args.out, args.cluster_name, args.with_addons)
    except StepFailed as failure:
        log.error("%s", failure)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
