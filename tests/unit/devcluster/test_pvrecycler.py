"""Released real-node volumes come back empty; nothing outside the clusters' folders is wiped."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttsfleet.devcluster import pvrecycler


def test_wipe_empties_a_volume_directory_under_the_cluster_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTSFLEET_CACHE", str(tmp_path))
    disk = tmp_path / "clusters" / "dev" / "realnode" / "disks" / "ssd0"
    (disk / "model").mkdir(parents=True)
    (disk / "model" / "weights.bin").write_bytes(b"x")
    (disk / ".hidden").write_text("y")

    pvrecycler.wipe(disk)

    assert disk.is_dir() and list(disk.iterdir()) == []


def test_wipe_refuses_a_path_outside_the_cluster_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTSFLEET_CACHE", str(tmp_path / "cache"))
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")

    with pytest.raises(ValueError, match="refusing to wipe"):
        pvrecycler.wipe(precious)

    assert (precious / "notes.txt").read_text() == "keep"
