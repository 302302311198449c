"""Rolling a fleet on real pods while a client streams without pause.

examples/cpu.yaml on the real node as in test_fleet_serves_speech.py, plus two changes this test
needs and says so: two replicas at half a CPU each (two pods must fit the 2-core node beside the
operator and the model server). The new "version" is a second tag of the same local image
(`ctr images tag` on the node's containerd), so only the pod template changes.

The client is the library's FleetClient over the fleet's pods: in a cluster it resolves the
headless Service through DNS; the host has no cluster DNS, so its resolver reads the same
addresses from the Service's EndpointSlices (ready pods only), every 2 seconds.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from ttsfleet import contract
from ttsfleet.devcluster import binaries, realnode
from ttsfleet.devcluster.cluster import ClusterHandle
from ttsfleet.devcluster.waiting import wait_for
from ttsfleet.operator import naming
from ttsfleet.realpods import operator_pod, real_fleet, stage

RELEASE = "ttsfleet-rollout"
NAME = "tts-roll"
READY_TIMEOUT = 900
HEADLESS = naming.headless_service_name(naming.Owner(NAME, "", ""))
TEXT = "A rollout is in progress. This request must not fail."


@dataclass
class Rolled:
    cluster: ClusterHandle
    namespace: str
    operator: operator_pod.OperatorPod
    body: dict[str, Any]


@pytest.fixture(scope="module")
def rolled(cluster: ClusterHandle) -> Iterator[Rolled]:
    if reason := stage.unavailable(cluster):
        pytest.skip(reason)
    with stage.staged(cluster, "rollout", RELEASE) as staged:
        body = staged.adapt("cpu.yaml")
        body["metadata"]["name"] = NAME
        body["spec"]["replicas"] = 2
        body["spec"]["resources"]["cpu"] = "500m"
        state = Rolled(cluster, staged.namespace, staged.operator, body)
        _apply(state, body)
        _wait_rolled(state, cluster.images["worker"], what="fleet Ready with 2 pods")
        yield state


def _apply(state: Rolled, body: dict[str, Any]) -> None:
    state.cluster.kubectl("apply", "-n", state.namespace, "-f", "-", input=yaml.safe_dump(body))


def _pods(state: Rolled) -> dict[str, dict[str, Any]]:
    items = real_fleet.get(state.cluster, state.namespace, "pods", "-l", f"app.kubernetes.io/instance={NAME}")["items"]
    return {p["metadata"]["name"]: p for p in items if not p["metadata"].get("deletionTimestamp")}


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def _image(pod: dict[str, Any]) -> str:
    return str(pod["spec"]["containers"][0]["image"])


def _wait_rolled(state: Rolled, image: str, *, what: str, ordinals: tuple[int, ...] = (0, 1)) -> None:
    def done() -> bool:
        pods = _pods(state)
        fleet = real_fleet.get(state.cluster, state.namespace, "ttsd", NAME)
        wanted = [pods.get(f"{NAME}-{i}") for i in ordinals]
        return (
            all(p is not None and _image(p) == image and _ready(p) for p in wanted)
            and real_fleet.condition(fleet, "Ready").get("status") == "True"
        )

    wait_for(
        done, what=what, timeout=READY_TIMEOUT, interval=2,
        describe=lambda: real_fleet.describe(state.cluster, state.namespace) + state.operator.logs(state.cluster),
    )  # fmt: skip


def _second_tag(state: Rolled) -> str:
    """The same image under another tag, in the node's containerd (nothing is pulled)."""
    source = state.cluster.images["worker"]
    target = f"{source}-canary"
    ctr = binaries.ensure_binaries(("containerd",))["ctr"]
    socket = realnode.RealNodeLayout(state.cluster.workdir).containerd_socket
    subprocess.run(
        [str(ctr), "--address", str(socket), "--namespace", "k8s.io", "images", "tag", "--force", source, target],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return target


@dataclass
class Traffic:
    """A client streaming one request after another until stopped; every outcome counted."""

    state: Rolled
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    most_unready: int = 0

    def endpoints(self, _target: str) -> list[str]:
        slices = real_fleet.get(
            self.state.cluster, self.state.namespace, "endpointslices",
            "-l", f"kubernetes.io/service-name={HEADLESS}",
        )["items"]  # fmt: skip
        return sorted(
            f"{address}:{contract.GRPC_PORT}"
            for piece in slices
            for endpoint in piece.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready")
            for address in endpoint["addresses"]
        )

    def run(self) -> None:
        from ttsfleet.worker.client import FleetClient

        with FleetClient("headless", refresh_seconds=2, resolve=self.endpoints) as client:
            while not self.stop.is_set():
                try:
                    chunks = list(client.stream(TEXT))
                    assert chunks and chunks[-1].final, "stream ended without FINAL"
                    self.ok += 1
                except Exception as error:
                    self.failed.append(repr(error))

    def watch(self) -> None:
        while not self.stop.is_set():
            pods = _pods(self.state)
            self.most_unready = max(self.most_unready, 2 - sum(_ready(p) for p in pods.values()))
            time.sleep(1)


def test_partition_rolls_only_the_canary_which_keeps_its_cache_then_promote_with_no_failed_request(
    rolled: Rolled,
) -> None:
    state = rolled
    before = {name: pod["metadata"]["uid"] for name, pod in _pods(state).items()}
    new_image = _second_tag(state)
    traffic = Traffic(state)
    threads = [threading.Thread(target=traffic.run, daemon=True), threading.Thread(target=traffic.watch, daemon=True)]
    for thread in threads:
        thread.start()
    wait_for(lambda: traffic.ok >= 2 or traffic.failed, what="the client streaming", timeout=300)
    started = time.monotonic()

    canary = {**state.body, "spec": {**state.body["spec"], "image": new_image, "rollout": {"partition": 1}}}
    _apply(state, canary)
    _wait_rolled(state, new_image, what=f"canary {NAME}-1 on {new_image} and Ready", ordinals=(1,))
    pods = _pods(state)
    assert _image(pods[f"{NAME}-0"]) == state.cluster.images["worker"]
    assert pods[f"{NAME}-0"]["metadata"]["uid"] == before[f"{NAME}-0"], "ordinal 0 restarted under the partition"
    fetch_log = state.cluster.kubectl("logs", "-n", state.namespace, f"{NAME}-1", "-c", naming.FETCH_CONTAINER).stdout
    assert '"cache already holds this revision"' in fetch_log and "downloading" not in fetch_log, fetch_log
    canary_at = time.monotonic() - started

    promoted = {**canary, "spec": {**canary["spec"], "rollout": {"partition": 0}}}
    _apply(state, promoted)
    _wait_rolled(state, new_image, what=f"both pods on {new_image} and Ready")
    ok_at_end = traffic.ok
    wait_for(lambda: traffic.ok > ok_at_end + 1 or traffic.failed, what="requests after the rollout", timeout=300)
    traffic.stop.set()
    for thread in threads:
        thread.join(300)

    print(
        f"\nrollout: canary Ready {canary_at:.0f}s after the change (no re-download), promoted after "
        f"{time.monotonic() - started:.0f}s; client requests ok={traffic.ok} failed={len(traffic.failed)}; "
        f"most pods unready at once: {traffic.most_unready}",
        flush=True,
    )
    assert traffic.failed == [], traffic.failed[:5]
    assert traffic.most_unready <= 1  # maxUnavailable of a StatefulSet rolling update: one pod
