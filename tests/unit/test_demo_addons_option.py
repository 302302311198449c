"""``make demo ADDONS=1`` / ``ttsfleet-demo --with-addons``: which add-ons the demo cluster starts;
the plain ``make demo`` starts none."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from unittest import mock

import pytest

from ttsfleet import demo

REPO = Path(__file__).resolve().parents[2]


def add_ons_of(*argv: str) -> tuple[str, ...]:
    with mock.patch.object(demo, "run") as run:
        assert demo.main(list(argv)) == 0
    add_ons: tuple[str, ...] = run.call_args.args[4]
    return add_ons


def test_the_plain_demo_starts_no_add_on() -> None:
    assert add_ons_of() == ()


def test_with_addons_alone_starts_keda_and_prometheus() -> None:
    assert add_ons_of("--with-addons") == ("prometheus", "keda")


def test_with_addons_names_them() -> None:
    assert add_ons_of("--with-addons=keda,argocd") == ("keda", "argocd")


@pytest.mark.parametrize("argv", [["--with-addons=grafana"], ["--with-addons", "--use-current-context"]])
def test_an_unknown_add_on_or_one_beside_the_current_context_is_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with mock.patch.object(demo, "run") as run, pytest.raises(SystemExit) as exit_:
        demo.main(argv)
    assert exit_.value.code == 2 and not run.called
    assert "--with-addons" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize(("variables", "expected"), [([], None), (["ADDONS=1"], "--with-addons")])
def test_make_demo_passes_addons_through(variables: list[str], expected: str | None) -> None:
    shown = subprocess.run(
        ["make", "-n", "demo", *variables], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    line = next(ln for ln in shown.splitlines() if "-m ttsfleet.demo" in ln)
    assert line.split()[3:] == ([expected] if expected else [])
