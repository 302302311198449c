"""Fill a pod's model cache from the model source: the init container's entry point.

Sources: an ``https://`` base URL (``http://`` only when the spec allows it), a local path (or
mounted volume), or the Hugging Face Hub as ``hf://<repo>`` at a full commit hash; the rules are
:mod:`ttsfleet.modelsource`, the same the API server enforces at admission. Redirects never go
from https to http, and the token (from the Secret, through the environment) is sent as an
``Authorization`` header to the source's own origin only; it never reaches a log line, an
argument or the cache.

Every file is checked against its sha256 before it is used: the sums come from the source's
``ttsfleet-weights.json`` (which may carry checksums and weight settings, nothing else), else from
ChatTTS's own pinned ``sha256_map`` (official weights). Files download to a ``.part`` name
(resumed with an HTTP Range request after an interruption), are verified, then renamed into
place; a lock file keeps two fetchers off one cache; a marker records the source, revision and
manifest pin, so a warm cache is skipped only when all three match.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from ttsfleet import contract, logs, modelsource
from ttsfleet.worker import supervisor
from ttsfleet.worker.manifest import (
    ASSET_FILES,
    MANIFEST_FILE,
    ManifestError,
    WeightsManifest,
    sha256_file,
    sha256_key,
)

log = logging.getLogger("ttsfleet.worker.fetch")

MARKER_FILE = ".ttsfleet-fetched.json"
LOCK_FILE = ".ttsfleet-fetch.lock"
PARTIAL_DIR = ".partial"
CHUNK_BYTES = 1 << 20


class FetchError(RuntimeError):
    pass


class ChecksumMismatch(FetchError):
    pass


@dataclass(frozen=True)
class FetchResult:
    source: str
    revision: str
    skipped: bool
    bytes_downloaded: int


def pinned_sha256_map() -> dict[str, str]:
    """ChatTTS's pinned sums for the official weights, read from the installed package."""
    from importlib.util import find_spec

    # find_spec locates the package without importing it (importing ChatTTS pulls in torch).
    spec = find_spec("ChatTTS")
    if spec is None or not spec.submodule_search_locations:
        raise FetchError("ChatTTS is not installed; its pinned sha256_map is needed for official weights")
    path = Path(next(iter(spec.submodule_search_locations))) / "res" / "sha256_map.json"
    return {key: str(value) for key, value in json.loads(path.read_text()).items()}


class Progress:
    """Logs bytes, rate and ETA at most every ``every`` seconds."""

    def __init__(self, name: str, total: int | None, start_at: int, every: float = 5.0) -> None:
        self.name, self.total, self.done = name, total, start_at
        self._started = time.monotonic()
        self._resumed_from = start_at
        self._last = 0.0
        self._every = every

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self.report()

    def report(self) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = (self.done - self._resumed_from) / elapsed
        eta = (self.total - self.done) / rate if self.total and rate > 0 else None
        log.info(
            "downloading",
            extra={
                "file": self.name,
                "bytes": self.done,
                "total_bytes": self.total,
                "rate_mb_s": round(rate / 1e6, 2),
                "eta_s": None if eta is None else round(eta, 1),
            },
        )


def _copy_stream(source: BinaryIO, target: BinaryIO, progress: Progress) -> None:
    while chunk := source.read(CHUNK_BYTES):
        target.write(chunk)
        progress.advance(len(chunk))


class Source:
    """Where the files come from; ``open`` returns a file-like positioned at ``offset``."""

    revision: str

    def describe(self) -> str:
        raise NotImplementedError

    def download(self, relative: str, part: Path) -> int:
        raise NotImplementedError

    def read_optional(self, relative: str) -> bytes | None:
        raise NotImplementedError


def redact(url: str) -> str:
    """scheme://host[:port]/path of a URL: what may be logged (no userinfo, query or fragment)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, except from https to http (or to http at all unless allowed).

    The token travels as an unredirected header, so urllib drops it on every redirect; it is put
    back only when the redirect stays on the same origin (as requests does), so a CDN or another
    host the source sends us to never sees it.
    """

    def __init__(self, token: str | None, allow_insecure_http: bool) -> None:
        super().__init__()
        self.token = token
        self.allow_insecure_http = allow_insecure_http

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        refusal = None
        if new.scheme not in ("https", "http"):
            refusal = f"to a {new.scheme or 'relative'}: URL"
        elif old.scheme == "https" and new.scheme == "http":
            refusal = "from https to plain http (a downgrade exposes the token and the weights)"
        elif new.scheme == "http" and not self.allow_insecure_http:
            refusal = "to plain http, which the spec does not allow (allowInsecureHTTP)"
        if refusal is not None:
            fp.close()
            raise FetchError(
                f"{redact(req.full_url)} redirected ({code}) to {redact(newurl)}: refusing a redirect {refusal}"
            )
        request = super().redirect_request(req, fp, code, msg, headers, newurl)
        if request is not None and self.token and _origin(req.full_url) == _origin(newurl):
            request.add_unredirected_header("Authorization", f"Bearer {self.token}")
        return request


def _http_failure(url: str, error: urllib.error.HTTPError) -> FetchError:
    hint = ""
    if error.code in (401, 403):
        hint = " (check the token in the Secret named by spec.model.secretRef, key spec.model.secretKey)"
    return FetchError(f"GET {redact(url)}: HTTP {error.code}{hint}")


class HttpSource(Source):
    def __init__(
        self,
        base_url: str,
        revision: str,
        timeout: float = 60.0,
        *,
        token: str | None = None,
        allow_insecure_http: bool = False,
        context: ssl.SSLContext | None = None,
    ) -> None:
        if base_url.startswith("http://") and not allow_insecure_http:
            raise FetchError(f"{redact(base_url)}: plain http:// is refused unless allowed (--allow-insecure-http)")
        self.base_url = base_url.rstrip("/")
        self.revision = revision
        self.timeout = timeout
        self.token = token
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _SafeRedirects(token, allow_insecure_http)
        )

    def describe(self) -> str:
        return redact(self.base_url)

    def _request(self, relative: str) -> urllib.request.Request:
        request = urllib.request.Request(f"{self.base_url}/{relative}")
        if self.token:
            # Unredirected: _SafeRedirects decides whether a redirect target may see it.
            request.add_unredirected_header("Authorization", f"Bearer {self.token}")
        return request

    def read_optional(self, relative: str) -> bytes | None:
        request = self._request(relative)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise _http_failure(request.full_url, error) from None

    def download(self, relative: str, part: Path) -> int:
        offset = part.stat().st_size if part.exists() else 0
        request = self._request(relative)
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            if error.code == 416 and offset:  # the part is already complete
                return 0
            raise _http_failure(request.full_url, error) from None
        with response:
            resumed = offset and response.status == 206
            if offset and not resumed:
                log.info("server ignored the range request; restarting", extra={"file": relative})
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            if resumed:
                log.info("resuming download", extra={"file": relative, "from_bytes": offset})
            progress = Progress(relative, total, offset)
            with part.open("ab" if resumed else "wb") as handle:
                try:
                    _copy_stream(response, handle, progress)
                except (http.client.HTTPException, OSError) as error:
                    # The bytes so far stay in the .part file; the next attempt resumes there.
                    raise FetchError(
                        f"download of {relative} interrupted at {progress.done} bytes ({error!r})"
                    ) from error
            progress.report()
            if total is not None and progress.done < total:  # the peer closed early, no exception
                raise FetchError(f"download of {relative} interrupted at {progress.done} of {total} bytes")
            return progress.done - offset


class LocalSource(Source):
    def __init__(self, root: Path, revision: str) -> None:
        self.root = root
        self.revision = revision

    def describe(self) -> str:
        return str(self.root)

    def read_optional(self, relative: str) -> bytes | None:
        path = self.root / relative
        return path.read_bytes() if path.is_file() else None

    def download(self, relative: str, part: Path) -> int:
        source = self.root / relative
        if not source.is_file():
            raise FetchError(f"{source} does not exist")
        progress = Progress(relative, source.stat().st_size, 0)
        with source.open("rb") as reader, part.open("wb") as writer:
            _copy_stream(reader, writer, progress)
        return progress.done


class HubSource(Source):
    """Hugging Face Hub at a pinned revision (a full commit hash, never a moving branch)."""

    def __init__(self, repo_id: str, revision: str, *, token: str | None = None) -> None:
        if re.search(modelsource.HF_COMMIT, revision) is None:
            raise FetchError(f"hf://{repo_id}: pin a full 40-hex commit revision, not {revision!r}")
        self.repo_id = repo_id
        self.revision = revision
        self.token = token

    def describe(self) -> str:
        return f"hf://{self.repo_id}@{self.revision}"

    def _fetch(self, relative: str) -> Path:
        from huggingface_hub import hf_hub_download

        # The hub client resumes and verifies its own transfers; we still check our sums after.
        path = hf_hub_download(self.repo_id, relative, revision=self.revision, token=self.token)
        return Path(str(path))

    def read_optional(self, relative: str) -> bytes | None:
        from huggingface_hub.errors import EntryNotFoundError

        try:
            return self._fetch(relative).read_bytes()
        except EntryNotFoundError:
            return None

    def download(self, relative: str, part: Path) -> int:
        shutil.copyfile(self._fetch(relative), part)
        return part.stat().st_size


def make_source(
    uri: str,
    revision: str,
    *,
    token: str | None = None,
    allow_insecure_http: bool = False,
    context: ssl.SSLContext | None = None,
) -> Source:
    """The source ``uri`` names, after the same checks the API server applies to spec.model."""
    broken = modelsource.problem(uri, revision, allow_insecure_http)
    if broken is not None:
        field, message = broken
        shown = redact(uri) if re.search(modelsource.HTTP_SOURCE, uri) else uri
        raise FetchError(f"model {field} ({shown if field == 'source' else revision!r}): {message}")
    if uri.startswith(("https://", "http://")):
        return HttpSource(uri, revision, token=token, allow_insecure_http=allow_insecure_http, context=context)
    if uri.startswith(modelsource.HF_SCHEME):
        return HubSource(uri.removeprefix(modelsource.HF_SCHEME), revision, token=token)
    return LocalSource(Path(uri.removeprefix("file://")), revision)


@contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / LOCK_FILE).open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another fetcher holds the cache; waiting", extra={"cache": str(cache)})
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cache_key(source: Source, manifest_sha256: str | None) -> dict[str, str | None]:
    """What the cache must have been filled from to count as warm: a new source or a new pin
    under the same revision label may be other bytes, so each of the three refetches."""
    return {"source": source.describe(), "revision": source.revision, "sha256": manifest_sha256}


def _cached_key(cache: Path) -> dict[str, str | None] | None:
    marker = cache / MARKER_FILE
    if not marker.is_file():
        return None
    recorded = json.loads(marker.read_text())
    if not all((cache / relative).is_file() for relative in recorded.get("files", [])):
        return None
    return {key: recorded.get(key) for key in ("source", "revision", "sha256")}


def fetch(source: Source, cache: Path, manifest_sha256: str | None = None) -> FetchResult:
    """Make ``cache`` hold ``source.revision``; a no-op when it already does.

    ``manifest_sha256`` (the TTSDeployment's ``spec.model.sha256``) pins the source's weights
    manifest, and through its per-file sums every file: a source that serves other weights under
    the same revision is refused before a byte of it reaches the cache.
    """
    wanted = _cache_key(source, manifest_sha256)
    with cache_lock(cache):
        cached = _cached_key(cache)
        if cached == wanted:
            log.info("cache already holds this revision", extra={"revision": source.revision})
            return FetchResult(source.describe(), source.revision, skipped=True, bytes_downloaded=0)
        if cached is not None:
            changed = sorted(key for key in wanted if wanted[key] != cached[key])
            log.info("cache was filled from another source or pin; refetching", extra={"changed": changed})
        manifest_bytes = source.read_optional(MANIFEST_FILE)
        if manifest_sha256 is not None:
            if manifest_bytes is None:
                raise FetchError(f"a sha256 was given but {source.describe()} has no {MANIFEST_FILE} to check")
            actual_manifest = hashlib.sha256(manifest_bytes).hexdigest()
            if actual_manifest != manifest_sha256:
                raise ChecksumMismatch(
                    f"{MANIFEST_FILE}: sha256 {actual_manifest} from {source.describe()}, expected {manifest_sha256}"
                )
        try:
            manifest = WeightsManifest.parse(manifest_bytes) if manifest_bytes is not None else None
        except ManifestError as error:
            raise FetchError(f"{source.describe()}: {error}") from None
        # Our generated weights carry their sums; official ones are checked against ChatTTS's pins.
        sums = dict(manifest.sha256_map) if manifest is not None else pinned_sha256_map()
        (cache / MARKER_FILE).unlink(missing_ok=True)  # the cache is in flux until the end
        partial = cache / PARTIAL_DIR
        total = 0
        for relative in ASSET_FILES:
            expected = sums.get(sha256_key(relative))
            if expected is None:
                raise FetchError(f"no sha256 for {relative} (key {sha256_key(relative)})")
            final = cache / relative
            if final.is_file() and sha256_file(final) == expected:
                continue
            part = partial / f"{relative}.part"
            part.parent.mkdir(parents=True, exist_ok=True)
            total += source.download(relative, part)
            actual = sha256_file(part)
            if actual != expected:
                part.unlink()  # never resume from or use bytes that do not match
                raise ChecksumMismatch(f"{relative}: sha256 {actual} from {source.describe()}, expected {expected}")
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, final)
        if manifest is not None and manifest_bytes is not None:
            tmp = cache / f".{MANIFEST_FILE}.tmp"
            tmp.write_bytes(manifest_bytes)
            os.replace(tmp, cache / MANIFEST_FILE)
            if manifest.revision != source.revision:
                log.warning("manifest revision differs", extra={"manifest": manifest.revision})
        else:
            (cache / MANIFEST_FILE).unlink(missing_ok=True)  # official weights: pinned sums apply
        shutil.rmtree(partial, ignore_errors=True)
        result = FetchResult(source.describe(), source.revision, skipped=False, bytes_downloaded=total)
        marker_tmp = cache / f"{MARKER_FILE}.tmp"
        marker_tmp.write_text(json.dumps({**asdict(result), **wanted, "files": list(ASSET_FILES)}, indent=2))
        os.replace(marker_tmp, cache / MARKER_FILE)
        log.info("cache filled", extra={"revision": source.revision, "bytes": total})
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ttsfleet-fetch", description="Fill the model cache.")
    parser.add_argument("--source", required=True, help="https://..., hf://<namespace>/<name> or a path")
    parser.add_argument("--revision", required=True, help="the revision the cache must hold")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get(contract.ENV_MODEL_CACHE, contract.MODEL_CACHE_MOUNT)),
    )
    parser.add_argument(
        "--sha256",
        default=os.environ.get(contract.ENV_MODEL_SHA256) or None,
        help=f"expected sha256 of the source's {MANIFEST_FILE} (default: ${contract.ENV_MODEL_SHA256})",
    )
    parser.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="accept a plain http:// source (spec.model.allowInsecureHTTP); https never redirects to http",
    )
    args = parser.parse_args(argv)
    logs.configure_json()
    # Only ever from the environment (a secretKeyRef): an argument would show in the pod spec and ps.
    token = os.environ.get(modelsource.ENV_MODEL_TOKEN) or None
    try:
        source = make_source(args.source, args.revision, token=token, allow_insecure_http=args.allow_insecure_http)
        fetch(source, args.cache, manifest_sha256=args.sha256)
    except (FetchError, OSError) as error:
        log.error("fetch failed", extra={"error": str(error)})
        # The kubelet reports it in the init container's status, where the operator reads it
        # for the fleet's Ready condition (a log line alone shows only in `kubectl logs`).
        supervisor.write_termination_message(supervisor.termination_log_path(), f"fetch failed: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
