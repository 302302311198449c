"""The init-container fetcher against a loopback HTTP server and local paths."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ttsfleet.worker.fetch import (
    MARKER_FILE,
    ChecksumMismatch,
    FetchError,
    HttpSource,
    LocalSource,
    fetch,
    make_source,
)
from ttsfleet.worker.manifest import ASSET_FILES, MANIFEST_FILE, WeightsManifest

pytestmark = pytest.mark.worker


class WeightsHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with Range support; can cut the first response of a file short."""

    root: Path
    cut_after: dict[str, int]  # path -> bytes to send before dropping the connection (once)
    requests: list[tuple[str, str | None]]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, directory=str(self.root), **kwargs)

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        relative = self.path.lstrip("/")
        range_header = self.headers.get("Range")
        self.requests.append((relative, range_header))
        path = self.root / relative
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(range_header.removeprefix("bytes=").rstrip("-")) if range_header else 0
        body = data[start:]
        self.send_response(206 if range_header else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.cut_after.pop(relative, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def http_weights(tiny_weights: Path) -> Iterator[tuple[str, type[WeightsHandler]]]:
    handler = type("Handler", (WeightsHandler,), {"root": tiny_weights, "cut_after": {}, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


def _revision(weights: Path) -> str:
    manifest = WeightsManifest.read(weights)
    assert manifest is not None
    return manifest.revision


def _same_files(a: Path, b: Path) -> bool:
    return all((a / rel).read_bytes() == (b / rel).read_bytes() for rel in [*ASSET_FILES, MANIFEST_FILE])


def test_https_fetch_resumes_after_interruption(http_weights, tiny_weights: Path, tmp_path: Path) -> None:
    url, handler = http_weights
    big = "asset/DVAE.safetensors"
    handler.cut_after[big] = 1_000_000
    source = HttpSource(url, _revision(tiny_weights), timeout=10)
    with pytest.raises(FetchError, match="interrupted at 1000000 of"):
        fetch(source, tmp_path)
    assert not (tmp_path / big).exists()  # a partial file is never put in place

    handler.requests.clear()
    result = fetch(source, tmp_path)
    assert (big, "bytes=1000000-") in handler.requests
    assert not result.skipped and _same_files(tiny_weights, tmp_path)
    assert not (tmp_path / ".partial").exists()


def test_checksum_mismatch_is_never_used(tiny_weights: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "source"
    shutil.copytree(tiny_weights, tampered)
    vocos = tampered / "asset" / "Vocos.safetensors"
    vocos.write_bytes(vocos.read_bytes()[:-4] + b"evil")
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumMismatch, match="Vocos"):
        fetch(LocalSource(tampered, _revision(tiny_weights)), cache)
    assert not (cache / "asset" / "Vocos.safetensors").exists()
    assert not (cache / MARKER_FILE).exists()


def test_pinned_manifest_sha256_accepts_the_right_weights_and_refuses_others(
    tiny_weights: Path, tmp_path: Path
) -> None:
    pinned = hashlib.sha256((tiny_weights / MANIFEST_FILE).read_bytes()).hexdigest()
    good = fetch(LocalSource(tiny_weights, _revision(tiny_weights)), tmp_path / "good", manifest_sha256=pinned)
    assert not good.skipped and good.bytes_downloaded > 0

    other = tmp_path / "other-weights"
    shutil.copytree(tiny_weights, other)
    manifest = json.loads((other / MANIFEST_FILE).read_text())
    manifest["revision"] = "someone-elses"
    (other / MANIFEST_FILE).write_text(json.dumps(manifest))
    cache = tmp_path / "refused"
    with pytest.raises(ChecksumMismatch, match=MANIFEST_FILE):
        fetch(LocalSource(other, _revision(tiny_weights)), cache, manifest_sha256=pinned)
    assert not (cache / "asset").exists(), "nothing from refused weights may reach the cache"
    assert not (cache / MARKER_FILE).exists()


def test_skip_when_cache_holds_revision(tiny_weights: Path, tmp_path: Path, http_weights) -> None:
    url, handler = http_weights
    revision = _revision(tiny_weights)
    first = fetch(make_source(str(tiny_weights), revision), tmp_path)
    assert not first.skipped and first.bytes_downloaded > 0
    second = fetch(make_source(url, revision), tmp_path)
    assert second.skipped and handler.requests == []  # nothing was even asked of the server
    third = fetch(make_source(url, "another-revision"), tmp_path)
    assert not third.skipped and third.bytes_downloaded == 0  # files verified, none re-downloaded
    assert json.loads((tmp_path / MARKER_FILE).read_text())["revision"] == "another-revision"


def test_concurrent_fetchers_share_one_cache(http_weights, tiny_weights: Path, tmp_path: Path) -> None:
    url, _ = http_weights
    revision = _revision(tiny_weights)
    outcomes: list[object] = []

    def run() -> None:
        try:
            outcomes.append(fetch(HttpSource(url, revision), tmp_path))
        except Exception as error:  # recorded, asserted below
            outcomes.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(not isinstance(outcome, Exception) for outcome in outcomes), outcomes
    assert sorted(getattr(outcome, "skipped", None) for outcome in outcomes) == [False, True, True]
    assert _same_files(tiny_weights, tmp_path)


def test_hub_source_requires_pinned_revision() -> None:
    with pytest.raises(FetchError, match="40-hex"):
        make_source("hf://2Noise/ChatTTS@main", "main")
    pinned = make_source("hf://2Noise/ChatTTS@" + "a" * 40, "ignored")
    assert pinned.revision == "a" * 40


def test_fetch_cli_reports_failure(tmp_path: Path) -> None:
    from ttsfleet.worker.fetch import main

    assert main(["--source", str(tmp_path / "missing"), "--revision", "r1", "--cache", str(tmp_path / "c")]) == 1
