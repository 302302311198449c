"""ChatTTS loaded with its real loader, plus batched synthesis per voice and the warmup check.

Used by the Triton model (``model_repository/chattts/1/model.py``) and in-process by the
benchmark, so both run exactly the same synthesis code.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import ChatTTS
import numpy as np
import torch

from ttsfleet.contract import SAMPLE_RATE_HZ, ServingConfig, Voice
from ttsfleet.worker.audio import rms
from ttsfleet.worker.manifest import KIND_GENERATED, WeightsManifest, apply_overrides

log = logging.getLogger("ttsfleet.worker.engine")

# Warmup thresholds: random-weight and real voices both clear these; silence or a truncated
# decoder output does not.
MIN_WARMUP_RMS = 1e-4
MIN_WARMUP_SECONDS = 0.2
MAX_WARMUP_SECONDS_PER_CHAR = 1.0


class EngineError(RuntimeError):
    pass


@dataclass(frozen=True)
class WarmupResult:
    voice: str
    seconds: float
    rms: float
    elapsed: float


def pick_device(want_gpu: bool) -> torch.device:
    if want_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


class Engine:
    def __init__(self, chat: ChatTTS.Chat, config: ServingConfig, manifest: WeightsManifest | None) -> None:
        self.chat = chat
        self.config = config
        self.device = chat.device
        defaults = manifest or WeightsManifest(kind="official", revision="")
        self.min_new_tokens = config.min_new_tokens if config.min_new_tokens is not None else defaults.min_new_tokens
        self.max_new_tokens = config.max_new_tokens if config.max_new_tokens is not None else defaults.max_new_tokens
        self.speakers = {voice.id: self._speaker(voice) for voice in config.voices}

    @classmethod
    def load(cls, cache_dir: Path, config: ServingConfig, device: torch.device | None = None) -> Engine:
        started = time.monotonic()
        device = device or pick_device(config.gpu)
        chat = ChatTTS.Chat(logging.getLogger("ttsfleet.chattts"))
        manifest = WeightsManifest.read(cache_dir)
        if manifest is not None and manifest.kind == KIND_GENERATED:
            # Our generated weights: their own sums and sizes, handed over exactly where ChatTTS
            # keeps the pinned ones, so the loader's own check still runs over every file.
            chat.sha256_map = dict(manifest.sha256_map)
            chat.config = copy.deepcopy(chat.config)
            apply_overrides(chat.config, manifest.chat_config)
        if not chat.load(source="custom", custom_path=str(cache_dir), device=device, compile=False):
            raise EngineError(f"ChatTTS refused the checkpoint in {cache_dir} (missing files or sha256 mismatch)")
        if device.type == "cuda" and config.fp16:
            chat.gpt.gpt.half()  # the Llama backbone dominates; vocoder and decoder stay fp32
        engine = cls(chat, config, manifest)
        log.info(
            "chattts loaded",
            extra={"device": str(device), "seconds": round(time.monotonic() - started, 2)},
        )
        return engine

    def _speaker(self, voice: Voice) -> str:
        if voice.embedding is not None:
            try:
                values = self.chat.speaker._decode(voice.embedding)
            except Exception as error:
                raise EngineError(f"voice {voice.id!r}: embedding does not decode ({error})") from error
            if values.size != self.chat.config.gpt.hidden_size:
                raise EngineError(
                    f"voice {voice.id!r}: embedding has {values.size} values, "
                    f"the model needs {self.chat.config.gpt.hidden_size}"
                )
            return voice.embedding
        generator_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(int(voice.seed or 0))
            return self.chat.sample_random_speaker()
        finally:
            torch.random.set_rng_state(generator_state)

    def synthesize(self, texts: list[str], voice_id: str) -> list[np.ndarray]:
        """One ChatTTS ``infer`` call for all ``texts`` in one voice; float32 audio per text."""
        params = ChatTTS.Chat.InferCodeParams(
            spk_emb=self.speakers[voice_id],
            min_new_token=self.min_new_tokens,
            max_new_token=self.max_new_tokens,
            show_tqdm=False,
        )
        wavs = self.chat.infer(
            list(texts),
            skip_refine_text=not self.config.refine_text,
            split_text=False,
            params_refine_text=ChatTTS.Chat.RefineTextParams(show_tqdm=False),
            params_infer_code=params,
        )
        if len(wavs) != len(texts):
            raise EngineError(f"ChatTTS returned {len(wavs)} clips for {len(texts)} texts")
        return [np.asarray(wav, dtype=np.float32).reshape(-1) for wav in wavs]

    def warmup(self) -> list[WarmupResult]:
        """Synthesize each warmup sentence in every voice; raise unless the audio is plausible."""
        results = []
        sentences = list(self.config.warmup_sentences) or ["Hello."]
        for voice in self.config.voices:
            started = time.monotonic()
            clips = self.synthesize(sentences, voice.id)
            for sentence, clip in zip(sentences, clips, strict=True):
                seconds = clip.size / SAMPLE_RATE_HZ
                level = rms(clip)
                if level < MIN_WARMUP_RMS:
                    raise EngineError(f"warmup: voice {voice.id!r} produced silence for {sentence!r}")
                if not MIN_WARMUP_SECONDS <= seconds <= MAX_WARMUP_SECONDS_PER_CHAR * len(sentence) + 5:
                    raise EngineError(f"warmup: voice {voice.id!r} produced {seconds:.2f}s of audio for {sentence!r}")
                results.append(WarmupResult(voice.id, seconds, level, time.monotonic() - started))
        return results
