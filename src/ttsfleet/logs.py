"""One logging set-up for every ttsfleet command: ``time level logger message key=value ...``.

Quiet by default: our own progress at INFO, third-party libraries only from WARNING up.
"""

from __future__ import annotations

import logging
import os

_NOISY = ("kubernetes", "urllib3", "asyncio", "aiohttp", "kopf.objects", "httpx", "filelock")


def configure(level: str | None = None) -> None:
    chosen = (level or os.environ.get("TTSFLEET_LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(
        level=chosen,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        force=True,
    )
    if chosen != "DEBUG":
        for name in _NOISY:
            logging.getLogger(name).setLevel(logging.WARNING)
