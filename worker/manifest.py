"""The manifest a model cache carries: which weights it holds and how to check them.

ChatTTS pins sha256 sums of the official weights in its ``sha256_map``; the loader refuses any
other file. Weights we generate ourselves (tests, demo, benchmarks) ship their own sums in the
same ``sha256_map`` form, plus the ``chat.config`` sizes they were built with. Official weights
carry no such manifest, so the pinned sums keep being enforced for them.
"""

from __future__ import annotations

import hashlib
import json
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


@dataclass
class WeightsManifest:
    kind: str
    revision: str
    sha256_map: dict[str, str] = field(default_factory=dict)
    # Overrides applied to ``chat.config`` before ``load()``: {"gpt": {"hidden_size": 64}, ...}
    chat_config: dict[str, Any] = field(default_factory=dict)
    # Decoding defaults that make sense for these weights (random weights stop early otherwise).
    min_new_tokens: int = 0
    max_new_tokens: int = 2048

    def write(self, cache_dir: Path) -> None:
        (cache_dir / MANIFEST_FILE).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def read(cls, cache_dir: Path) -> WeightsManifest | None:
        path = cache_dir / MANIFEST_FILE
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))


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
