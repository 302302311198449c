"""The launcher's admin key: drawn per start, handed to Triton only on its command line, sent
only on the launcher's own requests, and never written to a log or an error message.

A stand-in ``tritonserver`` (TTSFLEET_TRITONSERVER) records what it was given and refuses the
load echoing every header it received, the worst a server could do with the key.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from ttsfleet import contract, logs
from ttsfleet.contract import ServingConfig
from ttsfleet.worker import server as launcher

pytestmark = pytest.mark.unit

FAKE_TRITONSERVER = """\
#!{python}
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

options = dict(arg[2:].split("=", 1) for arg in sys.argv[1:] if arg.startswith("--") and "=" in arg)
record = os.environ["FAKE_RECORD"]
with open(record + ".start", "w") as out:
    json.dump({{"argv": sys.argv[1:], "env": dict(os.environ)}}, out)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/v2/health/live" else 404)
        self.end_headers()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = dict(self.headers.items())
        with open(record + ".request", "w") as out:
            json.dump(headers, out)
        body = json.dumps({{"error": "refused; you sent " + json.dumps(headers)}}).encode()
        self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer((options["http-address"], int(options["http-port"])), Handler).serve_forever()
"""


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logs.json_formatter())  # the pod's rendering, extras included

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def fake_tritonserver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    binary = tmp_path / "tritonserver"
    binary.write_text(FAKE_TRITONSERVER.format(python=sys.executable))
    binary.chmod(0o755)
    monkeypatch.setenv(launcher.ENV_TRITONSERVER, str(binary))
    return tmp_path / "record"


@pytest.fixture
def lines() -> object:
    handler = _Lines()
    logger = logging.getLogger("ttsfleet")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def _server(tmp_path: Path, record: Path) -> launcher.TritonServer:
    options = launcher.ServerOptions(
        model_cache=tmp_path / "cache",
        workdir=tmp_path / "work",
        serving=ServingConfig(),
        env={"FAKE_RECORD": str(record)},
    )
    return launcher.TritonServer(options)


def _restrictions(argv: list[str]) -> dict[str, str]:
    prefixes = ("--http-restricted-api=", "--grpc-restricted-protocol=")
    return {arg.split("=", 1)[0]: arg.split("=", 1)[1] for arg in argv if arg.startswith(prefixes)}


def test_key_goes_to_triton_and_the_launchers_requests_but_never_to_a_log(
    tmp_path: Path, fake_tritonserver: Path, lines: _Lines
) -> None:
    server = _server(tmp_path, fake_tritonserver)
    server.start()
    try:
        server.wait_for(contract.LIVE_PATH, timeout=60)
        with pytest.raises(launcher.ServerError) as failure:
            server.load_model(timeout=30)
    finally:
        server.stop(timeout=10)
    started = json.loads(Path(f"{fake_tritonserver}.start").read_text())
    restrictions = _restrictions(started["argv"])
    assert set(restrictions) == {"--http-restricted-api", "--grpc-restricted-protocol"}
    keys = set()
    for value in restrictions.values():
        groups, _, header = value.partition(":")
        assert set(groups.split(",")) == set(launcher.ADMIN_APIS)
        name, _, key = header.partition("=")
        assert name == launcher.ADMIN_KEY_HEADER
        keys.add(key)
    (key,) = keys
    assert len(key) >= 32
    # Open to clients: what they use and what the kubelet probes.
    assert not {"inference", "health", "metadata", "statistics"} & set(launcher.ADMIN_APIS)
    # The launcher's own load request carried it (header names arrive capitalised by urllib)...
    sent = {name.lower(): value for name, value in json.loads(Path(f"{fake_tritonserver}.request").read_text()).items()}
    assert sent[launcher.ADMIN_KEY_HEADER] == key
    # ...and the refusal echoed it, yet neither the log nor the error shows it.
    assert lines.lines and any("model load failed" in line for line in lines.lines)
    assert not [line for line in lines.lines if key in line]
    assert key not in str(failure.value) and launcher.REDACTED in str(failure.value)
    # Only on the command line: not in the server's environment.
    assert not [name for name, value in started["env"].items() if key in value]


def test_every_start_draws_its_own_key(tmp_path: Path) -> None:
    first = _server(tmp_path / "a", tmp_path / "a.record").admin_headers()
    second = _server(tmp_path / "b", tmp_path / "b.record").admin_headers()
    assert first.keys() == second.keys() == {launcher.ADMIN_KEY_HEADER}
    assert first != second
