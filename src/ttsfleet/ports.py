"""Free TCP ports for the servers this project starts on the machine (a local cluster's components,
an operator's metrics, a Triton server beside the tests), reserved across every process of the
machine for a while after they are handed out.

The kernel only knows a port is taken once a server listens on it; until then ``bind(0)`` may
hand the same port to another caller. A cluster asks for its ports first and starts its servers
over the next seconds, and two pytest workers start clusters and Triton servers side by side: on
a loaded machine a local cluster's kwok once got the port its etcd was listening on. A port handed
out here is marked in a shared folder and not handed out again by any process until
``RESERVED_SECONDS`` have passed, by which time its server listens (and the kernel keeps it) or
has given it up.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

RESERVED_SECONDS = 600.0
# How many ports the kernel may offer that another caller holds before giving up.
_ATTEMPTS = 200
_last_sweep = 0.0


def registry() -> Path:
    """The shared folder of reservations: one empty file per port, its mtime the reservation."""
    return Path(tempfile.gettempdir()) / f"ttsfleet-ports-{os.getuid()}"


def free_port(host: str = "127.0.0.1") -> int:
    folder = registry()
    marks: Path | None = folder
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        _sweep(folder)
    except OSError:
        marks = None  # nowhere to write (a read-only root file system): the kernel's word only
    for _ in range(_ATTEMPTS):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if marks is None or _reserve(marks / str(port)):
            return port
    raise RuntimeError(f"no free port on {host}: the kernel offered only ports reserved in {folder}")


def _reserve(mark: Path) -> bool:
    try:
        mark.touch(exist_ok=False)  # O_CREAT | O_EXCL: one process wins
        return True
    except FileExistsError:
        pass
    try:
        if time.time() - mark.stat().st_mtime < RESERVED_SECONDS:
            return False
        # Expired: free for the next caller that draws it (this one takes another port, so two
        # callers that find it expired at once cannot both take it).
        mark.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
    return False


def _sweep(marks: Path) -> None:
    """Drop expired reservations, at most once a minute per process: the folder stays small."""
    global _last_sweep
    now = time.time()
    if now - _last_sweep < 60:
        return
    _last_sweep = now
    for mark in marks.iterdir():
        try:
            if now - mark.stat().st_mtime >= RESERVED_SECONDS:
                mark.unlink(missing_ok=True)
        except FileNotFoundError:
            continue
