"""Log lines a log pipeline can parse: JSON with kopf's keys for what runs in pods."""

from __future__ import annotations

import json
import logging

import pytest

from ttsfleet import logs


def test_json_lines_carry_kopfs_keys_extras_and_exceptions(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure_json("INFO", tree="ttsfleet-logtest")
    log = logging.getLogger("ttsfleet-logtest.fetch")
    log.debug("not shown at INFO")
    log.info("downloaded %d bytes", 42, extra={"rate_mib_s": 1.5})
    try:
        raise ValueError("bad checksum")
    except ValueError:
        log.exception("fetch failed")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["message"] for line in lines] == ["downloaded 42 bytes", "fetch failed"]
    first, second = lines
    assert (first["severity"], first["logger"], first["rate_mib_s"]) == ("info", "ttsfleet-logtest.fetch", 1.5)
    assert first["timestamp"].startswith("20")
    assert second["severity"] == "error" and "ValueError: bad checksum" in second["exc_info"]


def test_configuring_twice_adds_no_second_handler() -> None:
    logs.configure_json(tree="ttsfleet-logtest-twice")
    logs.configure_json(tree="ttsfleet-logtest-twice")
    assert len(logging.getLogger("ttsfleet-logtest-twice").handlers) == 1
