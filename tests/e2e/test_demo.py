"""README's first command works: cluster, chart, operator, a Ready fleet, and speech in a WAV file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from ttsfleet.devcluster.cluster import reap_stale

pytest.importorskip("torch", reason="the demo's worker needs the worker extra")


def test_demo_brings_a_fleet_to_ready_and_writes_speech(tmp_path: Path) -> None:
    reap_stale("demo-test")
    result = subprocess.run(
        [sys.executable, "-m", "ttsfleet.demo", "--out", str(tmp_path), "--cluster-name", f"demo-test-{os.getpid()}"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "step 6/6 done" in output
    # The fleet's printer columns, as `kubectl get ttsd` shows them to a person.
    assert "READY" in output and "REPLICAS" in output and "MODEL" in output and "AUTOSCALING" in output
    assert re.search(r"^tts-cpu\s+True\s+1/1", output, re.MULTILINE), "the fleet must be listed Ready 1/1"
    with wave.open(str(tmp_path / "speech.wav")) as wav:
        assert wav.getframerate() == 24_000
        assert wav.getnchannels() == 1
        assert wav.getnframes() / wav.getframerate() > 0.5
    assert f"wrote {tmp_path / 'speech.wav'}" in output
