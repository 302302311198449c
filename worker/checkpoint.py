"""Generate a ChatTTS checkpoint with random weights that ChatTTS's real loader accepts.

Model hubs are unreachable from CI and dev machines, so tests, the demo and the benchmark run on
weights built here: the same module classes ChatTTS instantiates, randomly initialised with a
fixed seed, saved in the official file layout, with our own sha256 sums in a manifest. ``tiny``
loads and synthesizes in seconds on a CPU; ``full`` has the official architecture sizes, for
benchmarks on a GPU.

Generated checkpoints are cached under ``~/.cache/ttsfleet/weights/<key>/`` (key: ChatTTS
version + generator config) and written to a temp dir renamed into place, so a killed run never
leaves a half-written cache.
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ttsfleet import cache
from ttsfleet.worker.manifest import (
    ASSET_FILES,
    KIND_GENERATED,
    WeightsManifest,
    apply_overrides,
    sha256_file,
    sha256_key,
)

log = logging.getLogger("ttsfleet.worker.checkpoint")

DEFAULT_CACHE_ROOT = Path(os.environ.get("TTSFLEET_WEIGHTS_CACHE") or cache.cache_root() / "weights").expanduser()

# Tokens ChatTTS's prompts and refiner use; they must be single tokens in the vocabulary.
CHATTTS_SPECIAL_TOKENS: tuple[str, ...] = (
    "[Stts]", "[Ptts]", "[spk_emb]", "[empty_spk]", "[Sbreak]", "[Pbreak]", "[Ebreak]",
    "[uv_break]", "[v_break]", "[lbreak]", "[laugh]",
    *(f"[break_{i}]" for i in range(8)),
    *(f"[speed_{i}]" for i in range(10)),
    *(f"[oral_{i}]" for i in range(10)),
    *(f"[laugh_{i}]" for i in range(3)),
)  # fmt: skip
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# A small character vocabulary: enough that English and common Chinese text maps to real ids.
VOCAB_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789,.!?;:'\"-，。！？；：、的一是不了人我在有他这中大来上个们到说"  # noqa: RUF001 - Chinese punctuation on purpose


@dataclass(frozen=True)
class GeneratorConfig:
    name: str
    gpt_hidden: int
    gpt_intermediate: int
    gpt_heads: int
    gpt_layers: int
    decoder_hidden: int
    decoder_layers: int
    decoder_bn: int
    dvae_hidden: int
    dvae_layers: int
    vocos_dim: int
    vocos_intermediate: int
    vocos_layers: int
    num_text_tokens: int
    min_new_tokens: int
    max_new_tokens: int
    seed: int = 0

    def chat_config(self) -> dict[str, Any]:
        """Overrides for ``chat.config``; the GPT's own sizes live in ``asset/gpt/config.json``."""
        half = self.gpt_hidden // 2  # the decoder sees GPT hiddens folded in two
        coder = {"hidden": self.dvae_hidden, "n_layer": self.dvae_layers, "bn_dim": self.decoder_bn}
        return {
            "gpt": {
                "hidden_size": self.gpt_hidden,
                "intermediate_size": self.gpt_intermediate,
                "num_attention_heads": self.gpt_heads,
                "num_hidden_layers": self.gpt_layers,
                "num_text_tokens": self.num_text_tokens,
            },
            "embed": {"hidden_size": self.gpt_hidden, "num_text_tokens": self.num_text_tokens},
            "decoder": {
                "idim": half,
                "odim": half,
                "hidden": self.decoder_hidden,
                "n_layer": self.decoder_layers,
                "bn_dim": self.decoder_bn,
            },
            "dvae": {"encoder": dict(coder), "decoder": dict(coder)},
            "vocos": {
                "backbone": {
                    "init_args": {
                        "dim": self.vocos_dim,
                        "intermediate_dim": self.vocos_intermediate,
                        "num_layers": self.vocos_layers,
                    }
                },
                "head": {"init_args": {"dim": self.vocos_dim}},
            },
        }

    def cache_key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return f"chattts-{version('ChatTTS')}-{self.name}-{hashlib.sha256(blob).hexdigest()[:12]}"


PRESETS: dict[str, GeneratorConfig] = {
    "tiny": GeneratorConfig(
        name="tiny", gpt_hidden=64, gpt_intermediate=128, gpt_heads=2, gpt_layers=2,
        decoder_hidden=32, decoder_layers=1, decoder_bn=16, dvae_hidden=32, dvae_layers=1,
        vocos_dim=32, vocos_intermediate=64, vocos_layers=1, num_text_tokens=512,
        min_new_tokens=24, max_new_tokens=48,
    ),
    # Official sizes (ChatTTS 0.2.x config defaults): same compute profile as the real model.
    "full": GeneratorConfig(
        name="full", gpt_hidden=768, gpt_intermediate=3072, gpt_heads=12, gpt_layers=20,
        decoder_hidden=512, decoder_layers=12, decoder_bn=128, dvae_hidden=256, dvae_layers=12,
        vocos_dim=512, vocos_intermediate=1536, vocos_layers=8, num_text_tokens=21178,
        min_new_tokens=100, max_new_tokens=400,
    ),
}  # fmt: skip


def _vocabulary() -> dict[str, int]:
    tokens = [*BERT_SPECIAL_TOKENS, *CHATTTS_SPECIAL_TOKENS]
    for char in VOCAB_CHARS:
        tokens.append(char)
        if char.isascii() and char.isalnum():
            tokens.append(f"##{char}")  # word-piece continuations so English words split into chars
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}


def _write_tokenizer(target: Path) -> int:
    # ChatTTS loads with BertTokenizerFast; in transformers 5 it is an untyped alias of BertTokenizer.
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    # transformers 5 ignores ``vocab_file=`` here; only a ``vocab`` dict builds the vocabulary.
    tokenizer = BertTokenizerFast(
        vocab=_vocabulary(),
        do_lower_case=True,
        tokenize_chinese_chars=True,
        additional_special_tokens=list(CHATTTS_SPECIAL_TOKENS),
    )
    tokenizer.save_pretrained(str(target))
    special = target / "special_tokens_map.json"
    if not special.exists():  # newer transformers fold this into tokenizer_config.json
        special.write_text(json.dumps(tokenizer.special_tokens_map, indent=2, sort_keys=True))
    for stray in target.iterdir():
        if stray.name not in {"special_tokens_map.json", "tokenizer_config.json", "tokenizer.json"}:
            stray.unlink()
    return len(tokenizer)


def _speaker_stats(hidden: int) -> str:
    """ChatTTS's ``spk_stat``: std then mean of speaker embeddings, float16, base16384."""
    import numpy as np
    import pybase16384 as b14

    rng = np.random.default_rng(0)
    std = np.full(hidden, 0.5, dtype=np.float16)
    mean = rng.normal(0.0, 0.1, hidden).astype(np.float16)
    return str(b14.encode_to_string(np.concatenate([std, mean]).tobytes()))


def generate(config: GeneratorConfig, target: Path) -> WeightsManifest:
    """Write a complete checkpoint (nine asset files + manifest) into ``target``."""
    import torch
    from ChatTTS.config import Config
    from ChatTTS.model import DVAE, Embed
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaModel
    from vocos import Vocos
    from vocos.pretrained import instantiate_class

    torch.manual_seed(config.seed)
    overrides = config.chat_config()
    overrides["spk_stat"] = _speaker_stats(config.gpt_hidden)
    chat_config = copy.deepcopy(Config())
    apply_overrides(chat_config, overrides)

    asset = target / "asset"
    (asset / "gpt").mkdir(parents=True)
    (asset / "tokenizer").mkdir()
    vocab_size = _write_tokenizer(asset / "tokenizer")
    if vocab_size > config.num_text_tokens:
        raise ValueError(f"tokenizer has {vocab_size} tokens, more than num_text_tokens")

    def save(module: torch.nn.Module, name: str) -> None:
        tensors = {key: value.contiguous() for key, value in module.state_dict().items()}
        save_file(tensors, str(asset / name))

    vocos_cfg = chat_config.vocos
    save(
        Vocos(
            feature_extractor=instantiate_class(args=(), init=asdict(vocos_cfg.feature_extractor)),
            backbone=instantiate_class(args=(), init=asdict(vocos_cfg.backbone)),
            head=instantiate_class(args=(), init=asdict(vocos_cfg.head)),
        ),
        "Vocos.safetensors",
    )
    dvae_cfg = chat_config.dvae
    save(
        DVAE(
            decoder_config=asdict(dvae_cfg.decoder),
            encoder_config=asdict(dvae_cfg.encoder),
            vq_config=asdict(dvae_cfg.vq),
            dim=dvae_cfg.decoder.idim,
        ),
        "DVAE.safetensors",
    )
    save(
        DVAE(decoder_config=asdict(chat_config.decoder), dim=chat_config.decoder.idim),
        "Decoder.safetensors",
    )
    embed_cfg = chat_config.embed
    save(
        Embed(embed_cfg.hidden_size, embed_cfg.num_audio_tokens, embed_cfg.num_text_tokens, embed_cfg.num_vq),
        "Embed.safetensors",
    )
    gpt_cfg = chat_config.gpt
    llama = LlamaModel(
        LlamaConfig(
            hidden_size=gpt_cfg.hidden_size,
            intermediate_size=gpt_cfg.intermediate_size,
            num_attention_heads=gpt_cfg.num_attention_heads,
            num_key_value_heads=gpt_cfg.num_attention_heads,
            num_hidden_layers=gpt_cfg.num_hidden_layers,
            max_position_embeddings=gpt_cfg.max_position_embeddings,
            vocab_size=8,  # ChatTTS deletes the GPT's own token embedding after loading
        )
    )
    llama.save_pretrained(str(asset / "gpt"), safe_serialization=True)
    for stray in (asset / "gpt").iterdir():
        if stray.name not in {"config.json", "model.safetensors"}:
            stray.unlink()

    manifest = WeightsManifest(
        kind=KIND_GENERATED,
        revision=config.cache_key(),
        sha256_map={sha256_key(rel): sha256_file(target / rel) for rel in ASSET_FILES},
        chat_config=overrides,
        min_new_tokens=config.min_new_tokens,
        max_new_tokens=config.max_new_tokens,
    )
    manifest.write(target)
    return manifest


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_weights(preset: str = "tiny", cache_root: Path = DEFAULT_CACHE_ROOT) -> Path:
    """The cached checkpoint for ``preset``, generated first if this machine has none yet."""
    config = PRESETS[preset]
    final = cache_root / config.cache_key()
    if WeightsManifest.read(final) is not None:
        return final
    with _locked(cache_root / f".{config.cache_key()}.lock"):
        if WeightsManifest.read(final) is not None:  # another process finished while we waited
            return final
        log.info("generating %s ChatTTS weights into %s", preset, final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache_root))
        try:
            generate(config, tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; Triton may run as another user
            if final.exists():  # leftover without a manifest: never complete, safe to replace
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ttsfleet-make-weights",
        description="Write a ChatTTS checkpoint with random weights that ChatTTS's loader accepts.",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--output", type=Path, help="write here instead of the per-user cache")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.output is None:
        print(ensure_weights(args.preset))
        return 0
    if args.output.exists() and any(args.output.iterdir()):
        parser.error(f"{args.output} is not empty")
    args.output.mkdir(parents=True, exist_ok=True)
    generate(PRESETS[args.preset], args.output)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
