"""The worker runs as a UID with no account (contract.WORKER_UID): torch calls getpass.getuser()
while importing torch._dynamo (which `import ChatTTS` pulls in), and without USER that reads the
passwd entry the UID does not have. So the images set USER, as they set HOME; without it ChatTTS
failed to import in every pod on the real node. Both images are checked: the Dockerfile and the
local cluster's offline build."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ttsfleet.devcluster import images

REPO = Path(__file__).resolve().parents[2]
# The pod's situation in-process: the UID has no passwd entry.
IMPORT = """
import pwd
def no_account(uid):
    raise KeyError(f"getpwuid(): uid not found: {uid}")
pwd.getpwuid = no_account
import torch._dynamo
print("imported")
"""


def _dockerfile_env() -> dict[str, str]:
    text = (REPO / "worker" / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.*)$", text, flags=re.MULTILINE):
        env.update(pair.split("=", 1) for pair in line.split() if "=" in pair)
    return env


def _image_env() -> dict[str, str]:
    return dict(item.split("=", 1) for item in images.worker_image().config.env)


def _import_without_account(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", IMPORT],
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("image_env", [_dockerfile_env, _image_env], ids=["Dockerfile", "devcluster-image"])
def test_torch_imports_without_an_account_with_the_image_environment(
    image_env: Callable[[], dict[str, str]], tmp_path: Path
) -> None:
    env = image_env()
    assert env.get("USER"), "the image sets no USER"

    with_user = _import_without_account({"USER": env["USER"]}, tmp_path)

    assert with_user.returncode == 0 and "imported" in with_user.stdout, with_user.stderr[-2000:]


def test_without_user_the_import_fails_as_it_did_in_the_pods(tmp_path: Path) -> None:
    without = _import_without_account({}, tmp_path)

    assert without.returncode != 0 and "getpwuid" in without.stderr, without.stdout + without.stderr[-2000:]
