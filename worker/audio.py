"""Audio encodings on the wire and the WAV helper for clients (pure numpy)."""

from __future__ import annotations

import io
import wave
from typing import BinaryIO

import numpy as np

from ttsfleet.contract import AUDIO_FORMATS, SAMPLE_RATE_HZ

DEFAULT_FORMAT = "pcm16"


def encode(samples: np.ndarray, audio_format: str) -> bytes:
    """Float samples in [-1, 1] -> little-endian bytes in ``audio_format``."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if audio_format == "float32":
        return samples.astype("<f4").tobytes()
    if audio_format == "pcm16":
        return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    raise ValueError(f"unknown audio format {audio_format!r}; use one of {', '.join(AUDIO_FORMATS)}")


def decode(payload: bytes, audio_format: str) -> np.ndarray:
    """Wire bytes -> float32 samples."""
    if audio_format == "float32":
        return np.frombuffer(payload, dtype="<f4").astype(np.float32)
    if audio_format == "pcm16":
        return np.frombuffer(payload, dtype="<i2").astype(np.float32) / 32767.0
    raise ValueError(f"unknown audio format {audio_format!r}")


def bytes_per_sample(audio_format: str) -> int:
    return 4 if audio_format == "float32" else 2


def duration_seconds(n_samples: int) -> float:
    return n_samples / SAMPLE_RATE_HZ


def rms(samples: np.ndarray) -> float:
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))


class WavWriter:
    """Streams PCM16 chunks into a WAV file; the header is fixed up on close."""

    def __init__(self, target: str | BinaryIO, sample_rate: int = SAMPLE_RATE_HZ) -> None:
        self._wave = wave.open(target, "wb")  # noqa: SIM115 - closed in close()
        self._wave.setnchannels(1)
        self._wave.setsampwidth(2)
        self._wave.setframerate(sample_rate)
        self.samples_written = 0

    def write(self, payload: bytes, audio_format: str = DEFAULT_FORMAT) -> None:
        pcm = payload if audio_format == "pcm16" else encode(decode(payload, audio_format), "pcm16")
        self._wave.writeframes(pcm)
        self.samples_written += len(pcm) // 2

    def close(self) -> None:
        self._wave.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def to_wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ) -> bytes:
    buffer = io.BytesIO()
    with WavWriter(buffer, sample_rate) as writer:
        writer.write(encode(samples, "pcm16"))
    return buffer.getvalue()
