"""Where everything expensive to make lives: outside the repo, keyed by version (cluster binaries,
generated weights, cluster work folders), so a fresh clone on a machine that made them once reuses
them in seconds."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$TTSFLEET_CACHE``, else ``$XDG_CACHE_HOME/ttsfleet``, else ``~/.cache/ttsfleet``."""
    explicit = os.environ.get("TTSFLEET_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ttsfleet"
