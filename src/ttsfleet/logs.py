"""One logging set-up for every ttsfleet process. Quiet by default: our own lifecycle and progress
at INFO, third-party libraries from WARNING up (``TTSFLEET_LOG_LEVEL`` or a flag changes it).

Two renderings of the same records:
- text (``time level logger message``) for the commands people run in a terminal;
- JSON lines for what runs in a pod (the worker, the fetcher), with the keys kopf writes for the
  operator (``message``, ``timestamp``, ``severity``) plus ``logger`` and any ``extra=`` fields,
  so one log pipeline parses every component.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_NOISY = ("kubernetes", "urllib3", "asyncio", "aiohttp", "kopf.objects", "httpx", "filelock")


class _Formatter(JsonFormatter):
    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record["severity"] = record.levelname.lower()
        log_record["logger"] = record.name


def json_formatter() -> logging.Formatter:
    return _Formatter("{message}", style="{", timestamp=True)


def _level(level: str | None) -> str:
    return (level or os.environ.get("TTSFLEET_LOG_LEVEL", "INFO")).upper()


def configure(level: str | None = None) -> None:
    """Text logs on stderr for the whole process (commands, tests)."""
    chosen = _level(level)
    logging.basicConfig(
        level=chosen,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        force=True,
    )
    if chosen != "DEBUG":
        for name in _NOISY:
            logging.getLogger(name).setLevel(logging.WARNING)


def configure_json(level: str | None = None, tree: str = "ttsfleet") -> None:
    """JSON lines on stderr for our logger tree only, once per process: inside Triton's python
    backend the host process owns the root logger. ChatTTS (logged under ``ttsfleet.chattts``)
    warns on every clip that hits max_new_token, so it stays at ERROR unless asked."""
    root = logging.getLogger(tree)
    if getattr(root, "_ttsfleet_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    root.addHandler(handler)
    root.setLevel(_level(level))
    root.propagate = False
    chattts_level = os.environ.get("TTSFLEET_CHATTTS_LOG_LEVEL", "ERROR").upper()
    logging.getLogger(f"{tree}.chattts").setLevel(chattts_level)
    root._ttsfleet_configured = True  # type: ignore[attr-defined]
