"""A worker's admin APIs answer only its own launcher; clients keep inference, health, metadata
and statistics. Against a real tritonserver started as ``ttsfleet-worker`` starts it.

The module starts its own server (verbose Triton log, a log handler on the launcher): the last
test unloads the model, which a shared server must not see.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from worker_support import TEST_SERVING, RunningServer, start_server

from ttsfleet import contract, logs

pytestmark = pytest.mark.worker

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
import tritonclient.http as tritonclient_http  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from ttsfleet.worker.client import TtsClient  # noqa: E402

MODEL = TEST_SERVING.model_name
UNARY = contract.unary_model_name(MODEL)
PAYLOAD = "pwned"  # the model a caller tries to smuggle in


class _Records(logging.Handler):
    """Every record of the launcher, rendered with the pod's JSON formatter (extras included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logs.json_formatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def launcher_log() -> Iterator[_Records]:
    handler = _Records()
    logger = logging.getLogger("ttsfleet")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(scope="module")
def locked(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory, launcher_log: _Records) -> Iterator[Any]:
    workdir = tmp_path_factory.mktemp("locked")
    running: RunningServer | None = None
    try:
        running = start_server(tiny_weights, workdir, TEST_SERVING, log_verbose=1)
        yield running
    except Exception:
        log = workdir / "triton.log"
        if log.exists():
            print(f"--- tritonserver log ({log}) ---\n{log.read_text()[-20000:]}")
        raise
    finally:
        if running is not None:
            running.server.stop()  # type: ignore[attr-defined]


def _clients(running: Any) -> dict[str, Any]:
    # tritonclient's HTTP default gives up after 60 s: a synthesis on a busy CI machine may take longer.
    http_url = running.http_url.removeprefix("http://")
    return {
        "http": tritonclient_http.InferenceServerClient(http_url, connection_timeout=600, network_timeout=600),
        "grpc": tritonclient_grpc.InferenceServerClient(running.grpc_url),
    }


# Every admin call the two clients offer, by the API group Triton files it under.
ADMIN_CALLS: dict[str, Callable[[Any, dict[str, str] | None], Any]] = {
    "repository index": lambda c, h: c.get_model_repository_index(headers=h),
    "load": lambda c, h: c.load_model(MODEL, headers=h),
    "unload": lambda c, h: c.unload_model(MODEL, headers=h),
    "unload unary": lambda c, h: c.unload_model(UNARY, headers=h),
    "model config": lambda c, h: c.get_model_config(MODEL, headers=h),
    "trace settings": lambda c, h: c.get_trace_settings(headers=h),
    "model trace settings": lambda c, h: c.get_trace_settings(model_name=MODEL, headers=h),
    "update trace settings": lambda c, h: c.update_trace_settings(settings={"trace_rate": "1"}, headers=h),
    "log settings": lambda c, h: c.get_log_settings(headers=h),
    "update log settings": lambda c, h: c.update_log_settings({"log_verbose_level": 3}, headers=h),
    "system shm status": lambda c, h: c.get_system_shared_memory_status(headers=h),
    "register system shm": lambda c, h: c.register_system_shared_memory("r", "/ttsfleet-x", 64, headers=h),
    "unregister system shm": lambda c, h: c.unregister_system_shared_memory(headers=h),
    "cuda shm status": lambda c, h: c.get_cuda_shared_memory_status(headers=h),
    "register cuda shm": lambda c, h: c.register_cuda_shared_memory("r", base64.b64encode(b"handle"), 0, 64, headers=h),
    "unregister cuda shm": lambda c, h: c.unregister_cuda_shared_memory(headers=h),
}


def _refused(call: Callable[[], Any], protocol: str) -> None:
    with pytest.raises(InferenceServerException) as refusal:
        call()
    if protocol == "http":
        assert refusal.value.status() == "403", refusal.value
    else:
        assert refusal.value.status() == "StatusCode.UNAVAILABLE", refusal.value
    assert "restricted" in refusal.value.message()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("api", list(ADMIN_CALLS))
def test_admin_api_refused_without_the_launchers_key(locked, protocol: str, api: str) -> None:
    client = _clients(locked)[protocol]
    wrong = {"http": {"ttsfleet-admin-key": "guess"}, "grpc": {"triton-grpc-protocol-ttsfleet-admin-key": "guess"}}
    _refused(lambda: ADMIN_CALLS[api](client, None), protocol)
    _refused(lambda: ADMIN_CALLS[api](client, wrong[protocol]), protocol)
    # Nothing moved: both models still serve (asked through the launcher, which holds the key).
    assert locked.server.model_states() == {MODEL: "READY", UNARY: "READY"}
    assert locked.server.probe(contract.model_ready_path(MODEL)) is True


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Triton answers an unload before the model is gone: wait for the state to show it."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} {timeout:.0f}s after the unload"
        time.sleep(0.1)


def _smuggled_model(marker: Path) -> tuple[str, dict[str, bytes]]:
    """A load request's body: a config and a model.py that writes ``marker`` when Triton runs it."""
    config = {
        "name": PAYLOAD,
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "IN", "data_type": "TYPE_FP32", "dims": [1]}],
        "output": [{"name": "OUT", "data_type": "TYPE_FP32", "dims": [1]}],
    }
    source = (
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        "class TritonPythonModel:\n"
        "    def execute(self, requests):\n"
        "        return []\n"
    )
    return json.dumps(config), {"file:1/model.py": source.encode()}


def test_load_carrying_a_model_file_is_refused_and_never_runs(locked, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    config, files = _smuggled_model(marker)
    # The raw request as any client could send it...
    body = json.dumps(
        {"parameters": {"config": config, "file:1/model.py": base64.b64encode(files["file:1/model.py"]).decode()}}
    ).encode()
    request = urllib.request.Request(f"{locked.http_url}/v2/repository/models/{PAYLOAD}/load", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refusal:
        urllib.request.urlopen(request, timeout=60)
    assert refusal.value.code == 403
    # ...and through both clients.
    for protocol, client in _clients(locked).items():
        _refused(lambda c=client: c.load_model(PAYLOAD, config=config, files=files), protocol)
    # Triton answers a load only once it is done, so the refusals are the end of it.
    assert not marker.exists(), "the smuggled model.py ran"
    assert PAYLOAD not in locked.server.model_states()
    # The same request with the launcher's key does run it: the key is all that stops it.
    admin = _clients(locked)["http"]
    admin.load_model(PAYLOAD, config=config, files=files, headers=locked.server.admin_headers("http"))
    try:
        assert marker.read_text() == "ran"
    finally:
        admin.unload_model(PAYLOAD, headers=locked.server.admin_headers("http"))
        # It leaves the index at once; the server is ready again once it is really gone.
        _wait_until(lambda: locked.server.probe(contract.READY_PATH) is True, "ready again")
        assert PAYLOAD not in locked.server.model_states()


def test_clients_keep_inference_health_metadata_and_statistics(locked) -> None:
    for protocol, client in _clients(locked).items():
        as_json = {"as_json": True} if protocol == "grpc" else {}
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(MODEL) and client.is_model_ready(UNARY)
        assert client.get_server_metadata(**as_json)["name"] == "triton"
        assert client.get_model_metadata(UNARY, **as_json)["name"] == UNARY
        module = tritonclient_http if protocol == "http" else tritonclient_grpc
        tensor = module.InferInput(contract.INPUT_TEXT, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"Still open."], dtype=np.object_))
        audio = client.infer(UNARY, [tensor]).as_numpy(contract.OUTPUT_AUDIO)[0]
        assert len(audio) > 0.4 * contract.SAMPLE_RATE_HZ  # pcm16 samples of a sentence
        stats = client.get_inference_statistics(UNARY, **as_json)["model_stats"]
        assert [entry["name"] for entry in stats] == [UNARY]
        assert int(stats[0]["inference_stats"]["success"]["count"]) > 0
    with TtsClient(locked.grpc_url) as client:
        client.check_ready()
        assert list(client.stream("Streaming still works."))[-1].final
    with urllib.request.urlopen(locked.metrics_url) as response:  # metrics: their own port, open
        assert b"nv_inference_request_success" in response.read()


def test_invalid_unary_request_is_the_callers_error(locked) -> None:
    clients = _clients(locked)
    for protocol, module in (("http", tritonclient_http), ("grpc", tritonclient_grpc)):
        tensor = module.InferInput(contract.INPUT_TEXT, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"   "], dtype=np.object_))
        with pytest.raises(InferenceServerException, match="text is empty") as refusal:
            clients[protocol].infer(UNARY, [tensor])
        expected = "400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT"
        assert refusal.value.status() == expected, refusal.value


def test_key_never_reaches_a_log(locked, launcher_log: _Records) -> None:
    key = locked.server.admin_headers("http")["ttsfleet-admin-key"]
    assert len(key) >= 32
    assert launcher_log.lines, "the launcher logged nothing: the check below would prove nothing"
    assert not [line for line in launcher_log.lines if key in line]
    triton_log = locked.log_path.read_text(errors="replace")
    assert "HTTP request" in triton_log  # verbose: requests are logged, their headers are not
    assert key not in triton_log


def _liveness_path() -> str:
    """The path the operator's StatefulSet gives the worker's livenessProbe for this model."""
    from ttsfleet.operator.desired import statefulset
    from ttsfleet.operator.naming import Owner
    from ttsfleet.operator.spec import parse_spec

    spec = parse_spec({"image": "worker:test", "model": {"source": "hf://org/model", "name": MODEL}})
    pod = statefulset.build(Owner("fleet", "ns", "uid"), spec, config_hash="x")["spec"]["template"]["spec"]
    return str(pod["containers"][0]["livenessProbe"]["httpGet"]["path"])


def test_model_leaving_ready_after_startup_turns_liveness_red(locked) -> None:
    # Last in this module: it takes the model away (with the key, as only the launcher can).
    path = _liveness_path()
    assert locked.server.probe(path) is True
    locked.server.unload_model(MODEL)
    _wait_until(lambda: locked.server.model_states()[MODEL] == "UNAVAILABLE", "unloaded")
    assert locked.server.probe(path) is False
    # The server itself still says live: the old liveness probe would never have restarted it.
    assert locked.server.probe(contract.LIVE_PATH) is True
