"""Ports handed out by ttsfleet.ports: a port the kernel offers again before its server listens
(a cluster asks for all its ports first, two pytest workers ask side by side) goes to one caller
only; a reservation expires; with nowhere to write, the kernel's word stands."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ttsfleet import ports


class _Kernel:
    """bind(0) answers from a script: what the kernel may do while no server listens yet."""

    def __init__(self, offers: list[int]) -> None:
        self.offers = iter(offers)

    def socket(self, *_: Any) -> _Kernel._Socket:
        return _Kernel._Socket(next(self.offers))

    class _Socket:
        def __init__(self, port: int) -> None:
            self.port = port

        def __enter__(self) -> _Kernel._Socket:
            return self

        def __exit__(self, *_: Any) -> None:
            return None

        def bind(self, _: Any) -> None:
            return None

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)


@pytest.fixture
def marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "ports"
    monkeypatch.setattr(ports, "registry", lambda: folder)
    monkeypatch.setattr(ports, "_last_sweep", 0.0)
    yield folder


def test_a_port_offered_twice_goes_to_the_first_caller_only(marks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports.socket, "socket", _Kernel([35907, 35907, 35909]).socket)
    assert ports.free_port() == 35907
    assert ports.free_port() == 35909
    assert sorted(p.name for p in marks.iterdir()) == ["35907", "35909"]


def test_an_expired_reservation_is_given_up(marks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports.socket, "socket", _Kernel([40001] * 4).socket)
    assert ports.free_port() == 40001
    old = time.time() - ports.RESERVED_SECONDS - 1
    os.utime(marks / "40001", (old, old))
    assert ports.free_port() == 40001
    assert time.time() - (marks / "40001").stat().st_mtime < ports.RESERVED_SECONDS  # reserved afresh
    with pytest.raises(RuntimeError, match="reserved"):  # and held again
        monkeypatch.setattr(ports, "_ATTEMPTS", 1)
        ports.free_port()


def test_with_nowhere_to_write_the_kernels_port_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    monkeypatch.setattr(ports, "registry", lambda: not_a_folder / "ports")
    port = ports.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # really free


def test_real_ports_are_distinct_across_many_calls(marks: Path) -> None:
    handed = [ports.free_port() for _ in range(300)]
    assert len(set(handed)) == len(handed)
    assert {int(p.name) for p in marks.iterdir()} == set(handed)
