"""The folder `operator/` is ours, but the top-level name `operator` stays the standard library's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_top_level_operator_is_the_standard_library_even_from_the_repo_root() -> None:
    probe = "import operator, sys; print(operator.__file__); print('ttsfleet' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    operator_file = out.stdout.splitlines()[0]
    assert not operator_file.startswith(str(REPO)), f"`import operator` resolved to {operator_file}"


def test_our_folders_are_subpackages_of_ttsfleet() -> None:
    probe = "import ttsfleet.devcluster, ttsfleet.contract; print(ttsfleet.devcluster.__path__[0])"
    out = subprocess.run([sys.executable, "-c", probe], cwd="/", capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).resolve() == (REPO / "devcluster").resolve()
