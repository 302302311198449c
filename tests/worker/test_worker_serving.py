"""End to end against a real tritonserver (nvidia-pytriton's binary) on tiny generated weights."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest

from ttsfleet import contract

pytestmark = pytest.mark.worker

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from ttsfleet.worker.client import RequestRejected, ServerUnavailable, TtsClient  # noqa: E402


def _batch_sizes(http_url: str, model: str = contract.MODEL_NAME) -> dict[int, int]:
    with urllib.request.urlopen(f"{http_url}/v2/models/{model}/stats") as response:
        stats = json.load(response)["model_stats"][0]["batch_stats"]
    return {int(entry["batch_size"]): int(entry["compute_infer"]["count"]) for entry in stats}


def _metrics(metrics_url: str) -> str:
    with urllib.request.urlopen(metrics_url) as response:
        return str(response.read().decode())


def _multi_sentence_calls(metrics_url: str) -> float:
    """ChatTTS calls that carried more than one sentence, from tts_batch_size."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(_metrics(metrics_url))
        for sample in family.samples
        if sample.name.startswith(contract.METRIC_BATCH_SIZE)
    }
    total = samples.get((f"{contract.METRIC_BATCH_SIZE}_count", None), 0.0)
    return total - samples.get((f"{contract.METRIC_BATCH_SIZE}_bucket", "1.0"), 0.0)


def test_readiness_false_until_warmup_then_true(triton) -> None:
    # Sampled while the model was loading and warming up (see worker_support.start_server).
    at_live, *during, after = triton.readiness
    assert at_live[2] is False, "model ready before it was even loaded"
    assert during, "the model loaded before readiness could be sampled even once"
    assert during[0][1:] == (False, False), f"ready before warmup: {during[0]}"
    # Triton's server-wide flag means "every loaded model is ready": it may turn true for the
    # moment between the streaming model's load and the unary model's, but never before the
    # streaming model (which the pod's probes check) is ready. The model's flag flips once.
    assert all(sample[2] for sample in during if sample[1]), f"server ready before the model: {during}"
    flags = [sample[2] for sample in during]
    assert flags == sorted(flags), f"model readiness flapped: {flags}"
    assert after[1:] == (True, True)


def test_stream_sentence_gives_ordered_chunks_ending_with_final(triton) -> None:
    text = "The first sentence is short. 这是第二句。And a third one!"
    with TtsClient(triton.grpc_url) as client:
        client.check_ready()
        chunks = list(client.stream(text))
    # Three sentences, each in one chunk or more (the worker streams within sentences).
    assert len(chunks) >= 3 and [chunk.index for chunk in chunks] == list(range(len(chunks)))
    assert [chunk.final for chunk in chunks] == [False] * (len(chunks) - 1) + [True]
    for chunk in chunks:
        assert np.sqrt(np.mean(chunk.samples() ** 2)) > 1e-4
    assert sum(chunk.samples().size for chunk in chunks) > 3 * 0.2 * contract.SAMPLE_RATE_HZ
    assert chunks[0].received_after <= chunks[-1].received_after


def test_pcm16_by_default_and_float32_on_request(triton) -> None:
    with TtsClient(triton.grpc_url) as client:
        pcm = b"".join(chunk.audio for chunk in client.stream("Same words.", "bright"))
        floats = b"".join(chunk.audio for chunk in client.stream("Same words.", "bright", "float32"))
    # Random weights stop anywhere between min and max new tokens: compare encodings, not lengths.
    as_int16 = np.frombuffer(pcm, dtype="<i2")
    as_float = np.frombuffer(floats, dtype="<f4")
    assert as_int16.size > 0.4 * contract.SAMPLE_RATE_HZ and np.abs(as_int16).max() > 100
    assert as_float.size > 0.4 * contract.SAMPLE_RATE_HZ
    assert 1e-3 < np.abs(as_float).max() <= 1.5  # real float samples, not reinterpreted pcm bytes


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("", "text is empty"),
        ("   \n\t ", "text is empty"),
        ("?!... ，。", "nothing to speak"),  # noqa: RUF001 - Chinese punctuation on purpose
        (b"caf\xc3(", "not valid UTF-8"),
        ("word " * 200, "at most 500"),
    ],
)
def test_bad_input_gets_in_band_error_and_stream_still_works(triton, payload, message) -> None:
    with TtsClient(triton.grpc_url) as client:
        with pytest.raises(RequestRejected, match=message):
            list(client.stream(payload))
        chunks = list(client.stream("Still here."))  # same gRPC stream, next request
    assert chunks[-1].final


def test_unknown_voice_error_names_known_voices(triton) -> None:
    with TtsClient(triton.grpc_url) as client:
        with pytest.raises(RequestRejected, match=r"unknown voice 'nobody'.*bright, default"):
            list(client.stream("Hello.", "nobody"))
        assert list(client.stream("Hello.", "bright"))[-1].final


def test_concurrent_requests_are_batched(triton) -> None:
    before = _batch_sizes(triton.http_url)
    multi_before = _multi_sentence_calls(triton.metrics_url)
    results: dict[int, list[int]] = {}
    barrier = threading.Barrier(8)

    def one(i: int) -> None:
        with TtsClient(triton.grpc_url) as client:
            barrier.wait()
            results[i] = [chunk.index for chunk in client.stream(f"Concurrent request {i}.")]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(results) == list(range(8))
    assert all(indexes and indexes == list(range(len(indexes))) for indexes in results.values())
    after = _batch_sizes(triton.http_url)
    grown = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert any(size > 1 and count > 0 for size, count in grown.items()), f"no batch > 1: {grown}"
    # ...and ChatTTS synthesised several of them in one call (the worker's own histogram).
    assert _multi_sentence_calls(triton.metrics_url) > multi_before


def test_unary_requests_over_http_and_grpc(triton) -> None:
    import tritonclient.http as tritonclient_http

    name = contract.unary_model_name()
    for module, url in (
        (tritonclient_http, triton.http_url.removeprefix("http://")),
        (tritonclient_grpc, triton.grpc_url),
    ):
        client = module.InferenceServerClient(url)
        text = module.InferInput(contract.INPUT_TEXT, [1], "BYTES")
        text.set_data_from_numpy(np.array([b"One. Two."], dtype=np.object_))
        audio = client.infer(name, [text]).as_numpy(contract.OUTPUT_AUDIO)[0]
        assert len(audio) > 2 * 0.4 * contract.SAMPLE_RATE_HZ  # two sentences of pcm16
        text.set_data_from_numpy(np.array([b" "], dtype=np.object_))
        with pytest.raises(Exception, match="text is empty"):
            client.infer(name, [text])


def test_metrics_exported_on_triton_endpoint(triton) -> None:
    with TtsClient(triton.grpc_url) as client:
        list(client.stream("Count me.", "bright"))
    text = _metrics(triton.metrics_url)
    assert 'nv_inference_request_success{model="chattts"' in text  # Triton's own metrics
    assert f'{contract.METRIC_REQUEST_DURATION}_count{{model="chattts",voice="bright"}}' in text
    assert f"{contract.METRIC_TIME_TO_FIRST_AUDIO}_bucket" in text
    assert f'{contract.METRIC_QUEUE_LENGTH}{{model="chattts"}}' in text
    assert f'{contract.METRIC_ACTIVE_STREAMS}{{model="chattts"}}' in text
    assert f'{contract.METRIC_AUDIO_SECONDS}{{model="chattts",voice="bright"}}' in text
    assert f'{contract.METRIC_BATCH_SIZE}_count{{model="chattts"}}' in text
    assert contract.METRIC_GPU_MEMORY_USED not in text  # no GPU here: not exported, not an error


def _say(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ttsfleet.worker.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_say_writes_streamed_wav(triton, tmp_path: Path) -> None:
    source = tmp_path / "speech.txt"
    source.write_text("Reading from a file. Two sentences.", encoding="utf-8")
    output = tmp_path / "speech.wav"
    done = _say("--url", triton.grpc_url, "-f", str(source), "-o", str(output), "--voice", "bright")
    assert done.returncode == 0, done.stderr
    assert "chunk 1" in done.stderr
    with wave.open(str(output)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24_000, 1, 2)
        assert wav.getnframes() > 0.4 * 24_000


def test_say_reports_errors_clearly(triton, tmp_path: Path) -> None:
    rejected = _say("--url", triton.grpc_url, "-o", str(tmp_path / "x.wav"), "...")
    assert rejected.returncode == 4 and "nothing to speak" in rejected.stderr
    assert not (tmp_path / "x.wav").exists()
    unreachable = _say("--url", "127.0.0.1:9", "-o", str(tmp_path / "y.wav"), "hello")
    assert unreachable.returncode == 2 and "no ttsfleet worker answers" in unreachable.stderr
    with pytest.raises(ServerUnavailable):
        TtsClient("127.0.0.1:9").check_ready()


def test_say_over_a_fleet_skips_an_unreachable_replica(triton, tmp_path: Path) -> None:
    output = tmp_path / "fleet.wav"
    done = _say("--fleet", f"127.0.0.1:9,{triton.grpc_url}", "-o", str(output), "Balanced over the fleet.")
    assert done.returncode == 0, done.stderr
    with wave.open(str(output)) as wav:
        assert wav.getnframes() > 0.2 * 24_000
