"""Voice lookup for a fleet (pure): request voice id -> declared ``contract.Voice``."""

from __future__ import annotations

from ttsfleet.contract import ServingConfig, Voice
from ttsfleet.worker.text import InputError


def resolve_voice(config: ServingConfig, requested: str | None) -> Voice:
    voice_id = (requested or "").strip() or config.default_voice
    for voice in config.voices:
        if voice.id == voice_id:
            return voice
    known = ", ".join(sorted(config.voice_ids()))
    raise InputError(f"unknown voice {voice_id!r}; this fleet serves: {known}")


def check_voices(config: ServingConfig) -> None:
    """Reject a serving config whose voices cannot work, before any model is loaded."""
    ids = config.voice_ids()
    if not ids:
        raise ValueError("serving config declares no voices")
    if len(set(ids)) != len(ids):
        raise ValueError(f"voice ids are not unique: {ids}")
    if config.default_voice not in ids:
        raise ValueError(f"default voice {config.default_voice!r} is not among the voices {ids}")
    for voice in config.voices:
        if (voice.seed is None) == (voice.embedding is None):
            raise ValueError(f"voice {voice.id!r} needs exactly one of seed or embedding")
