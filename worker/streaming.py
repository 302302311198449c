"""Sub-sentence streaming: which samples of a sentence still being generated are final (pure).

ChatTTS's GPT, run with ``stream=True``, yields every ``stream_batch`` tokens the hidden states of
every text of the call so far. The decoder (DVAE decoder, then the Vocos backbone: stacks of
non-causal 1-D convolutions) and Vocos's ISTFT turn them into audio, and a sample near the end of
such a partial decode still lacks right-hand context: it changes once later tokens exist.
ChatTTS's own ``infer(stream=True)`` sends those samples anyway (each chunk is a slice of a fresh
decode of the whole prefix, of one array padded to the call's longest text), so consecutive
chunks do not join. Here a piece carries only samples whose receptive field lies within the tokens
generated so far; the rest waits for the next yield, and a finished sentence's tail leaves with
its final piece. The pieces of a sentence therefore join into exactly the audio one decode of the
whole sentence gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The DVAE decoder folds each GPT hidden state into two mel frames (ChatTTS 0.2's ``DVAE.forward``).
FRAMES_PER_TOKEN = 2


class StreamingError(RuntimeError):
    pass


@dataclass(frozen=True)
class Geometry:
    """How tokens map to samples for one loaded model."""

    right_frames: int  # mel frames of look-ahead the decoder and vocoder backbone need
    hop: int  # ISTFT hop, samples per mel frame
    n_fft: int  # ISTFT window; ``center`` padding

    def samples(self, tokens: int) -> int:
        """Samples a decode of ``tokens`` tokens gives (``torch.istft(center=True)``)."""
        return max(0, (FRAMES_PER_TOKEN * tokens - 1) * self.hop)

    def stable(self, tokens: int) -> int:
        """Leading samples of that decode that no later token can change: the frames they draw on
        (a window reaches ``n_fft // 2`` samples either side of its frame) have their whole
        receptive field within the first ``tokens`` tokens."""
        exact_frames = FRAMES_PER_TOKEN * tokens - self.right_frames
        return min(self.samples(tokens), max(0, exact_frames * self.hop - self.n_fft // 2))

    def holdback_tokens(self) -> int:
        """Tokens of audio a running sentence holds back (its look-ahead), rounded up."""
        samples_per_token = FRAMES_PER_TOKEN * self.hop
        held = self.samples(1_000) - self.stable(1_000)
        return -(-held // samples_per_token)


@dataclass(frozen=True)
class Piece:
    """New audio of one text of a streaming call; a text's pieces join into its audio."""

    index: int  # the text's position in the call
    audio: np.ndarray
    final: bool  # the text's last piece
    tokens: int  # tokens generated for the text when this piece left (partial: fewer than its total)


@dataclass
class SentenceTracker:
    """Where each text of one streaming call stands: tokens seen, samples sent, finished.

    ChatTTS yields after every ``stream_tokens`` generation steps, so a text still running gained
    exactly that many tokens since the previous yield; one that gained fewer has ended (its end
    token, or the token bound), and every text has ended by the generator's last yield.
    """

    count: int
    stream_tokens: int
    geometry: Geometry
    tokens: list[int] = field(init=False)
    sent: list[int] = field(init=False)
    finished: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = [0] * self.count
        self.sent = [0] * self.count
        self.finished = [False] * self.count

    def advance(self, lengths: list[int]) -> tuple[list[int], list[int]]:
        """Take one yield's token counts; returns (texts that ended now, texts still running)."""
        if len(lengths) != self.count:
            raise StreamingError(f"ChatTTS yielded {len(lengths)} texts for {self.count}")
        ended: list[int] = []
        running: list[int] = []
        for index, length in enumerate(lengths):
            if self.finished[index]:
                if length != self.tokens[index]:
                    raise StreamingError(
                        f"text {index} grew from {self.tokens[index]} to {length} tokens after it ended"
                    )
                continue
            grown = length - self.tokens[index]
            if grown < 0:
                raise StreamingError(f"text {index} shrank from {self.tokens[index]} to {length} tokens")
            self.tokens[index] = length
            (running if grown >= self.stream_tokens else ended).append(index)
        return ended, running

    def unfinished(self) -> list[int]:
        return [index for index in range(self.count) if not self.finished[index]]

    def wanted(self, index: int) -> bool:
        """Whether decoding a running text now would give it new stable samples."""
        return self.geometry.stable(self.tokens[index]) > self.sent[index]

    def take(self, index: int, wav: np.ndarray, final: bool) -> Piece:
        """The new samples of ``index`` from ``wav`` (a decode of its first ``tokens`` tokens)."""
        tokens = self.tokens[index]
        end = self.geometry.samples(tokens) if final else self.geometry.stable(tokens)
        if wav.size < end:
            raise StreamingError(f"text {index}: a decode of {tokens} tokens gave {wav.size} samples, expected {end}")
        audio = np.asarray(wav[self.sent[index] : end], dtype=np.float32)
        self.sent[index] = end
        self.finished[index] = self.finished[index] or final
        return Piece(index, audio, final, tokens)
