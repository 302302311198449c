"""Fill a pod's model cache from the model source: the init container's entry point.

Sources: ``https://`` / ``http://`` base URL, a local path (or mounted volume), or the Hugging
Face Hub as ``hf://<repo>`` with a pinned revision. Every file is checked against its sha256
before it is used: the sums come from the source's ``ttsfleet-weights.json`` for our generated
weights, else from ChatTTS's own pinned ``sha256_map`` (official weights). Files download to a
``.part`` name (resumed with an HTTP Range request after an interruption), are verified, then
renamed into place; a lock file keeps two fetchers off one cache; a marker records the revision
so a warm cache is skipped.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import http.client
import json
import logging
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from ttsfleet import contract, logs
from ttsfleet.worker.manifest import ASSET_FILES, MANIFEST_FILE, WeightsManifest, sha256_file, sha256_key

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


class HttpSource(Source):
    def __init__(self, base_url: str, revision: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.revision = revision
        self.timeout = timeout

    def describe(self) -> str:
        return self.base_url

    def read_optional(self, relative: str) -> bytes | None:
        try:
            with urllib.request.urlopen(f"{self.base_url}/{relative}", timeout=self.timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def download(self, relative: str, part: Path) -> int:
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(f"{self.base_url}/{relative}")
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            if error.code == 416 and offset:  # the part is already complete
                return 0
            raise FetchError(f"GET {self.base_url}/{relative}: HTTP {error.code}") from error
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
    """Hugging Face Hub at a pinned revision (a commit hash, never a moving branch)."""

    def __init__(self, repo_id: str, revision: str) -> None:
        if len(revision) != 40 or any(c not in "0123456789abcdef" for c in revision):
            raise FetchError(f"hf://{repo_id}: pin a 40-hex commit revision, not {revision!r}")
        self.repo_id = repo_id
        self.revision = revision

    def describe(self) -> str:
        return f"hf://{self.repo_id}@{self.revision}"

    def _fetch(self, relative: str) -> Path:
        from huggingface_hub import hf_hub_download

        # The hub client resumes and verifies its own transfers; we still check our sums after.
        return Path(hf_hub_download(self.repo_id, relative, revision=self.revision))

    def read_optional(self, relative: str) -> bytes | None:
        from huggingface_hub.errors import EntryNotFoundError

        try:
            return self._fetch(relative).read_bytes()
        except EntryNotFoundError:
            return None

    def download(self, relative: str, part: Path) -> int:
        shutil.copyfile(self._fetch(relative), part)
        return part.stat().st_size


def make_source(uri: str, revision: str) -> Source:
    if uri.startswith(("https://", "http://")):
        return HttpSource(uri, revision)
    if uri.startswith("hf://"):
        repo, _, pinned = uri.removeprefix("hf://").partition("@")
        return HubSource(repo, pinned or revision)
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


def _cached_revision(cache: Path) -> str | None:
    marker = cache / MARKER_FILE
    if not marker.is_file():
        return None
    recorded = json.loads(marker.read_text())
    if not all((cache / relative).is_file() for relative in recorded.get("files", [])):
        return None
    return str(recorded.get("revision"))


def fetch(source: Source, cache: Path, manifest_sha256: str | None = None) -> FetchResult:
    """Make ``cache`` hold ``source.revision``; a no-op when it already does.

    ``manifest_sha256`` (the TTSDeployment's ``spec.model.sha256``) pins the source's weights
    manifest, and through its per-file sums every file: a source that serves other weights under
    the same revision is refused before a byte of it reaches the cache.
    """
    with cache_lock(cache):
        if _cached_revision(cache) == source.revision:
            log.info("cache already holds this revision", extra={"revision": source.revision})
            return FetchResult(source.describe(), source.revision, skipped=True, bytes_downloaded=0)
        manifest_bytes = source.read_optional(MANIFEST_FILE)
        if manifest_sha256 is not None:
            if manifest_bytes is None:
                raise FetchError(f"a sha256 was given but {source.describe()} has no {MANIFEST_FILE} to check")
            actual_manifest = hashlib.sha256(manifest_bytes).hexdigest()
            if actual_manifest != manifest_sha256:
                raise ChecksumMismatch(
                    f"{MANIFEST_FILE}: sha256 {actual_manifest} from {source.describe()}, expected {manifest_sha256}"
                )
        # Our generated weights carry their sums; official ones are checked against ChatTTS's pins.
        sums = dict(json.loads(manifest_bytes)["sha256_map"]) if manifest_bytes else pinned_sha256_map()
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
        if manifest_bytes is not None:
            manifest = WeightsManifest(**json.loads(manifest_bytes))
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
        marker_tmp.write_text(json.dumps({**asdict(result), "files": list(ASSET_FILES)}, indent=2))
        os.replace(marker_tmp, cache / MARKER_FILE)
        log.info("cache filled", extra={"revision": source.revision, "bytes": total})
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ttsfleet-fetch", description="Fill the model cache.")
    parser.add_argument("--source", required=True, help="https://..., hf://<repo>@<rev> or a path")
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
    args = parser.parse_args(argv)
    logs.configure_json()
    try:
        fetch(make_source(args.source, args.revision), args.cache, manifest_sha256=args.sha256)
    except (FetchError, OSError) as error:
        log.error("fetch failed", extra={"error": str(error)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
