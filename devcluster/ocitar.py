"""Write an OCI image-layout tarball (what ``ctr images import`` reads) from layer tarballs,
with the standard library only: no Docker engine, no registry.

Layers stay uncompressed: each one's digest is then also its ``diff_id``, and containerd
unpacks it without a decompression pass. Blobs the importing containerd already holds can be
left out (``skip``): it finds them by digest in its content store, so re-importing an image
whose project layer changed streams megabytes, not the multi-GB dependency layer.
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


LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"


def _descriptor(media_type: str, digest: str, size: int) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": size}


def write_archive(
    out: IO[bytes], ref: str, config: ImageConfig, layers: list[LayerFile], skip: frozenset[str] = frozenset()
) -> str:
    """Stream an OCI layout for ``ref`` into ``out``; returns the image ID (config digest).

    ``skip`` holds digests (``sha256:...``) of layer blobs the reader already has.
    """
    config_bytes = json.dumps(config_document(config, layers), sort_keys=True).encode()
    config_digest = hashlib.sha256(config_bytes).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": _descriptor(CONFIG_MEDIA_TYPE, config_digest, len(config_bytes)),
        "layers": [_descriptor(LAYER_MEDIA_TYPE, layer.digest, layer.path.stat().st_size) for layer in layers],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = hashlib.sha256(manifest_bytes).hexdigest()
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                **_descriptor(MANIFEST_MEDIA_TYPE, manifest_digest, len(manifest_bytes)),
                "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        _add_bytes(archive, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        for layer in layers:
            if f"sha256:{layer.digest}" in skip:
                continue
            info = tarfile.TarInfo(f"blobs/sha256/{layer.digest}")
            info.size = layer.path.stat().st_size
            info.mode = 0o644
            with layer.path.open("rb") as handle:
                archive.addfile(info, handle)
        _add_bytes(archive, f"blobs/sha256/{config_digest}", config_bytes)
        _add_bytes(archive, f"blobs/sha256/{manifest_digest}", manifest_bytes)
        _add_bytes(archive, "index.json", json.dumps(index).encode())
    return config_digest


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))
