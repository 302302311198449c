"""The helm binary for the chart tests: built from source once (devcluster), then cached."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttsfleet.devcluster import binaries


@pytest.fixture(scope="session")
def helm_path() -> Path:
    return binaries.ensure_binaries(("helm",))["helm"]
