"""Structured (JSON lines) logging, quiet by default: lifecycle events at INFO, the rest DEBUG."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(level: str | None = None) -> None:
    """Configure the ``ttsfleet`` logger tree once; ChatTTS stays at ERROR."""
    root = logging.getLogger("ttsfleet")
    if getattr(root, "_ttsfleet_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel((level or os.environ.get("TTSFLEET_LOG_LEVEL", "INFO")).upper())
    root.propagate = False
    # ChatTTS warns on every clip that hits max_new_token; opt in to its chatter when debugging.
    logging.getLogger("ttsfleet.chattts").setLevel(os.environ.get("TTSFLEET_CHATTTS_LOG_LEVEL", "ERROR").upper())
    root._ttsfleet_configured = True  # type: ignore[attr-defined]
