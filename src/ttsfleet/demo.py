"""``python -m ttsfleet.demo`` (``make demo``): the whole system on one machine, step by step.

A local Kubernetes cluster (or the current kube context with ``--use-current-context``), the
operator installed with its Helm chart and run under the chart's ServiceAccount identity, an
example fleet applied and waited for until Ready, then a worker started on a real Triton server
with the serving configuration the operator rendered for that fleet, and a sentence streamed into
a WAV file. Simulated nodes (kwok) run no containers, which is why the worker runs here as a local
process; on a real cluster the fleet's own pods serve the same model repository.
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
from typing import Any

from ttsfleet import contract, logs
from ttsfleet.devcluster import binaries
from ttsfleet.devcluster.cluster import ClusterHandle, LocalCluster, default_workdir
from ttsfleet.devcluster.waiting import wait_for

log = logging.getLogger("ttsfleet.demo")

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ttsfleet-operator"
EXAMPLE = REPO / "examples" / "cpu.yaml"
SYSTEM_NAMESPACE = "ttsfleet-system"
DEMO_NAMESPACE = "demo"
RELEASE = "ttsfleet"
SENTENCE = "Hello from ttsfleet. This sentence was streamed from a Triton server."


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


def run(use_current_context: bool, keep: bool, out: Path, cluster_name: str = "demo") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(total=6, out=out)
    fleet = _fleet_name(EXAMPLE)
    with ExitStack() as cleanup:
        with steps.step("Kubernetes cluster", str(default_workdir(cluster_name) / "logs")):
            if use_current_context:
                paths = binaries.ensure_binaries(("kubernetes", "helm"))
                kubeconfig = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
                cluster = ClusterHandle(out, kubeconfig, paths["kubectl"], paths["helm"], out)
            else:
                local = LocalCluster(default_workdir(cluster_name))
                cluster = local.up()
                if not keep:
                    cleanup.callback(local.down)

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
            from ttsfleet.worker import audio
            from ttsfleet.worker.client import TtsClient

            wav_path = out / "speech.wav"
            pcm = bytearray()
            with TtsClient(server.grpc_url, model=serving.model_name) as client:
                client.check_ready()
                first: float | None = None
                for chunk in client.stream(SENTENCE):
                    first = chunk.received_after if first is None else first
                    pcm += chunk.audio
                    log.info("chunk=%d bytes=%d after=%.2fs", chunk.index, len(chunk.audio), chunk.received_after)
            samples = audio.decode(bytes(pcm), audio.DEFAULT_FORMAT)
            wav_path.write_bytes(audio.to_wav_bytes(samples))
            duration = audio.duration_seconds(len(samples))
            print(f"\nwrote {wav_path} ({duration:.2f} s of 24 kHz audio, first audio after {first or 0:.2f} s)")
    if keep:
        print(f"cluster left running: export KUBECONFIG={cluster.kubeconfig}")
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
    args = parser.parse_args(argv)
    logs.configure()
    try:
        run(args.use_current_context, args.keep, args.out, args.cluster_name)
    except StepFailed as failure:
        log.error("%s", failure)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
