"""Waiting for CRDs: a CRD too new to have a status is waited for, not an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttsfleet.devcluster.cluster import ClusterHandle

ACCESSOR_ERROR = "error: .status.conditions accessor error: <nil> is of the type <nil>, expected []interface{}"


def _handle(tmp_path: Path, answers: list[tuple[int, str]]) -> tuple[ClusterHandle, Path]:
    """A kubectl that gives ``answers`` in turn (exit code, stderr) and records its calls."""
    calls = tmp_path / "calls"
    script = tmp_path / "kubectl"
    cases = "\n".join(f'  {i}) echo "{err}" >&2; exit {code};;' for i, (code, err) in enumerate(answers, start=1))
    script.write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\nn=$(wc -l < {calls})\ncase "$n" in\n{cases}\n  *) exit 0;;\nesac\n'
    )
    script.chmod(0o755)
    return ClusterHandle(workdir=tmp_path, kubeconfig=tmp_path / "kubeconfig", kubectl_path=script), calls


def test_a_crd_without_status_yet_is_waited_for(tmp_path: Path) -> None:
    handle, calls = _handle(tmp_path, [(1, ACCESSOR_ERROR), (1, ACCESSOR_ERROR), (0, "")])
    handle.wait_crds_established()
    lines = calls.read_text().splitlines()
    assert len(lines) == 3 and all("--for=condition=Established" in line and "crd --all" in line for line in lines)


def test_other_failures_are_reported_at_once_naming_what_was_awaited(tmp_path: Path) -> None:
    handle, calls = _handle(tmp_path, [(1, "error: timed out waiting for the condition on crds/x")])
    with pytest.raises(RuntimeError, match=r"CRDs not Established \(-f crds\): error: timed out"):
        handle.wait_crds_established("-f", "crds")
    assert len(calls.read_text().splitlines()) == 1
