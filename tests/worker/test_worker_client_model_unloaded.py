"""A pod whose model is unloaded (draining on SIGTERM, or reloading) answers "Request for unknown
model: 'chattts' has no available versions" until readiness takes it out of the Service. The
request never started there, so FleetClient sends it to the next pod instead of failing it: a
rollout on real pods failed 349 of 751 requests this way."""

from __future__ import annotations

from collections.abc import Iterator

from ttsfleet.worker import client
from ttsfleet.worker.client import Chunk, FleetClient, Overloaded, RequestRejected

UNLOADED = "Request for unknown model: 'chattts' has no available versions"
# The same draining pod once Triton has finished unloading the model.
GONE = "Request for unknown model: 'chattts' is not found"
# The same pod between SIGTERM and the unload: its scheduler refuses at enqueue.
STOPPING = (
    "[request id: f9bc81138010407599bd2f0707b191f7] Server is stopping, scheduler for model has stopped "
    "accepting new inference requests"
)


class _Unloaded:
    def stream(self, text: str | bytes, voice: str | None = None, audio_format: str = "") -> Iterator[Chunk]:
        raise client._rejection(UNLOADED)
        yield  # pragma: no cover - a generator, like the real client's

    def close(self) -> None:
        pass


class _Serving:
    def stream(self, text: str | bytes, voice: str | None = None, audio_format: str = "") -> Iterator[Chunk]:
        yield Chunk(index=0, audio=b"\0\0", final=True, audio_format="pcm_s16le", received_after=0.1)

    def close(self) -> None:
        pass


def test_model_not_loaded_is_a_refusal_another_pod_can_take() -> None:
    assert isinstance(client._rejection(UNLOADED), Overloaded)
    assert isinstance(client._rejection(GONE), Overloaded)
    assert isinstance(client._rejection(STOPPING), Overloaded)
    assert not isinstance(client._rejection("text is empty"), Overloaded)
    assert isinstance(client._rejection("text is empty"), RequestRejected)


def test_fleet_client_moves_a_request_off_a_draining_pod() -> None:
    pods: dict[str, _Unloaded | _Serving] = {"10.0.0.1:8001": _Unloaded(), "10.0.0.2:8001": _Serving()}
    with FleetClient(list(pods), connect=lambda address: pods[address]) as fleet:
        for _ in range(4):  # whichever pod the rotation starts at
            chunks = list(fleet.stream("Hello."))
            assert [c.final for c in chunks] == [True]
