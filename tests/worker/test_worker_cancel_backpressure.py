"""Against the real tritonserver: clients that go away mid-stream are dropped and their slots
freed (Triton's request cancellation), and a full replica refuses new requests at once with an
error the client library retries elsewhere."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_support import TEST_SERVING, RunningServer, model_metrics, start_server

from ttsfleet import contract

pytestmark = pytest.mark.worker

pytest.importorskip("tritonclient.grpc")
from ttsfleet.worker.client import Chunk, FleetClient, Overloaded, TtsClient  # noqa: E402

# A replica of its own with a small bound, so a few clients fill it, and requests long enough
# (many short sentences, batch of 2) that none finishes while a test holds it full.
SMALL = dataclasses.replace(TEST_SERVING, max_batch_size=2, max_open_requests=4)
SENTENCES = 60
LONG_TEXT = " ".join(["Go on."] * SENTENCES)
DISCONNECTS = 100
SETTLE_TIMEOUT_S = 300  # a hang guard, not a speed budget


@pytest.fixture(scope="module")
def small_triton(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tiny_weights, tmp_path_factory.mktemp("small"), SMALL)
    try:
        yield running
    finally:
        running.server.stop()  # type: ignore[attr-defined]


def _in_order(chunks: list[Chunk], at_least: int = 1) -> bool:
    """A whole answer: chunks numbered in order, only the last final (a sentence may take
    several chunks: the worker streams within sentences)."""
    return (
        len(chunks) >= at_least
        and [chunk.index for chunk in chunks] == list(range(len(chunks)))
        and [chunk.final for chunk in chunks] == [False] * (len(chunks) - 1) + [True]
    )


def _sentences_synthesized(metrics_url: str) -> float:
    return model_metrics(metrics_url).get(f"{contract.METRIC_BATCH_SIZE}_sum", 0.0)


def _stub_rss_mib(running: RunningServer) -> float:
    """Resident memory of the chattts model's python-backend stub (where the scheduler lives)."""
    for status in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"chattts/1/model.py" in status.read_bytes() and str(running.log_path.parent) in status.read_text(
                errors="replace"
            ):
                for line in (status.parent / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            continue
    return float("nan")


def _wait_until_idle(metrics_url: str) -> dict[str, float]:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        samples = model_metrics(metrics_url)
        if samples.get(contract.METRIC_QUEUE_LENGTH) == 0 and samples.get(contract.METRIC_ACTIVE_STREAMS) == 0:
            return samples
        assert time.monotonic() < deadline, f"jobs leaked: {samples.get(contract.METRIC_QUEUE_LENGTH)} still queued"
        time.sleep(0.5)  # polling for the positive signal (the gauges at zero)


def _wave(grpc_url: str, size: int, while_open) -> None:  # type: ignore[no-untyped-def]
    """``size`` clients each start a long request, read its first chunk, then go away."""
    firsts: list[int] = []
    errors: list[BaseException] = []
    all_started = threading.Barrier(size + 1)
    leave = threading.Event()

    def client() -> None:
        try:
            with TtsClient(grpc_url, timeout=SETTLE_TIMEOUT_S) as tts:
                chunks = tts.stream(LONG_TEXT)
                firsts.append(next(chunks).index)
                all_started.wait()
                leave.wait()
                chunks.close()  # stop reading mid-stream: the client cancels the request and leaves
        except BaseException as error:  # recorded, asserted below
            errors.append(error)
            all_started.abort()

    threads = [threading.Thread(target=client) for _ in range(size)]
    for thread in threads:
        thread.start()
    try:
        all_started.wait(SETTLE_TIMEOUT_S)
        while_open()
    finally:
        leave.set()
        for thread in threads:
            thread.join(SETTLE_TIMEOUT_S)
    assert not errors, errors[:3]
    assert firsts == [0] * size


def test_a_full_replica_refuses_at_once_and_the_client_library_goes_elsewhere(small_triton, triton) -> None:
    _wait_until_idle(small_triton.metrics_url)

    def full_replica_refuses() -> None:
        assert model_metrics(small_triton.metrics_url)[contract.METRIC_ACTIVE_STREAMS] == SMALL.max_open_requests
        with TtsClient(small_triton.grpc_url) as late, pytest.raises(Overloaded, match="4 open requests"):
            list(late.stream("One more, please."))
        # The client library takes the same request to the next pod, which serves it.
        with FleetClient([small_triton.grpc_url, triton.grpc_url]) as fleet:
            assert _in_order(list(fleet.stream("One more, please.")))

    _wave(small_triton.grpc_url, SMALL.max_open_requests, full_replica_refuses)
    _wait_until_idle(small_triton.metrics_url)  # the slots the leavers held are free again
    with TtsClient(small_triton.grpc_url) as client:
        assert _in_order(list(client.stream("Room again. Two sentences.")), at_least=2)


def test_disconnects_mid_stream_are_dropped_and_leave_no_jobs(small_triton) -> None:
    _wait_until_idle(small_triton.metrics_url)
    before = _sentences_synthesized(small_triton.metrics_url)
    rss_before = _stub_rss_mib(small_triton)
    for _ in range(DISCONNECTS // SMALL.max_open_requests):
        _wave(small_triton.grpc_url, SMALL.max_open_requests, lambda: None)
        _wait_until_idle(small_triton.metrics_url)  # every leaver's slot is freed, nothing leaks
    synthesized = _sentences_synthesized(small_triton.metrics_url) - before
    print(f"{DISCONNECTS} disconnects after the first chunk: {synthesized:.0f} sentences synthesized "
          f"of the {DISCONNECTS * SENTENCES} they asked for; model stub RSS {rss_before:.0f} -> "
          f"{_stub_rss_mib(small_triton):.0f} MiB")  # fmt: skip
    # Without cancellation every request runs to its end. With it a request leaves at the next
    # call after its client; 7 a request (1 + 2 + 4) leaves room for calls that started before.
    assert synthesized <= DISCONNECTS * 7


def test_a_client_that_stopped_reading_can_stream_its_next_request(small_triton) -> None:
    with TtsClient(small_triton.grpc_url) as client:
        chunks = client.stream(LONG_TEXT)
        assert next(chunks).index == 0
        chunks.close()
        again = list(client.stream("A new request. With two sentences."))
    assert _in_order(again, at_least=2)
    _wait_until_idle(small_triton.metrics_url)


def test_fleet_client_retries_on_the_next_address(triton) -> None:
    with FleetClient(["127.0.0.1:9", triton.grpc_url]) as fleet:
        chunks = list(fleet.stream("Reached the second address."))
    assert chunks[-1].final


def _served(metrics_url: str) -> float:
    """Requests the pod answered to the end (the worker's own request-duration histogram)."""
    return model_metrics(metrics_url).get(f"{contract.METRIC_REQUEST_DURATION}_count", 0.0)


def test_after_a_scale_up_new_streams_reach_the_new_pod(triton, small_triton) -> None:
    # The fleet's headless Service answers with one pod, then (scale-up) with two; DNS is stood in
    # for, the pods and the gRPC streams are real.
    answers = [[triton.grpc_url], [triton.grpc_url, small_triton.grpc_url]]

    def resolve(_target: str) -> list[str]:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    new_pod_before = _served(small_triton.metrics_url)
    with FleetClient("tts-prod-pods.team.svc:8001", resolve=resolve, refresh_seconds=0) as fleet:
        for i in range(4):
            assert list(fleet.stream(f"Request {i} to the fleet."))[-1].final
    assert _served(small_triton.metrics_url) - new_pod_before >= 1, "the new pod got no stream"
