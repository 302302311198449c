"""The chart's CRDs never drift from crds/: charts/sync_crd.py copies them and its --check fails on drift."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from chartkit import CHART, REPO

SYNC = REPO / "charts" / "sync_crd.py"


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SYNC), "--check", *args], capture_output=True, text=True)


def test_the_committed_chart_matches_crds() -> None:
    result = check()
    assert result.returncode == 0, result.stderr


def test_a_drifted_copy_is_caught_and_repaired(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    copy = chart / "files" / "crds" / "tts.ttsfleet.io_ttsdeployments.yaml"
    copy.write_text(copy.read_text().replace("maxLength: 512", "maxLength: 513", 1))

    drifted = check("--chart", str(chart))
    assert drifted.returncode == 1
    assert "tts.ttsfleet.io_ttsdeployments.yaml" in drifted.stderr

    subprocess.run([sys.executable, str(SYNC), "--chart", str(chart)], check=True, capture_output=True)
    assert check("--chart", str(chart)).returncode == 0
