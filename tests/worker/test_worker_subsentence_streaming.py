"""Sub-sentence streaming on the real ChatTTS (tiny generated weights): in-process against
ChatTTS's own synthesis, and through a real tritonserver.

Sentences here are made long (over a hundred tokens, ``min_new_tokens``) so each spans many of
ChatTTS's streaming yields (every ``STREAM_TOKENS`` tokens).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from worker_support import TEST_SERVING, RunningServer, model_metrics, start_server

from ttsfleet import contract
from ttsfleet.contract import Voice

pytestmark = pytest.mark.worker

engine_module = pytest.importorskip("ttsfleet.worker.engine")
pytest.importorskip("tritonclient.grpc")
from ttsfleet.worker.client import TtsClient  # noqa: E402
from ttsfleet.worker.streaming import FRAMES_PER_TOKEN, Geometry  # noqa: E402

# One voice: warmup synthesizes each voice, and these sentences are long.
LONG = dataclasses.replace(
    TEST_SERVING,
    voices=(Voice(id="default", seed=42),),
    default_voice="default",
    min_new_tokens=144,
    max_new_tokens=168,
)
SENTENCE = "The quick brown fox jumps over the lazy dog."
QUIET = 1e-5  # ChatTTS's non-streamed infer drops samples this quiet (its padding trim)
SETTLE_TIMEOUT_S = 300  # a hang guard, not a speed budget


@pytest.fixture(scope="module")
def engine(tiny_weights: Path) -> Any:
    return engine_module.Engine.load(tiny_weights, LONG)


@pytest.fixture(scope="module")
def long_triton(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tiny_weights, tmp_path_factory.mktemp("streaming"), LONG)
    try:
        yield running
    finally:
        running.server.stop()  # type: ignore[attr-defined]


def _chattts_infer(engine: Any, text: str, seed: int) -> np.ndarray:
    import ChatTTS

    params = ChatTTS.Chat.InferCodeParams(
        spk_emb=engine.speakers["default"],
        min_new_token=engine.min_new_tokens,
        max_new_token=engine.max_new_tokens,
        show_tqdm=False,
        manual_seed=seed,
    )
    (wav,) = engine.chat.infer(
        [text],
        skip_refine_text=True,
        split_text=False,
        params_refine_text=ChatTTS.Chat.RefineTextParams(show_tqdm=False),
        params_infer_code=params,
    )
    return np.asarray(wav, dtype=np.float32)


@pytest.mark.parametrize("seed", [1, 2])
def test_joined_stream_is_chattts_own_synthesis_of_the_same_seed(engine: Any, seed: int) -> None:
    pieces = [piece for pieces in engine.stream([SENTENCE], "default", seed=seed) for piece in pieces]
    assert len(pieces) >= 3 and [piece.final for piece in pieces] == [False] * (len(pieces) - 1) + [True]
    # Partial pieces left while generation was still going: fewer tokens than the sentence has.
    assert pieces[0].tokens == engine.stream_tokens < pieces[-1].tokens
    joined = np.concatenate([piece.audio for piece in pieces])
    reference = _chattts_infer(engine, SENTENCE, seed)
    # Sample for sample what ChatTTS gives without streaming (after its own trim of quiet
    # samples): no sample repeated, lost or changed at any of the piece boundaries.
    audible = joined[np.abs(joined) > QUIET]
    assert audible.size == reference.size
    np.testing.assert_allclose(audible, reference, rtol=0, atol=1e-5)


def test_a_look_ahead_short_of_the_receptive_field_fails_the_warmup_check(engine: Any) -> None:
    assert engine.check_streaming() < 1e-5
    right = engine.geometry
    # No look-ahead at all. (Random-init ConvNeXt blocks scale their output by 1e-6, so on
    # generated weights only the plain convolutions' and the ISTFT's reach is measurable.)
    engine.geometry = Geometry(right_frames=0, hop=right.hop, n_fft=right.n_fft)
    try:
        with pytest.raises(engine_module.EngineError, match="look-ahead"):
            engine.check_streaming()
    finally:
        engine.geometry = right


def test_first_chunk_of_a_sentence_leaves_before_its_last_is_produced(long_triton: RunningServer, engine: Any) -> None:
    with TtsClient(long_triton.grpc_url) as client:
        chunks = list(client.stream(SENTENCE))
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    assert len(chunks) >= 3 and [chunk.final for chunk in chunks] == [False] * (len(chunks) - 1) + [True]
    sizes = [len(chunk.audio) // 2 for chunk in chunks]  # pcm16
    # The first chunk is the audio of the first yield's tokens (minus the look-ahead): it was
    # cut when ChatTTS had generated STREAM_TOKENS of the sentence's hundreds of tokens.
    assert sizes[0] == engine.geometry.stable(engine.stream_tokens)
    # Together the chunks are one whole decode: (frames - 1) x hop samples for a token count
    # within the bounds, nothing missing or doubled at the boundaries.
    frames = (sum(sizes) + engine.geometry.hop) / engine.geometry.hop
    assert frames == int(frames) and int(frames) % FRAMES_PER_TOKEN == 0
    assert LONG.min_new_tokens <= int(frames) // FRAMES_PER_TOKEN <= LONG.max_new_tokens  # type: ignore[operator]


def test_cancel_mid_sentence_ends_the_request_and_frees_the_worker(long_triton: RunningServer) -> None:
    before = model_metrics(long_triton.metrics_url)
    ok_before = before.get(f"{contract.METRIC_REQUEST_DURATION}_count", 0.0)
    with TtsClient(long_triton.grpc_url) as client:
        for chunk in client.stream(SENTENCE):
            assert not chunk.final  # the first chunk of a sentence many chunks long
            break  # leaving the loop cancels the request mid-sentence
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        now = model_metrics(long_triton.metrics_url)
        if now.get(contract.METRIC_QUEUE_LENGTH) == 0 and now.get(contract.METRIC_ACTIVE_STREAMS) == 0:
            break
        assert time.monotonic() < deadline, f"cancelled request still held: {now.get(contract.METRIC_QUEUE_LENGTH)}"
        time.sleep(0.2)
    # It ended as cancelled, never as a served request, and the worker serves the next one.
    assert now.get(f"{contract.METRIC_REQUEST_DURATION}_count", 0.0) == ok_before
    with TtsClient(long_triton.grpc_url) as client:
        assert list(client.stream("Next."))[-1].final
