"""The init-container fetcher against real loopback HTTPS/HTTP servers and local paths.

The HTTPS server uses a certificate from a throwaway CA made here; the fetcher trusts it through
an SSL context (in process) or SSL_CERT_FILE (the ``ttsfleet-fetch`` console script), exactly
as it would trust a cluster's own CA.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ttsfleet import modelsource
from ttsfleet.worker.fetch import (
    MARKER_FILE,
    ChecksumMismatch,
    FetchError,
    HttpSource,
    LocalSource,
    fetch,
    make_source,
)
from ttsfleet.worker.manifest import ASSET_FILES, MANIFEST_FILE, WeightsManifest, sha256_key

pytestmark = pytest.mark.worker

TOKEN = "hf_Sup3rS3cretT0ken_for_tests_only"


@dataclass
class Seen:
    host: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class Behaviour:
    """What the test server does; tests change it between fetches."""

    root: Path
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before dropping (once)
    redirects: dict[str, str] = field(default_factory=dict)  # path -> absolute Location
    token: str | None = None  # when set, paths outside /cdn/ need "Authorization: Bearer <token>"
    seen: list[Seen] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]


class WeightsHandler(http.server.BaseHTTPRequestHandler):
    """Static files with Range support, redirects, a bearer-token check and a request log.

    ``/cdn/<path>`` serves the same files without a token, like the signed CDN URLs a model hub
    redirects to.
    """

    behaviour: Behaviour

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        b = self.behaviour
        relative = self.path.lstrip("/")
        range_header = self.headers.get("Range")
        b.seen.append(Seen(self.headers.get("Host", ""), relative, range_header, self.headers.get("Authorization")))
        if relative in b.redirects:
            self.send_response(302)
            self.send_header("Location", b.redirects[relative])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        cdn = relative.startswith("cdn/")
        relative = relative.removeprefix("cdn/")
        if b.token is not None and not cdn and self.headers.get("Authorization") != f"Bearer {b.token}":
            self.send_error(401)
            return
        path = b.root / relative
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(range_header.removeprefix("bytes=").rstrip("-")) if range_header else 0
        body = data[start:]
        self.send_response(206 if range_header else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = b.cut_after.pop(relative, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@dataclass
class Tls:
    ca_file: Path
    server: ssl.SSLContext

    def client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A CA and a server certificate for 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ttsfleet test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "server.pem", folder / "server.key")
    return Tls(folder / "ca.pem", server)


Serve = Callable[..., tuple[str, Behaviour]]


@pytest.fixture
def serve(tls: Tls) -> Iterator[Serve]:
    """``serve(root, tls=True)`` -> (base URL, behaviour) of a server on a loopback port."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(root: Path, *, use_tls: bool = True) -> tuple[str, Behaviour]:
        behaviour = Behaviour(root)
        handler = type("Handler", (WeightsHandler,), {"behaviour": behaviour})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if use_tls:
            server.socket = tls.server.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"{'https' if use_tls else 'http'}://127.0.0.1:{server.server_address[1]}", behaviour

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _revision(weights: Path) -> str:
    manifest = WeightsManifest.read(weights)
    assert manifest is not None
    return manifest.revision


def _same_files(a: Path, b: Path) -> bool:
    return all((a / rel).read_bytes() == (b / rel).read_bytes() for rel in [*ASSET_FILES, MANIFEST_FILE])


def _manifest_sha(weights: Path) -> str:
    return hashlib.sha256((weights / MANIFEST_FILE).read_bytes()).hexdigest()


def _retrain(weights: Path, relative: str = "asset/Vocos.safetensors") -> None:
    """Other bytes for one file, under the same revision, with the manifest's sum updated."""
    target = weights / relative
    target.write_bytes(target.read_bytes() + b"\0retrained")
    manifest = json.loads((weights / MANIFEST_FILE).read_text())
    manifest["sha256_map"][sha256_key(relative)] = hashlib.sha256(target.read_bytes()).hexdigest()
    (weights / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def test_https_fetch_resumes_after_interruption(serve: Serve, tls: Tls, tiny_weights: Path, tmp_path: Path) -> None:
    url, server = serve(tiny_weights)
    big = "asset/DVAE.safetensors"
    server.cut_after[big] = 1_000_000
    source = HttpSource(url, _revision(tiny_weights), timeout=10, context=tls.client())
    with pytest.raises(FetchError, match="interrupted at 1000000 of"):
        fetch(source, tmp_path)
    assert not (tmp_path / big).exists()  # a partial file is never put in place

    server.seen.clear()
    result = fetch(source, tmp_path)
    assert any(s.path == big and s.range == "bytes=1000000-" for s in server.seen)
    assert not result.skipped and _same_files(tiny_weights, tmp_path)
    assert not (tmp_path / ".partial").exists()


def test_plain_http_is_refused_unless_the_spec_allows_it(serve: Serve, tiny_weights: Path, tmp_path: Path) -> None:
    url, server = serve(tiny_weights, use_tls=False)
    revision = _revision(tiny_weights)
    with pytest.raises(FetchError, match="allowInsecureHTTP"):
        make_source(url, revision)
    with pytest.raises(FetchError, match="plain http"):
        HttpSource(url, revision)
    assert server.seen == [], "nothing may be asked of a refused source"

    result = fetch(make_source(url, revision, allow_insecure_http=True), tmp_path)
    assert not result.skipped and _same_files(tiny_weights, tmp_path)


def test_redirect_from_https_to_http_is_refused(serve: Serve, tls: Tls, tiny_weights: Path, tmp_path: Path) -> None:
    plain_url, plain = serve(tiny_weights, use_tls=False)
    url, server = serve(tiny_weights)
    server.redirects[MANIFEST_FILE] = f"{plain_url}/{MANIFEST_FILE}"
    # Refused even where plain http itself is allowed: a downgrade mid-way is never what was meant.
    source = make_source(url, _revision(tiny_weights), allow_insecure_http=True, context=tls.client())
    with pytest.raises(FetchError, match="from https to plain http"):
        fetch(source, tmp_path)
    assert plain.seen == [], "the http server was contacted"
    assert not (tmp_path / "asset").exists() and not (tmp_path / MARKER_FILE).exists()


def test_token_goes_to_the_source_only_and_survives_same_origin_redirects(
    serve: Serve, tls: Tls, tiny_weights: Path, tmp_path: Path
) -> None:
    url, server = serve(tiny_weights)
    server.token = TOKEN
    port = url.rsplit(":", 1)[1]
    # Another origin (a CDN with signed URLs) must not see the token; the same origin still does.
    server.redirects["asset/DVAE.safetensors"] = f"https://localhost:{port}/cdn/asset/DVAE.safetensors"
    server.redirects["asset/Embed.safetensors"] = f"{url}/moved/Embed.safetensors"
    server.redirects["moved/Embed.safetensors"] = f"{url}/asset/Embed.safetensors.real"
    shutil.copytree(tiny_weights, tmp_path / "root")
    root = tmp_path / "root"
    shutil.copy(root / "asset/Embed.safetensors", root / "asset/Embed.safetensors.real")
    server.root = root

    with pytest.raises(FetchError, match=r"HTTP 401.*secretRef"):
        fetch(make_source(url, _revision(tiny_weights), context=tls.client()), tmp_path / "anonymous")
    result = fetch(make_source(url, _revision(tiny_weights), token=TOKEN, context=tls.client()), tmp_path / "c")
    assert not result.skipped and _same_files(tiny_weights, tmp_path / "c")
    cdn = [s for s in server.seen if s.path.startswith("cdn/")]
    assert cdn and all(s.authorization is None and s.host.startswith("localhost") for s in cdn)
    own = [s for s in server.seen if not s.path.startswith("cdn/") and s.authorization is not None]
    assert {s.path for s in own} >= {MANIFEST_FILE, "moved/Embed.safetensors", "asset/Embed.safetensors.real"}
    assert all(s.authorization == f"Bearer {TOKEN}" for s in own)


def _run_fetch_cli(tls: Tls, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The console script the init container runs, with the token where the pod puts it."""
    script = Path(sys.executable).with_name("ttsfleet-fetch")
    env = {
        **os.environ,
        modelsource.ENV_MODEL_TOKEN: TOKEN,
        "SSL_CERT_FILE": str(tls.ca_file),
        "TTSFLEET_LOG_LEVEL": "DEBUG",  # the most the fetcher ever says
    }
    argv = [str(script), *args, "--cache", str(cache)]
    assert not any(TOKEN in arg for arg in argv)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_token_never_reaches_a_log_line_or_the_cache(
    serve: Serve, tls: Tls, tiny_weights: Path, tmp_path: Path
) -> None:
    url, server = serve(tiny_weights)
    server.token = TOKEN
    revision = _revision(tiny_weights)
    cache = tmp_path / "cache"
    done = _run_fetch_cli(tls, cache, "--source", url, "--revision", revision)
    assert done.returncode == 0, done.stderr
    assert any(s.authorization == f"Bearer {TOKEN}" for s in server.seen), "the token was not used"
    again = _run_fetch_cli(tls, cache, "--source", url, "--revision", revision)
    assert again.returncode == 0 and "cache already holds this revision" in again.stdout + again.stderr

    server.token = "another-token"  # the Secret is stale: the fetch fails, and says where to look
    failed = _run_fetch_cli(tls, tmp_path / "refused", "--source", url, "--revision", revision)
    assert failed.returncode == 1 and "HTTP 401" in failed.stdout + failed.stderr

    server.token, server.redirects[MANIFEST_FILE] = TOKEN, f"http://127.0.0.1:1/{MANIFEST_FILE}?sig=abc"
    downgraded = _run_fetch_cli(tls, tmp_path / "downgraded", "--source", url, "--revision", revision)
    assert downgraded.returncode == 1 and "from https to plain http" in downgraded.stdout + downgraded.stderr
    assert "sig=abc" not in downgraded.stdout + downgraded.stderr  # a signed URL's query is a credential too

    for run in (done, again, failed, downgraded):
        assert TOKEN not in run.stdout + run.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert cache / MARKER_FILE in files
    assert not [p for p in files if TOKEN.encode() in p.read_bytes()]


def test_cache_is_keyed_by_source_revision_and_sha256(
    serve: Serve, tls: Tls, tiny_weights: Path, tmp_path: Path
) -> None:
    url, server = serve(tiny_weights)
    revision = _revision(tiny_weights)
    cache = tmp_path / "cache"
    first = fetch(make_source(str(tiny_weights), revision), cache)
    assert not first.skipped and first.bytes_downloaded > 0
    assert fetch(make_source(str(tiny_weights), revision), cache).skipped

    # A new source under the same revision is other bytes until checked.
    second = fetch(make_source(url, revision, context=tls.client()), cache)
    assert not second.skipped and MANIFEST_FILE in server.paths()
    assert second.bytes_downloaded == 0  # every file verified, none that matched re-downloaded
    server.seen.clear()
    assert fetch(make_source(url, revision, context=tls.client()), cache).skipped
    assert server.seen == []  # a warm cache asks nothing of the server

    third = fetch(make_source(url, "another-revision", context=tls.client()), cache)
    assert not third.skipped
    marker = json.loads((cache / MARKER_FILE).read_text())
    assert (marker["source"], marker["revision"], marker["sha256"]) == (url, "another-revision", None)


def test_same_revision_with_a_new_sha256_refetches(serve: Serve, tls: Tls, tiny_weights: Path, tmp_path: Path) -> None:
    weights = tmp_path / "published"
    shutil.copytree(tiny_weights, weights)
    url, server = serve(weights)
    revision, cache = _revision(weights), tmp_path / "cache"
    pin_a = _manifest_sha(weights)
    source = make_source(url, revision, context=tls.client())
    assert not fetch(source, cache, manifest_sha256=pin_a).skipped

    _retrain(weights)  # the publisher replaces the weights but keeps the revision label
    pin_b = _manifest_sha(weights)
    # The old pin still names what the cache holds: nothing to do, and nothing of B gets in.
    assert fetch(source, cache, manifest_sha256=pin_a).skipped
    # A new pin, same revision: the cache does not count as warm; B is checked and fetched.
    server.seen.clear()
    refetched = fetch(source, cache, manifest_sha256=pin_b)
    assert not refetched.skipped
    assert [s.path for s in server.seen if s.path.startswith("asset/")] == ["asset/Vocos.safetensors"]
    assert _same_files(weights, cache)
    # A pin that matches nothing is refused, though the revision is in the cache.
    with pytest.raises(ChecksumMismatch, match=MANIFEST_FILE):
        fetch(source, cache, manifest_sha256="0" * 64)
    assert not (cache / MARKER_FILE).exists() or json.loads((cache / MARKER_FILE).read_text())["sha256"] == pin_b


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"chat_config": {"path": {"gpt_ckpt_path": "/etc"}}}, "chat_config.path"),
        (
            {"chat_config": {"vocos": {"backbone": {"class_path": "os.system"}}}},
            "chat_config.vocos.backbone.class_path",
        ),
        ({"chat_config": {"gpt": {"hidden_size": "64; rm -rf /"}}}, "chat_config.gpt.hidden_size"),
        ({"serving": {"max_batch_size": 64}}, "unknown keys ['serving']"),
        ({"sha256_map": {"sha256_etc_passwd": "0" * 64}}, "sha256_map.sha256_etc_passwd"),
    ],
    ids=["config-path", "class-path", "not-a-size", "engine-setting", "unknown-file"],
)
def test_manifest_carries_checksums_and_weight_settings_only(
    tiny_weights: Path, tmp_path: Path, change: dict[str, object], named: str
) -> None:
    weights = tmp_path / "published"
    shutil.copytree(tiny_weights, weights)
    manifest = json.loads((weights / MANIFEST_FILE).read_text())
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(manifest.get(key), dict):
            manifest[key] = {**manifest[key], **value}
        else:
            manifest[key] = value
    (weights / MANIFEST_FILE).write_text(json.dumps(manifest))
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match=re.escape(named)):
        fetch(LocalSource(weights, _revision(tiny_weights)), cache)
    assert not (cache / "asset").exists() and not (cache / MARKER_FILE).exists()


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
    pinned = _manifest_sha(tiny_weights)
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


def test_concurrent_fetchers_share_one_cache(serve: Serve, tls: Tls, tiny_weights: Path, tmp_path: Path) -> None:
    url, _ = serve(tiny_weights)
    revision = _revision(tiny_weights)
    outcomes: list[object] = []

    def run() -> None:
        try:
            outcomes.append(fetch(HttpSource(url, revision, context=tls.client()), tmp_path))
        except Exception as error:  # recorded, asserted below
            outcomes.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(not isinstance(outcome, Exception) for outcome in outcomes), outcomes
    assert sorted(bool(getattr(outcome, "skipped", None)) for outcome in outcomes) == [False, True, True]
    assert _same_files(tiny_weights, tmp_path)


def test_hub_source_requires_a_full_commit() -> None:
    for moving in ("main", "v1.0", "1a3c2f6"):
        with pytest.raises(FetchError, match="40-hex"):
            make_source("hf://2Noise/ChatTTS", moving)
    pinned = make_source("hf://2Noise/ChatTTS", "a" * 40)
    assert pinned.revision == "a" * 40 and pinned.describe() == f"hf://2Noise/ChatTTS@{'a' * 40}"


def test_fetch_cli_reports_failure(tmp_path: Path) -> None:
    from ttsfleet.worker.fetch import main

    assert main(["--source", str(tmp_path / "missing"), "--revision", "r1", "--cache", str(tmp_path / "c")]) == 1
