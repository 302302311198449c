"""Write a docker-archive image tarball (what ``docker save`` makes and ``ctr images import``
reads) from layer tarballs, with the standard library only: no Docker engine, no registry.

Layers stay uncompressed: each one's digest is then also its ``diff_id``, and containerd
unpacks it without a decompression pass.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True)
class LayerFile:
    """A layer tarball on disk and its sha256 (computed once, when it was built)."""

    path: Path
    digest: str  # hex, no "sha256:" prefix


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: list[str]
    cmd: list[str] = field(default_factory=list)
    user: str = ""
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    exposed_ports: tuple[int, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def config_document(config: ImageConfig, layers: Iterable[LayerFile]) -> dict[str, Any]:
    container: dict[str, Any] = {"Entrypoint": config.entrypoint, "Env": config.env}
    if config.cmd:
        container["Cmd"] = config.cmd
    if config.user:
        container["User"] = config.user
    if config.working_dir:
        container["WorkingDir"] = config.working_dir
    if config.exposed_ports:
        container["ExposedPorts"] = {f"{port}/tcp": {} for port in config.exposed_ports}
    if config.labels:
        container["Labels"] = config.labels
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": container,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer.digest}" for layer in layers]},
        # A fixed date: the same inputs give the same image ID on every machine.
        "created": "1970-01-01T00:00:00Z",
    }


def write_archive(out: IO[bytes], ref: str, config: ImageConfig, layers: list[LayerFile]) -> str:
    """Stream a docker-archive for ``ref`` into ``out``; returns the image ID (config digest)."""
    config_bytes = json.dumps(config_document(config, layers), sort_keys=True).encode()
    config_digest = hashlib.sha256(config_bytes).hexdigest()
    manifest = [
        {
            "Config": f"{config_digest}.json",
            "RepoTags": [ref],
            "Layers": [f"{layer.digest}/layer.tar" for layer in layers],
        }
    ]
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        _add_bytes(archive, f"{config_digest}.json", config_bytes)
        for layer in layers:
            info = tarfile.TarInfo(f"{layer.digest}/layer.tar")
            info.size = layer.path.stat().st_size
            info.mode = 0o644
            with layer.path.open("rb") as handle:
                archive.addfile(info, handle)
        _add_bytes(archive, "manifest.json", json.dumps(manifest).encode())
    return config_digest


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))
