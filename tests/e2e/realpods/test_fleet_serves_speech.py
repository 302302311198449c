"""A fleet that really serves speech, with nothing simulated between `kubectl apply` and audio.

On the local cluster's real node: the operator runs as a pod from its own image, installed by the
Helm chart under the chart's ServiceAccount and RBAC; a model server pod serves generated ChatTTS
weights over http (``ttsfleet.realpods.model_server``; both set up by ``ttsfleet.realpods.stage``);
``examples/cpu.yaml`` is applied with only its image, model source and the real node's
toleration/nodeSelector changed (``ttsfleet.realpods.real_fleet``). The kubelet runs the fetcher,
which fills the cache PVC with its sha256 checks; Triton loads and warms ChatTTS; the readiness
probe lets the pod into the Service; ``ttsfleet-say`` and the client library stream through the
fleet's client Service (its ClusterIP, reached from the host through kube-proxy).

Figures (cold start split into fetch and load+warmup, first audio and total time of a streamed
request) are printed, never asserted. Fleets whose fetch fails run first and are deleted before
the serving fleet starts: every pod requests a CPU (the fetcher's request) and the node has two.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ttsfleet import contract
from ttsfleet.devcluster.cluster import ClusterHandle
from ttsfleet.devcluster.waiting import wait_for
from ttsfleet.operator import naming, problems
from ttsfleet.realpods import model_server, real_fleet
from ttsfleet.realpods.stage import Stage, staged, unavailable

RELEASE = "ttsfleet-realpods"
TEXT = (
    "Hello from a fleet on a real node. The operator created it, the fetcher filled its cache, "
    "and Triton warmed the model. Every sentence you hear came through the fleet's Service."
)
# Cold start on a busy 2-core machine: Triton and torch load from the image, then warm up.
READY_TIMEOUT = 900


@dataclass
class Fleet:
    name: str
    body: dict[str, Any]
    # (seconds since apply, fetcher state, worker started, pod Ready) as observed over time.
    observed: list[tuple[float, str, bool, bool]] = field(default_factory=list)


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def stage(cluster: ClusterHandle) -> Iterator[Stage]:
    if reason := unavailable(cluster):
        pytest.skip(reason)
    with staged(cluster, "realpods", RELEASE) as ready:
        yield ready


def _fleet(stage: Stage, name: str, **model: Any) -> dict[str, Any]:
    body = stage.adapt("cpu.yaml", **model)
    body["metadata"]["name"] = name
    return body


def _delete_fleet(stage: Stage, name: str) -> None:
    stage.cluster.kubectl("delete", "ttsd", name, "-n", stage.namespace, "--wait=true", "--timeout=120s", check=False)

    def gone() -> bool:
        pods = real_fleet.get(stage.cluster, stage.namespace, "pods", "-l", f"app.kubernetes.io/instance={name}")
        return not pods["items"]

    wait_for(gone, what=f"pods of fleet {name} gone", timeout=180, describe=stage.describe)
    stage.cluster.kubectl("delete", "pvc", "-n", stage.namespace, "-l", f"app.kubernetes.io/instance={name}")


@pytest.mark.parametrize("failure", ["wrong-sha256", "unreachable-source"])
def test_a_pod_that_cannot_fetch_shows_the_fetchers_reason_on_the_fleet(stage: Stage, failure: str) -> None:
    if failure == "wrong-sha256":
        body, expected = _fleet(stage, "bad-sha", sha256="0" * 64), "sha256"
    else:
        source = model_server.unreachable_url(stage.cluster, stage.namespace)
        body, expected = _fleet(stage, "no-source", source=source), "Connection refused"
    name = body["metadata"]["name"]
    stage.apply(body)
    try:

        def fetch_failed() -> dict[str, Any] | None:
            fleet = real_fleet.get(stage.cluster, stage.namespace, "ttsd", name)
            ready = real_fleet.condition(fleet, "Ready")
            return ready if ready.get("reason") == problems.FETCH_FAILED else None

        ready = wait_for(
            fetch_failed,
            what=f"fleet {name} Ready=False with reason {problems.FETCH_FAILED}",
            timeout=300,
            interval=2,
            describe=stage.describe,
        )
        print(f"\n{failure}: Ready={ready['status']} {ready['reason']}: {ready['message']}", flush=True)
        assert ready["status"] == "False"
        assert ready["message"].startswith(f"pod {name}-0: fetch failed: ")
        assert expected in ready["message"]
    finally:
        _delete_fleet(stage, name)


@pytest.fixture(scope="module")
def fleet(stage: Stage) -> Fleet:
    body = _fleet(stage, "tts-cpu")
    name = body["metadata"]["name"]
    fleet = Fleet(name, body)
    applied = time.monotonic()
    stage.apply(body)
    pod_name = f"{name}-0"

    def observe() -> bool:
        pods = real_fleet.get(stage.cluster, stage.namespace, "pods", "-l", f"app.kubernetes.io/instance={name}")
        pod = next((p for p in pods["items"] if p["metadata"]["name"] == pod_name), None)
        if pod is None:
            return False
        status: dict[str, Any] = pod.get("status", {})
        inits: list[dict[str, Any]] = status.get("initContainerStatuses") or [{}]
        fetch: dict[str, Any] = inits[0].get("state", {})
        fetch_state = next(iter(fetch), "pending")
        if fetch_state == "terminated":
            fetch_state = "done" if fetch["terminated"].get("exitCode") == 0 else "failed"
        workers: list[dict[str, Any]] = status.get("containerStatuses") or [{}]
        worker = workers[0]
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        fleet.observed.append((time.monotonic() - applied, fetch_state, bool(worker.get("started")), ready))
        body = real_fleet.get(stage.cluster, stage.namespace, "ttsd", name)
        return ready and real_fleet.condition(body, "Ready").get("status") == "True"

    wait_for(
        observe,
        what=f"fleet {name} Ready=True (fetch, Triton load, warmup)",
        timeout=READY_TIMEOUT,
        interval=1,
        describe=stage.describe,
    )
    return fleet


def _pod(stage: Stage, name: str) -> dict[str, Any]:
    return real_fleet.get(stage.cluster, stage.namespace, "pod", name)


def test_fleet_becomes_ready_with_its_counts_and_the_probe_gates_fetch_and_warmup(stage: Stage, fleet: Fleet) -> None:
    body = real_fleet.get(stage.cluster, stage.namespace, "ttsd", fleet.name)
    status = body["status"]
    pod = _pod(stage, f"{fleet.name}-0")

    assert real_fleet.condition(body, "Ready")["status"] == "True"
    assert (status["replicas"], status["readyReplicas"], status["replicasSummary"]) == (1, 1, "1/1")
    assert pod["spec"]["nodeName"] in stage.cluster.real_nodes
    # Not Ready while the fetcher ran, nor once the worker had started but not yet warmed up.
    assert fleet.observed[-1][3] is True
    fetching = [o for o in fleet.observed if o[1] in ("pending", "waiting", "running")]
    warming = [o for o in fleet.observed if o[1] == "done" and not o[3]]
    assert fetching and not any(o[3] for o in fetching), fleet.observed
    assert warming, f"never saw the pod started but not ready (loading/warmup): {fleet.observed}"

    fetch = pod["status"]["initContainerStatuses"][0]["state"]["terminated"]
    ready_at = next(_ts(c["lastTransitionTime"]) for c in pod["status"]["conditions"] if c["type"] == "Ready")
    created = _ts(pod["metadata"]["creationTimestamp"])
    fetch_s = (_ts(fetch["finishedAt"]) - _ts(fetch["startedAt"])).total_seconds()
    load_s = (ready_at - _ts(fetch["finishedAt"])).total_seconds()
    print(
        f"\ncold start of {fleet.name}-0: {(ready_at - created).total_seconds():.0f}s from creation to Ready "
        f"(fetch {fetch_s:.0f}s, Triton load + warmup {load_s:.0f}s); "
        f"operator's coldStartP95Seconds: {status.get('coldStartP95Seconds')}",
        flush=True,
    )
    fetch_log = stage.cluster.kubectl(
        "logs", "-n", stage.namespace, f"{fleet.name}-0", "-c", naming.FETCH_CONTAINER
    ).stdout
    assert '"cache filled"' in fetch_log
    # ChatTTS computes with as many threads as the pod's CPU (examples/cpu.yaml: 1), not one per
    # core of the node (this one has 2): the operator sets OMP_NUM_THREADS, which torch follows.
    worker_log = stage.cluster.kubectl(
        "logs", "-n", stage.namespace, f"{fleet.name}-0", "-c", naming.WORKER_CONTAINER
    ).stdout
    loaded = [json.loads(line) for line in worker_log.splitlines() if '"chattts loaded"' in line]
    assert loaded and loaded[0]["cpu_threads"] == 1, worker_log[-2000:]


def _service_address(stage: Stage, fleet: Fleet) -> str:
    service = real_fleet.get(stage.cluster, stage.namespace, "service", fleet.name)
    port = next(p["port"] for p in service["spec"]["ports"] if p["port"] == contract.GRPC_PORT)
    return f"{service['spec']['clusterIP']}:{port}"


def _check_wav(path: Path) -> float:
    with wave.open(str(path)) as wav:
        frames, rate = wav.getnframes(), wav.getframerate()
    assert rate > 0 and frames > rate // 2, f"{path}: {frames} frames at {rate} Hz"
    return frames / rate


def test_ttsfleet_say_streams_a_multi_sentence_text_through_the_service(
    stage: Stage, fleet: Fleet, tmp_path: Path
) -> None:
    address = _service_address(stage, fleet)
    out = tmp_path / "speech.wav"
    say = Path(sys.executable).parent / "ttsfleet-say"

    def said() -> subprocess.CompletedProcess[str] | None:
        # kube-proxy may take a moment to program the Service after the pod turned Ready.
        result = subprocess.run(
            [str(say), "--url", address, "-o", str(out), TEXT], capture_output=True, text=True, timeout=600
        )
        return result if result.returncode == 0 else None

    result = wait_for(said, what=f"ttsfleet-say through {address}", timeout=120, interval=3)

    seconds = _check_wav(out)
    print(f"\nttsfleet-say via Service {address}: {seconds:.1f}s of audio; {result.stderr.strip()[-300:]}")


def test_client_library_streams_through_the_service_to_a_final_chunk(
    stage: Stage, fleet: Fleet, tmp_path: Path
) -> None:
    from ttsfleet.worker.client import FleetClient

    address = _service_address(stage, fleet)
    started = time.monotonic()
    with FleetClient([address]) as client:
        chunks = list(client.stream(TEXT))
    total = time.monotonic() - started

    assert chunks and chunks[-1].final and not any(c.final for c in chunks[:-1])
    assert [c.index for c in chunks] == list(range(len(chunks)))
    audio = sum(len(c.samples()) for c in chunks)
    assert audio > 0
    print(
        f"\nFleetClient via Service {address}: {len(chunks)} chunks, first audio after "
        f"{chunks[0].received_after:.2f}s, total {total:.2f}s",
        flush=True,
    )


LONG_TEXT = " ".join(f"This is sentence number {n} of a long text that keeps the stream open." for n in range(1, 13))


def test_a_pod_deleted_while_streaming_finishes_the_stream_and_returns_warm(stage: Stage, fleet: Fleet) -> None:
    """Drain on a real pod: the stream that was open when the pod got deleted ends with its FINAL
    chunk; the StatefulSet brings the ordinal back on the same cache PVC, and the fetcher skips the
    download (its log says so), so the pod starts warm: load + warmup only."""
    import threading

    from ttsfleet.worker.client import Chunk, TtsClient

    address = _service_address(stage, fleet)
    pod_name = f"{fleet.name}-0"
    old_uid = _pod(stage, pod_name)["metadata"]["uid"]
    chunks: list[Chunk] = []
    errors: list[BaseException] = []
    first = threading.Event()

    def stream() -> None:
        try:
            with TtsClient(address) as client:
                for chunk in client.stream(LONG_TEXT):
                    chunks.append(chunk)
                    first.set()
        except BaseException as error:  # reported below, with what was received
            errors.append(error)
            first.set()

    streaming = threading.Thread(target=stream, daemon=True)
    streaming.start()
    assert first.wait(300), "no first chunk within 300s"
    deleted_at = time.monotonic()
    stage.cluster.kubectl("delete", "pod", pod_name, "-n", stage.namespace, "--wait=false")
    streaming.join(600)

    assert not streaming.is_alive(), "the stream did not end"
    assert not errors, f"client error after {len(chunks)} chunks: {errors[0]!r}"
    assert chunks[-1].final and [c.index for c in chunks] == list(range(len(chunks)))
    print(
        f"\ndrain: stream of {len(chunks)} chunks completed {time.monotonic() - deleted_at:.1f}s after the pod's "
        "deletion, FINAL-terminated, 0 client errors",
        flush=True,
    )

    def back_ready() -> dict[str, Any] | None:
        pod = _pod(stage, pod_name)
        conditions = pod.get("status", {}).get("conditions", [])
        fresh = pod["metadata"]["uid"] != old_uid
        return pod if fresh and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None

    pod = wait_for(
        back_ready, what=f"{pod_name} recreated and Ready", timeout=READY_TIMEOUT, interval=2,
        describe=stage.describe,
    )  # fmt: skip
    fetch_log = stage.cluster.kubectl("logs", "-n", stage.namespace, pod_name, "-c", naming.FETCH_CONTAINER).stdout
    assert '"cache already holds this revision"' in fetch_log and "downloading" not in fetch_log, fetch_log
    ready_at = next(_ts(c["lastTransitionTime"]) for c in pod["status"]["conditions"] if c["type"] == "Ready")
    fetch = pod["status"]["initContainerStatuses"][0]["state"]["terminated"]
    print(
        f"warm start of {pod_name}: {(ready_at - _ts(pod['metadata']['creationTimestamp'])).total_seconds():.0f}s "
        f"from creation to Ready (fetch {(_ts(fetch['finishedAt']) - _ts(fetch['startedAt'])).total_seconds():.0f}s"
        f", no download; load + warmup {(ready_at - _ts(fetch['finishedAt'])).total_seconds():.0f}s)",
        flush=True,
    )
