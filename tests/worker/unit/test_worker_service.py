"""The batch-serving rules with a stand-in synthesizer (no torch, no server)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from ttsfleet.contract import ServingConfig, Voice
from ttsfleet.worker.service import RawRequest, serve_batch

pytestmark = pytest.mark.unit

CONFIG = ServingConfig(voices=(Voice("default", seed=1), Voice("calm", seed=2)), max_batch_size=4, max_text_chars=100)


@dataclass
class Recorder:
    events: list[tuple] = field(default_factory=list)

    def send_chunk(self, audio: bytes, index: int, final: bool) -> None:
        self.events.append(("chunk", index, final, len(audio)))

    def send_error(self, message: str, kind: str = "internal") -> None:
        self.events.append(("error", message))

    def is_cancelled(self) -> bool:
        return False

    def send_cancelled(self) -> None:
        self.events.append(("cancelled",))


@dataclass
class Synth:
    calls: list[tuple[list[str], str]] = field(default_factory=list)
    fail_on: str | None = None

    def synthesize(self, texts: list[str], voice_id: str) -> list[np.ndarray]:
        self.calls.append((list(texts), voice_id))
        if self.fail_on and any(self.fail_on in text for text in texts):
            raise RuntimeError("boom")
        return [np.full(len(text) * 10, 0.1, dtype=np.float32) for text in texts]


def _request(text, voice=None, fmt=None) -> tuple[RawRequest, Recorder]:
    stream = Recorder()
    return RawRequest(text, voice, fmt, stream), stream


def test_bad_requests_get_errors_and_good_ones_still_batch_together() -> None:
    good1, s1 = _request(b"One. Two.")
    bad, s2 = _request(b"  ")
    good2, s3 = _request("Three.", "calm")
    good3, s4 = _request("Four.", None, "float32")
    synth = Synth()
    serve_batch([good1, bad, good2, good3], synth, CONFIG)
    assert s2.events == [("error", "text is empty")]
    assert s1.events == [("chunk", 0, False, 80), ("chunk", 1, True, 80)]
    assert s3.events == [("chunk", 0, True, 120)]
    assert s4.events == [("chunk", 0, True, 200)]  # float32: 4 bytes a sample
    assert synth.calls[0] == (["One.", "Four."], "default")  # one call per voice, first sentences first


def test_engine_failure_fails_only_its_requests() -> None:
    doomed, s1 = _request("Explode now.")
    fine, s2 = _request("Fine.", "calm")
    serve_batch([doomed, fine], Synth(fail_on="Explode"), CONFIG)
    assert s1.events == [("error", "synthesis failed: boom")]
    assert s2.events == [("chunk", 0, True, 100)]


def test_bad_format_and_voice_are_in_band_errors() -> None:
    fmt, s1 = _request("Hi.", None, "mp3")
    voice, s2 = _request("Hi.", "ghost")
    serve_batch([fmt, voice], Synth(), CONFIG)
    assert "unknown audio format 'mp3'" in s1.events[0][1]
    assert "unknown voice 'ghost'" in s2.events[0][1]
