"""FleetClient's balancing and retry rules with stand-in pods (the real gRPC path is covered in
tests/worker/test_worker_cancel_backpressure.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

pytest.importorskip("tritonclient.grpc")
from ttsfleet.worker.client import (
    Chunk,
    FleetClient,
    Overloaded,
    RequestRejected,
    ServerUnavailable,
)

pytestmark = pytest.mark.unit


@dataclass
class Pod:
    """``mode``: ok, overloaded, unreachable, rejected, or breaks (fails after one chunk)."""

    address: str
    mode: str = "ok"
    served: list[str] = field(default_factory=list)
    closed: bool = False

    def stream(self, text: str | bytes, voice: str | None = None, audio_format: str = "pcm16") -> Iterator[Chunk]:
        if self.mode == "overloaded":
            raise Overloaded("ttsfleet: overloaded: this replica already holds 4 open requests")
        if self.mode == "unreachable":
            raise ServerUnavailable("connection refused")
        if self.mode == "rejected":
            raise RequestRejected("text is empty")
        self.served.append(str(text))
        yield Chunk(0, b"\0\0", self.mode != "breaks", audio_format, 0.0)
        if self.mode == "breaks":
            raise ServerUnavailable("connection lost")

    def close(self) -> None:
        self.closed = True


def _fleet(pods: dict[str, Pod], resolved: list[list[str]] | None = None, **kwargs) -> FleetClient:  # type: ignore[no-untyped-def]
    answers = list(resolved or [])

    def resolve(_target: str) -> list[str]:  # DNS answers in turn; the last one stays
        return answers.pop(0) if len(answers) > 1 else answers[0]

    target = "tts-headless.team.svc:8001" if resolved is not None else list(pods)
    return FleetClient(target, resolve=resolve, connect=lambda address: pods[address], **kwargs)


def test_requests_rotate_over_the_pods() -> None:
    pods = {name: Pod(name) for name in ("a:1", "b:1", "c:1")}
    fleet = _fleet(pods)
    for i in range(6):
        assert list(fleet.stream(f"r{i}"))[-1].final
    assert [pod.served for pod in pods.values()] == [["r0", "r3"], ["r1", "r4"], ["r2", "r5"]]


def test_refused_or_unreachable_pods_pass_the_request_on() -> None:
    pods = {"a:1": Pod("a:1", "overloaded"), "b:1": Pod("b:1", "unreachable"), "c:1": Pod("c:1")}
    fleet = _fleet(pods)
    assert list(fleet.stream("hello"))[-1].final
    assert pods["c:1"].served == ["hello"]


def test_when_every_pod_refuses_the_error_names_each() -> None:
    pods = {"a:1": Pod("a:1", "overloaded"), "b:1": Pod("b:1", "unreachable")}
    with pytest.raises(Overloaded, match=r"a:1: .*overloaded.*b:1: connection refused"):
        list(_fleet(pods).stream("hello"))
    with pytest.raises(ServerUnavailable, match="no replica could be reached"):
        list(_fleet({"b:1": Pod("b:1", "unreachable")}).stream("hello"))


def test_bad_input_and_mid_stream_failures_are_not_retried() -> None:
    pods = {"a:1": Pod("a:1", "rejected"), "b:1": Pod("b:1")}
    with pytest.raises(RequestRejected, match="text is empty"):
        list(_fleet(pods).stream(""))
    assert pods["b:1"].served == []  # the same text would be refused everywhere
    pods = {"a:1": Pod("a:1", "breaks"), "b:1": Pod("b:1")}
    with pytest.raises(ServerUnavailable, match="connection lost"):
        list(_fleet(pods).stream("hello"))
    assert pods["b:1"].served == []  # audio already went out: a retry would repeat it


def test_scale_up_new_pod_gets_streams_after_the_next_resolution() -> None:
    pods = {name: Pod(name) for name in ("10.0.0.1:8001", "10.0.0.2:8001", "10.0.0.3:8001")}
    resolved = [["10.0.0.1:8001", "10.0.0.2:8001"], ["10.0.0.1:8001", "10.0.0.2:8001", "10.0.0.3:8001"]]
    fleet = _fleet(pods, resolved, refresh_seconds=0)  # re-resolve before every request
    for i in range(4):
        list(fleet.stream(f"r{i}"))
    assert pods["10.0.0.3:8001"].served, "the pod added by the scale-up never got a stream"


def test_pods_that_left_are_closed() -> None:
    pods = {name: Pod(name) for name in ("a:1", "b:1")}
    fleet = _fleet(pods, [["a:1", "b:1"], ["b:1"], ["b:1"]], refresh_seconds=0)
    list(fleet.stream("one"))
    list(fleet.stream("two"))
    assert pods["a:1"].closed and not pods["b:1"].closed
