"""ChatTTS's real loader on generated weights, in-process (no server)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ttsfleet.contract import ServingConfig, Voice
from ttsfleet.worker.manifest import MANIFEST_FILE

pytestmark = pytest.mark.worker

engine_module = pytest.importorskip("ttsfleet.worker.engine")


def test_generated_weights_load_and_synthesize_a_batch(tiny_weights: Path) -> None:
    engine = engine_module.Engine.load(tiny_weights, ServingConfig())
    clips = engine.synthesize(["First text.", "Second, longer text here."], "default")
    assert len(clips) == 2 and all(clip.size > 0.2 * 24_000 for clip in clips)
    assert [result.voice for result in engine.warmup()] == ["default"]


def test_tampered_file_is_refused_by_chattts_checksums(tiny_weights: Path, tmp_path: Path) -> None:
    copy = tmp_path / "weights"
    shutil.copytree(tiny_weights, copy)
    embed = copy / "asset" / "Embed.safetensors"
    embed.write_bytes(embed.read_bytes()[:-8] + b"tampered")
    with pytest.raises(engine_module.EngineError, match="sha256"):
        engine_module.Engine.load(copy, ServingConfig())


def test_without_our_manifest_the_pinned_official_sums_apply(tiny_weights: Path, tmp_path: Path) -> None:
    copy = tmp_path / "weights"
    shutil.copytree(tiny_weights, copy)
    (copy / MANIFEST_FILE).unlink()
    with pytest.raises(engine_module.EngineError):
        engine_module.Engine.load(copy, ServingConfig())


def test_seeded_voices_are_stable_and_distinct(tiny_weights: Path) -> None:
    config = ServingConfig(voices=(Voice("a", seed=42), Voice("b", seed=7), Voice("c", seed=42)), default_voice="a")
    engine = engine_module.Engine.load(tiny_weights, config)
    again = engine_module.Engine.load(tiny_weights, config)
    assert engine.speakers["a"] == engine.speakers["c"] == again.speakers["a"]
    assert engine.speakers["a"] != engine.speakers["b"]


def test_voice_from_embedding_string(tiny_weights: Path) -> None:
    seeded = engine_module.Engine.load(tiny_weights, ServingConfig())
    embedding = seeded.speakers["default"]
    config = ServingConfig(voices=(Voice("given", embedding=embedding),), default_voice="given")
    engine = engine_module.Engine.load(tiny_weights, config)
    assert engine.speakers["given"] == embedding
    bad = ServingConfig(voices=(Voice("bad", embedding=seeded.speakers["default"][:5]),), default_voice="bad")
    with pytest.raises(engine_module.EngineError, match="voice 'bad'"):
        engine_module.Engine.load(tiny_weights, bad)
