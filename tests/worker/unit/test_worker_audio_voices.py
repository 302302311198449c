from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from ttsfleet.contract import ServingConfig, Voice
from ttsfleet.worker.audio import WavWriter, decode, encode, to_wav_bytes
from ttsfleet.worker.metrics import pending_from_exposition
from ttsfleet.worker.text import InputError
from ttsfleet.worker.voices import check_voices, resolve_voice

pytestmark = pytest.mark.unit


def test_pcm16_roundtrip_and_clipping() -> None:
    samples = np.array([0.0, 0.5, -0.5, 2.0, -2.0], dtype=np.float32)
    payload = encode(samples, "pcm16")
    assert len(payload) == 10
    assert np.allclose(decode(payload, "pcm16"), np.clip(samples, -1, 1), atol=1e-4)


def test_float32_is_exact() -> None:
    samples = np.linspace(-1, 1, 7, dtype=np.float32)
    assert np.array_equal(decode(encode(samples, "float32"), "float32"), samples)


def test_unknown_format_rejected() -> None:
    with pytest.raises(ValueError, match="pcm16, float32"):
        encode(np.zeros(1), "mp3")


def test_wav_writer_streams_chunks_into_valid_file() -> None:
    buffer = io.BytesIO()
    with WavWriter(buffer) as writer:
        writer.write(encode(np.zeros(100), "pcm16"))
        writer.write(encode(np.ones(50) * 0.1, "float32"), "float32")
    buffer.seek(0)
    with wave.open(buffer) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getnframes()) == (24_000, 1, 150)
    assert to_wav_bytes(np.zeros(10))[:4] == b"RIFF"


CONFIG = ServingConfig(voices=(Voice("default", seed=1), Voice("calm", seed=2)))


def test_voice_defaults_and_unknown_voice_lists_known_ones() -> None:
    assert resolve_voice(CONFIG, None).id == "default"
    assert resolve_voice(CONFIG, b"calm".decode()).id == "calm"
    with pytest.raises(InputError, match="unknown voice 'loud'; this fleet serves: calm, default"):
        resolve_voice(CONFIG, "loud")


@pytest.mark.parametrize(
    "config",
    [
        ServingConfig(voices=()),
        ServingConfig(voices=(Voice("a", seed=1), Voice("a", seed=2)), default_voice="a"),
        ServingConfig(voices=(Voice("a", seed=1),), default_voice="b"),
        ServingConfig(voices=(Voice("a"),), default_voice="a"),
    ],
)
def test_broken_voice_configs_rejected_before_loading(config: ServingConfig) -> None:
    with pytest.raises(ValueError):
        check_voices(config)


def test_triton_pending_gauge_parsed_for_model() -> None:
    text = (
        "# TYPE nv_inference_pending_request_count gauge\n"
        'nv_inference_pending_request_count{model="chattts",version="1"} 3\n'
        'nv_inference_pending_request_count{model="chattts_unary",version="1"} 5\n'
    )
    assert pending_from_exposition(text, "chattts") == 3
    assert pending_from_exposition(text, "other") is None
