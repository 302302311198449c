"""Sub-sentence streaming without torch or a server: the look-ahead arithmetic, the per-text
bookkeeping over ChatTTS's yields, and the scheduler fed by a stand-in streaming engine."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from ttsfleet.contract import ServingConfig, Voice
from ttsfleet.worker.audio import decode
from ttsfleet.worker.service import RawRequest, Scheduler
from ttsfleet.worker.streaming import Geometry, Piece, SentenceTracker, StreamingError

pytestmark = pytest.mark.unit

CONFIG = ServingConfig(voices=(Voice("default", seed=1),), max_batch_size=4, max_text_chars=500)
GEOMETRY = Geometry(right_frames=15, hop=256, n_fft=1024)  # the tiny generated weights'


def test_stable_samples_leave_the_look_ahead_out_and_a_finished_text_gives_all() -> None:
    assert GEOMETRY.samples(48) == 95 * 256  # torch.istft(center=True): (frames - 1) * hop
    assert GEOMETRY.stable(24) == (48 - 15) * 256 - 512
    assert GEOMETRY.stable(4) == 0  # too short: everything still depends on later tokens
    assert GEOMETRY.holdback_tokens() == 8
    assert all(GEOMETRY.stable(n) <= GEOMETRY.stable(n + 1) <= GEOMETRY.samples(n + 1) for n in range(200))


def test_tracker_tells_running_from_ended_texts_by_their_growth() -> None:
    tracker = SentenceTracker(3, stream_tokens=24, geometry=GEOMETRY)
    assert tracker.advance([24, 24, 24]) == ([], [0, 1, 2])
    assert tracker.advance([38, 48, 48]) == ([0], [1, 2])  # text 0 met its end token at 38
    tracker.take(0, np.zeros(GEOMETRY.samples(38), dtype=np.float32), final=True)
    assert tracker.advance([38, 48, 52]) == ([1, 2], [])  # the generator's last yield
    with pytest.raises(StreamingError, match="grew"):
        tracker.advance([40, 48, 52])


def test_taken_pieces_cover_a_text_exactly_once() -> None:
    tracker = SentenceTracker(1, stream_tokens=24, geometry=GEOMETRY)
    whole = np.arange(GEOMETRY.samples(60), dtype=np.float32)
    pieces = []
    for length in (24, 48, 60):
        ended, _ = tracker.advance([length])
        pieces.append(tracker.take(0, whole[: GEOMETRY.samples(length)], final=bool(ended)))
    assert [piece.final for piece in pieces] == [False, False, True]
    assert [piece.tokens for piece in pieces] == [24, 48, 60]
    np.testing.assert_array_equal(np.concatenate([piece.audio for piece in pieces]), whole)


@dataclass
class Stream:
    cancel_after: int | None = None
    chunks: list[tuple[int, bool, np.ndarray]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def send_chunk(self, audio: bytes, index: int, final: bool) -> None:
        self.chunks.append((index, final, decode(audio, "pcm16")))
        if final:
            self.events.append("final")

    def send_error(self, message: str, kind: str = "internal") -> None:
        self.events.append(f"error: {message}")

    def is_cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.chunks) >= self.cancel_after

    def send_cancelled(self) -> None:
        self.events.append("cancelled")

    def audio(self) -> np.ndarray:
        return np.concatenate([samples for _, _, samples in self.chunks])


def _tone(text: str, size: int) -> np.ndarray:
    """A text's whole audio: a ramp whose level says which text it is (so order shows)."""
    level = (sum(map(ord, text)) % 50 + 1) / 100
    return np.linspace(level, level + 0.2, size, dtype=np.float32)


@dataclass
class StreamingSynth:
    """Yields each text's audio in ``parts`` pieces; later texts of a call finish first, so a
    request with two sentences in one call gets their pieces interleaved."""

    parts: int = 3
    size: int = 3000
    fail_at_yield: int | None = None
    drop_final_of: str | None = None
    yields: int = 0
    closed: int = 0
    calls: list[list[str]] = field(default_factory=list)

    def synthesize(self, texts: list[str], voice_id: str) -> list[np.ndarray]:  # pragma: no cover - unused
        raise AssertionError("a streaming engine is streamed")

    def stream(self, texts: list[str], voice_id: str) -> Iterator[list[Piece]]:
        self.calls.append(list(texts))
        step = self.size // self.parts
        try:
            for part in range(self.parts):
                if part == self.fail_at_yield:
                    raise RuntimeError("engine exploded mid-sentence")
                self.yields += 1
                pieces = []
                for index, text in reversed(list(enumerate(texts))):
                    end = self.size if part == self.parts - 1 else (part + 1) * step
                    final = part == self.parts - 1
                    if final and text == self.drop_final_of:
                        continue
                    pieces.append(Piece(index, _tone(text, self.size)[part * step : end], final, part))
                yield pieces
        finally:
            self.closed += 1


def _run(scheduler: Scheduler) -> None:
    for _ in range(1_000):
        if not scheduler.step():
            return
    raise AssertionError("the scheduler never ran out of work")


def test_a_sentence_streams_in_pieces_that_join_into_its_audio() -> None:
    synth = StreamingSynth(parts=3)
    stream = Stream()
    scheduler = Scheduler(synth, CONFIG)
    scheduler.submit([RawRequest("Only one sentence here.", None, None, stream)])
    _run(scheduler)
    assert [(index, final) for index, final, _ in stream.chunks] == [(0, False), (1, False), (2, True)]
    expected = _tone("Only one sentence here.", synth.size)
    np.testing.assert_allclose(stream.audio(), expected, atol=1 / 32767)  # pcm16 rounding only
    assert stream.events == ["final"] and scheduler.open_requests() == 0


def test_pieces_of_a_later_sentence_wait_for_the_earlier_one() -> None:
    synth = StreamingSynth(parts=2)
    stream = Stream()
    scheduler = Scheduler(synth, CONFIG)
    text = "First sentence. Second sentence. Third sentence."
    scheduler.submit([RawRequest(text, None, None, stream)])
    _run(scheduler)
    assert synth.calls == [["First sentence."], ["Second sentence.", "Third sentence."]]
    expected = np.concatenate(
        [_tone(s, synth.size) for s in ("First sentence.", "Second sentence.", "Third sentence.")]
    )
    np.testing.assert_allclose(stream.audio(), expected, atol=1 / 32767)
    assert [index for index, _, _ in stream.chunks] == list(range(6))
    assert [final for _, final, _ in stream.chunks] == [False] * 5 + [True]


def test_a_client_gone_mid_sentence_gets_no_more_audio_and_a_call_nobody_wants_stops() -> None:
    synth = StreamingSynth(parts=5)
    gone, staying = Stream(cancel_after=1), Stream()
    scheduler = Scheduler(synth, CONFIG)
    scheduler.submit([RawRequest("Leaving soon.", None, None, gone), RawRequest("Staying on.", None, None, staying)])
    _run(scheduler)
    assert len(gone.chunks) == 1 and gone.events == ["cancelled"]
    assert len(staying.chunks) == 5 and staying.events == ["final"]
    alone = Stream(cancel_after=1)
    scheduler.submit([RawRequest("Nobody listens.", None, None, alone)])
    yields = synth.yields
    _run(scheduler)
    assert alone.events == ["cancelled"] and synth.yields - yields == 1  # stopped after the first piece
    assert synth.closed == len(synth.calls) and scheduler.open_requests() == 0


def test_an_engine_failing_mid_sentence_ends_its_requests_once_after_partial_audio() -> None:
    synth = StreamingSynth(parts=3, fail_at_yield=1)
    streams = [Stream(), Stream()]
    scheduler = Scheduler(synth, CONFIG)
    scheduler.submit([RawRequest(f"Request {i}.", None, None, s) for i, s in enumerate(streams)])
    _run(scheduler)
    for stream in streams:
        assert [final for _, final, _ in stream.chunks] == [False]
        assert stream.events == ["error: synthesis failed: engine exploded mid-sentence"]
    assert scheduler.open_requests() == 0


def test_a_call_that_ends_without_a_final_piece_fails_that_request_instead_of_stranding_it() -> None:
    synth = StreamingSynth(parts=2, drop_final_of="Lost one.")
    lost, fine = Stream(), Stream()
    scheduler = Scheduler(synth, CONFIG)
    scheduler.submit([RawRequest("Fine one.", None, None, fine), RawRequest("Lost one.", None, None, lost)])
    _run(scheduler)
    assert fine.events == ["final"]
    assert len(lost.events) == 1 and "without the final audio of 1 sentences" in lost.events[0]
    assert scheduler.open_requests() == 0
