"""Every version of some objects, as a `kubectl get --watch` streams them: a test that must see a
short-lived state (a status written once and overwritten within a second) reads the watch, not a
poll, which would step over it."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ttsfleet.devcluster.cluster import ClusterHandle


@contextmanager
def watched(cluster: ClusterHandle, get_args: list[str], add: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """Calls ``add`` with each object `kubectl get <get_args> --watch` shows, until the block ends."""
    watch = subprocess.Popen(
        [
            str(cluster.kubectl_path), "--kubeconfig", str(cluster.kubeconfig),
            "get", *get_args, "--watch", "--output-watch-events", "-o", "json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip

    def read() -> None:
        decoder, buffer = json.JSONDecoder(), ""
        assert watch.stdout is not None
        for line in watch.stdout:
            buffer += line
            while buffer.strip():
                try:
                    event, end = decoder.raw_decode(buffer.lstrip())
                except json.JSONDecodeError:
                    break  # an event split over lines: read on
                buffer = buffer.lstrip()[end:]
                add(event["object"])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield
    finally:
        watch.terminate()
        watch.wait(timeout=10)
        reader.join(timeout=10)
