"""The manifest a model cache carries: which weights it holds and how to check them.

ChatTTS pins sha256 sums of the official weights in its ``sha256_map``; the loader refuses any
other file. Weights we generate ourselves (tests, demo, benchmarks) ship their own sums in the
same ``sha256_map`` form, plus the ``chat.config`` sizes they were built with. Official weights
carry no such manifest, so the pinned sums keep being enforced for them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_FILE = "ttsfleet-weights.json"
KIND_GENERATED = "generated"
KIND_OFFICIAL = "official"

# The nine files ChatTTS's loader checks, relative to the cache dir, and their sha256_map keys.
ASSET_FILES: tuple[str, ...] = (
    "asset/Decoder.safetensors",
    "asset/DVAE.safetensors",
    "asset/Embed.safetensors",
    "asset/Vocos.safetensors",
    "asset/gpt/config.json",
    "asset/gpt/model.safetensors",
    "asset/tokenizer/special_tokens_map.json",
    "asset/tokenizer/tokenizer_config.json",
    "asset/tokenizer/tokenizer.json",
)


def sha256_key(relative_path: str) -> str:
    """ChatTTS's key for a file: ``asset/gpt/config.json`` -> ``sha256_asset_gpt_config_json``."""
    return "sha256_" + relative_path.replace("/", "_").replace(".", "_")


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


class ManifestError(ValueError):
    """A manifest that says more (or other) than checksums and weight settings."""


# What a source's manifest may set in ``chat.config``: the sizes its weights were trained with and
# their speaker statistics, which ChatTTS cannot read from the files. Nothing else of the engine's
# configuration (paths, class paths, sample rate, caching) may come from a model source.
# A leaf None is a positive integer; SPEAKER_STATS is ChatTTS's base16384 text of float16s.
SPEAKER_STATS = "speaker-stats"
MAX_SPEAKER_STATS_CHARS = 1 << 16
_SIZES = {"hidden": None, "n_layer": None, "bn_dim": None}
WEIGHT_SETTINGS: dict[str, Any] = {
    "gpt": dict.fromkeys(
        (
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "num_hidden_layers",
            "max_position_embeddings",
            "num_audio_tokens",
            "num_text_tokens",
            "num_vq",
        )
    ),
    "embed": dict.fromkeys(("hidden_size", "num_audio_tokens", "num_text_tokens", "num_vq")),
    "decoder": {"idim": None, "odim": None, **_SIZES},
    "dvae": {"encoder": dict(_SIZES), "decoder": dict(_SIZES)},
    "vocos": {
        "backbone": {"init_args": dict.fromkeys(("dim", "intermediate_dim", "num_layers"))},
        "head": {"init_args": {"dim": None}},
    },
    "spk_stat": SPEAKER_STATS,
}
MANIFEST_KEYS = ("kind", "revision", "sha256_map", "chat_config", "min_new_tokens", "max_new_tokens")
MAX_SETTING = 1 << 20  # far above any real ChatTTS size; stops absurd allocations early


def _check_settings(value: Any, allowed: dict[str, Any], path: str) -> None:
    if not isinstance(value, dict):
        raise ManifestError(f"{MANIFEST_FILE}: {path} must be an object")
    for key, item in value.items():
        where = f"{path}.{key}"
        if key not in allowed:
            raise ManifestError(
                f"{MANIFEST_FILE}: {where} is not a weight setting a manifest may set "
                f"(allowed here: {', '.join(sorted(allowed))})"
            )
        if allowed[key] == SPEAKER_STATS:
            if not isinstance(item, str) or not 0 < len(item) <= MAX_SPEAKER_STATS_CHARS:
                raise ManifestError(f"{MANIFEST_FILE}: {where} must be ChatTTS's encoded speaker statistics")
        elif allowed[key] is None:
            if isinstance(item, bool) or not isinstance(item, int) or not 0 < item <= MAX_SETTING:
                raise ManifestError(f"{MANIFEST_FILE}: {where} must be an integer in 1..{MAX_SETTING}")
        else:
            _check_settings(item, allowed[key], where)


def _validated(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ManifestError(f"{MANIFEST_FILE}: must be a JSON object")
    unknown = sorted(set(raw) - set(MANIFEST_KEYS))
    if unknown:
        raise ManifestError(
            f"{MANIFEST_FILE}: unknown keys {unknown}: a manifest carries checksums and weight settings "
            f"only ({', '.join(MANIFEST_KEYS)})"
        )
    for key in ("kind", "revision"):
        if not isinstance(raw.get(key), str):
            raise ManifestError(f"{MANIFEST_FILE}: {key} must be a string")
    if raw["kind"] not in (KIND_GENERATED, KIND_OFFICIAL):
        raise ManifestError(f"{MANIFEST_FILE}: kind must be {KIND_GENERATED!r} or {KIND_OFFICIAL!r}")
    sums = raw.get("sha256_map", {})
    known = {sha256_key(relative) for relative in ASSET_FILES}
    if not isinstance(sums, dict):
        raise ManifestError(f"{MANIFEST_FILE}: sha256_map must be an object")
    for key, value in sums.items():
        if key not in known:
            raise ManifestError(f"{MANIFEST_FILE}: sha256_map.{key} names no file of the model")
        if not isinstance(value, str) or re.fullmatch(r"[0-9a-f]{64}", value) is None:
            raise ManifestError(f"{MANIFEST_FILE}: sha256_map.{key} must be 64 lowercase hex digits")
    _check_settings(raw.get("chat_config", {}), WEIGHT_SETTINGS, "chat_config")
    for key in ("min_new_tokens", "max_new_tokens"):
        value = raw.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SETTING:
            raise ManifestError(f"{MANIFEST_FILE}: {key} must be an integer in 0..{MAX_SETTING}")
    return raw


@dataclass
class WeightsManifest:
    """Checksums of the weights plus the settings they need; :meth:`parse` refuses anything else."""

    kind: str
    revision: str
    sha256_map: dict[str, str] = field(default_factory=dict)
    # Overrides applied to ``chat.config`` before ``load()``, limited to WEIGHT_SETTINGS:
    # {"gpt": {"hidden_size": 64}, ...}
    chat_config: dict[str, Any] = field(default_factory=dict)
    # Decoding defaults that make sense for these weights (random weights stop early otherwise).
    min_new_tokens: int = 0
    max_new_tokens: int = 2048

    @classmethod
    def parse(cls, text: bytes | str) -> WeightsManifest:
        """A manifest from a source or a cache; :class:`ManifestError` names what it may not say."""
        try:
            raw = json.loads(text)
        except ValueError as error:
            raise ManifestError(f"{MANIFEST_FILE}: not JSON ({error})") from error
        return cls(**_validated(raw))

    def write(self, cache_dir: Path) -> None:
        (cache_dir / MANIFEST_FILE).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def read(cls, cache_dir: Path) -> WeightsManifest | None:
        path = cache_dir / MANIFEST_FILE
        if not path.is_file():
            return None
        return cls.parse(path.read_bytes())


def apply_overrides(target: Any, overrides: dict[str, Any]) -> None:
    """Set nested attributes of ChatTTS's config dataclasses from a plain dict.

    Callers deep-copy ``chat.config`` first: ChatTTS's config defaults are shared instances, so
    editing them in place would change every ``Chat`` in the process.
    """
    for key, value in overrides.items():
        if not hasattr(target, key):
            raise KeyError(f"ChatTTS config has no field {key!r} on {type(target).__name__}")
        if isinstance(value, dict):
            apply_overrides(getattr(target, key), value)
        else:
            setattr(target, key, tuple(value) if isinstance(value, list) else value)
