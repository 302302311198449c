"""ChatTTS loaded with its real loader, plus batched synthesis per voice and the warmup check.

Used by the Triton model (``model_repository/chattts/1/model.py``) and in-process by the
benchmark, so both run exactly the same synthesis code.

``stream`` is what serves: ChatTTS's streaming generation (``Chat._infer_code(stream=True)``, the
generator ``Chat.infer(stream=True)`` drives) decoded with ChatTTS's own decoder, emitting only
the samples later tokens cannot change (``streaming.py`` says why ``infer(stream=True)``'s chunks
do not join). It reaches past ChatTTS's public ``infer`` for that, so ChatTTS is pinned
(pyproject) and ``tests/worker/test_worker_subsentence_streaming.py`` checks the joined stream against
``infer``'s own output. ``synthesize`` is plain ``Chat.infer``: the benchmark's baseline.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import ChatTTS
import numpy as np
import torch

from ttsfleet.contract import SAMPLE_RATE_HZ, ServingConfig, Voice
from ttsfleet.worker.audio import rms
from ttsfleet.worker.manifest import KIND_GENERATED, WeightsManifest, apply_overrides
from ttsfleet.worker.streaming import Geometry, Piece, SentenceTracker, StreamingError

log = logging.getLogger("ttsfleet.worker.engine")

# Warmup thresholds: random-weight and real voices both clear these; silence or a truncated
# decoder output does not.
MIN_WARMUP_RMS = 1e-4
MIN_WARMUP_SECONDS = 0.2
MAX_WARMUP_SECONDS_PER_CHAR = 1.0
# ChatTTS's own ``stream_batch``: a running sentence yields every 24 tokens (about 0.5 s of audio).
STREAM_TOKENS = 24
# The streaming self-check: a prefix decode's stable samples may differ from the whole decode's
# only by float rounding (convolutions over different lengths); a wrong look-ahead differs by
# the signal itself.
STABLE_TOLERANCE = 1e-4


class EngineError(RuntimeError):
    pass


@dataclass(frozen=True)
class WarmupResult:
    voice: str
    seconds: float
    rms: float
    elapsed: float


def right_context_frames(*modules: torch.nn.Module) -> int:
    """Frames of look-ahead a stack of stride-1 ``Conv1d`` layers needs (summed over all of them:
    exact for a chain, an upper bound where residual branches skip some)."""
    total = 0
    for module in modules:
        for layer in module.modules():
            if not isinstance(layer, torch.nn.Conv1d):
                continue
            stride, kernel, dilation, padding = layer.stride[0], layer.kernel_size[0], layer.dilation[0], layer.padding
            if stride != 1 or isinstance(padding, str):
                raise EngineError(f"cannot stream through {layer}: only stride-1 convolutions with numeric padding")
            total += dilation * (kernel - 1) - padding[0]
    return total


def model_geometry(chat: ChatTTS.Chat) -> Geometry:
    istft = chat.vocos.head.istft
    if istft.padding != "center":
        raise EngineError(f"cannot stream with Vocos ISTFT padding {istft.padding!r} (only 'center')")
    frames = right_context_frames(chat.decoder, chat.vocos.backbone)
    return Geometry(right_frames=frames, hop=int(istft.hop_length), n_fft=int(istft.n_fft))


def pick_device(want_gpu: bool) -> torch.device:
    if want_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


class Engine:
    def __init__(
        self,
        chat: ChatTTS.Chat,
        config: ServingConfig,
        manifest: WeightsManifest | None,
        stream_tokens: int = STREAM_TOKENS,
    ) -> None:
        self.chat = chat
        self.stream_tokens = stream_tokens
        self.geometry = model_geometry(chat)
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
            extra={
                "device": str(device),
                "seconds": round(time.monotonic() - started, 2),
                "cpu_threads": torch.get_num_threads(),  # OMP_NUM_THREADS, which the operator sets
            },
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

    def stream(self, texts: list[str], voice_id: str, seed: int | None = None) -> Iterator[list[Piece]]:
        """One streaming ChatTTS call for all ``texts`` in one voice: after every ``stream_tokens``
        tokens, the new audio of each text (``Piece``); each text ends with one final piece.
        Closing the iterator early stops the generation."""
        params = ChatTTS.Chat.InferCodeParams(
            spk_emb=self.speakers[voice_id],
            min_new_token=self.min_new_tokens,
            max_new_token=self.max_new_tokens,
            show_tqdm=False,
            stream_batch=self.stream_tokens,
            manual_seed=seed,
        )
        tracker = SentenceTracker(len(texts), self.stream_tokens, self.geometry)
        self.chat.context.set(False)  # what infer() does first: no interrupt pending
        generator = self.chat._infer_code(self._prompts(texts), True, self.device, True, params)
        hiddens: list[torch.Tensor] = []
        try:
            for result in generator:
                hiddens = list(result.hiddens)
                ended, running = tracker.advance([int(hidden.shape[0]) for hidden in hiddens])
                pieces = self._pieces(tracker, hiddens, running, final=False)
                pieces += self._pieces(tracker, hiddens, ended, final=True)
                if pieces:
                    yield sorted(pieces, key=lambda piece: piece.index)
        except StreamingError as error:
            raise EngineError(f"streaming: {error}") from error
        finally:
            generator.close()
        if leftover := tracker.unfinished():  # every text has ended by ChatTTS's last yield
            if not hiddens:
                raise EngineError(f"ChatTTS yielded nothing for {len(texts)} texts")
            yield self._pieces(tracker, hiddens, leftover, final=True)

    def _prompts(self, texts: list[str]) -> list[str]:
        """The texts as ``Chat.infer`` hands them to generation: normalized, or refined."""
        if self.config.refine_text:
            refined = self.chat.infer(
                list(texts),
                refine_text_only=True,
                split_text=False,
                params_refine_text=ChatTTS.Chat.RefineTextParams(show_tqdm=False),
            )
            return [str(text) for text in refined]
        return [self.chat.normalizer(text, True, True, None) for text in texts]

    def _pieces(
        self, tracker: SentenceTracker, hiddens: list[torch.Tensor], which: list[int], final: bool
    ) -> list[Piece]:
        """Decode ``which`` texts, equal lengths together (no padding: a text's audio never
        depends on what else shares the call), and take their new samples."""
        todo = which if final else [index for index in which if tracker.wanted(index)]
        pieces = []
        for _, group in groupby(sorted(todo, key=lambda index: tracker.tokens[index]), lambda i: tracker.tokens[i]):
            indexes = list(group)
            wavs = self._decode([hiddens[index][: tracker.tokens[index]] for index in indexes])
            pieces += [tracker.take(index, wav, final) for index, wav in zip(indexes, wavs, strict=True)]
        return pieces

    def _decode(self, hiddens: list[torch.Tensor]) -> list[np.ndarray]:
        if not hiddens[0].shape[0]:
            return [np.zeros(0, dtype=np.float32) for _ in hiddens]
        wavs = self.chat._decode_to_wavs(list(hiddens), True)
        return [np.asarray(wav, dtype=np.float32).reshape(-1) for wav in wavs]

    def check_streaming(self, tokens: int = 4 * STREAM_TOKENS) -> float:
        """Decode a random prefix and the whole: the prefix's stable samples must match (the
        look-ahead covers the receptive field). Returns the largest difference found."""
        generator = torch.Generator().manual_seed(0)
        whole = torch.randn(
            tokens + self.geometry.holdback_tokens() + 8, self.chat.config.gpt.hidden_size, generator=generator
        )
        whole = whole.to(self.device)
        full = self._decode([whole])[0]
        prefix = self._decode([whole[:tokens]])[0]
        stable = self.geometry.stable(tokens)
        if stable == 0:
            raise EngineError(f"streaming: {tokens} tokens give no stable audio (look-ahead {self.geometry})")
        difference = float(np.abs(prefix[:stable] - full[:stable]).max())
        if difference > STABLE_TOLERANCE * max(1e-6, float(np.abs(full).max())):
            raise EngineError(
                f"streaming: samples taken as final changed by {difference:.3g} once later tokens "
                f"existed; the look-ahead ({self.geometry}) does not cover this model"
            )
        return difference

    def warmup(self) -> list[WarmupResult]:
        """Synthesize each warmup sentence in every voice; raise unless the audio is plausible."""
        self.check_streaming()
        results = []
        sentences = list(self.config.warmup_sentences) or ["Hello."]
        for voice in self.config.voices:
            started = time.monotonic()
            clips = joined(self.stream(sentences, voice.id), len(sentences))
            for sentence, clip in zip(sentences, clips, strict=True):
                seconds = clip.size / SAMPLE_RATE_HZ
                level = rms(clip)
                if level < MIN_WARMUP_RMS:
                    raise EngineError(f"warmup: voice {voice.id!r} produced silence for {sentence!r}")
                if not MIN_WARMUP_SECONDS <= seconds <= MAX_WARMUP_SECONDS_PER_CHAR * len(sentence) + 5:
                    raise EngineError(f"warmup: voice {voice.id!r} produced {seconds:.2f}s of audio for {sentence!r}")
                results.append(WarmupResult(voice.id, seconds, level, time.monotonic() - started))
        return results


def joined(stream: Iterator[list[Piece]], count: int) -> list[np.ndarray]:
    """Each text's audio from a ``stream``: its pieces joined; every text must end once."""
    parts: list[list[np.ndarray]] = [[] for _ in range(count)]
    finals = [0] * count
    for pieces in stream:
        for piece in pieces:
            if finals[piece.index]:
                raise EngineError(f"streaming: text {piece.index} got a piece after its final one")
            parts[piece.index].append(piece.audio)
            finals[piece.index] += piece.final
    if finals != [1] * count:
        raise EngineError(f"streaming: final pieces per text {finals}, expected one each")
    return [np.concatenate(part) for part in parts]
