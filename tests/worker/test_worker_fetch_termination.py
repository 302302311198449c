"""A failed fetch leaves its reason as the init container's termination message, which the
kubelet puts in the pod's status and the operator puts on the fleet's Ready condition."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttsfleet.worker import fetch, supervisor


def test_failed_fetch_writes_the_reason_to_the_termination_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    termination_log = tmp_path / "termination-log"
    monkeypatch.setenv(supervisor.ENV_TERMINATION_LOG, str(termination_log))

    code = fetch.main(["--source", "http://127.0.0.1:9/weights", "--revision", "r1", "--cache", str(tmp_path / "c")])

    assert code == 1
    message = termination_log.read_text()
    assert message.startswith("fetch failed: ") and "plain http:// is refused" in message
