"""The operator folder must never shadow the stdlib ``operator`` module."""

from __future__ import annotations

import subprocess
import sys

from fixtures_operator import REPO


def test_stdlib_operator_wins_from_the_repo_root() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import operator, sys; print(operator.__file__)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(REPO / "operator") not in out


def test_module_entry_point_runs_from_the_repo_root() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ttsfleet.operator", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "--all-namespaces" in result.stdout
