"""An independent linter (checkov) over everything that reaches a cluster: the chart rendered with
its defaults and with every optional object on, and the children the operator builds for every
example fleet. Each finding must be accepted, with its reason, in charts/checkov-accepted.yaml;
an acceptance that no longer matches a finding fails too, so the list never outlives its reasons.

checkov's own pins clash with the worker's, so it lives in a venv of its own under the cache
(created on first use from PyPI, by the version pinned in pyproject's `lint` extra), like helm.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import tomllib
import venv
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartkit import REPO, render

from ttsfleet.cache import cache_root
from ttsfleet.operator import desired
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import parse_spec

ACCEPTED = REPO / "charts" / "checkov-accepted.yaml"
EXAMPLES = REPO / "examples"
# Everything on, as a production install might be.
CHART_VALUES: dict[str, dict[str, Any]] = {
    "chart-defaults": {},
    "chart-everything-on": {
        "watchNamespaces": ["team-a"],
        "image": {"digest": "sha256:" + "ab" * 32},
        "imagePolicy": {"allowedPrefixes": ["registry.example.com/tts/"]},
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "dashboard": {"enabled": True},
    },
}
# checkov would otherwise ask PyPI for a newer version and Prisma Cloud for guidelines.
OFFLINE = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}


def pinned_requirement() -> str:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (requirement,) = [r for r in extras["lint"] if r.startswith("checkov==")]
    return str(requirement)


@pytest.fixture(scope="session")
def checkov_path() -> Path:
    requirement = pinned_requirement()
    home = cache_root() / "tools" / requirement.replace("==", "-")
    binary = home / "bin" / "checkov"
    if not binary.exists():
        venv.create(home, with_pip=True, clear=True)
        subprocess.run([str(home / "bin" / "pip"), "install", "--quiet", requirement], check=True, timeout=1800)
    return binary


def example_fleets() -> list[tuple[str, dict[str, Any]]]:
    fleets = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "TTSDeployment":
                fleets.append((str(path.relative_to(EXAMPLES)).replace("/", "_").removesuffix(".yaml"), doc))
    return fleets


def write_manifests(helm_path: Path, out: Path) -> None:
    for name, values in CHART_VALUES.items():
        (out / f"{name}.yaml").write_text(yaml.safe_dump_all(render(helm_path, values)))
    for name, doc in example_fleets():
        owner = Owner(doc["metadata"]["name"], "team-a", "00000000-0000-4000-8000-000000000000")
        children = desired.build_all(owner, parse_spec(doc["spec"]))
        (out / f"children-{name}.yaml").write_text(yaml.safe_dump_all(children))


def run_checkov(checkov: Path, directory: Path) -> dict[str, Any]:
    args = ["--directory", str(directory), "--framework", "kubernetes", "--skip-download"]
    result = subprocess.run(
        [str(checkov), *args, "--output", "json", "--quiet", "--compact"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **OFFLINE},
    )
    # 0: nothing failed, 1: findings; anything else is checkov itself failing.
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    assert len(reports) == 1, [r.get("check_type") for r in reports]
    return dict(reports[0])


def accepted() -> list[dict[str, str]]:
    entries: list[dict[str, str]] = yaml.safe_load(ACCEPTED.read_text())["accepted"]
    for entry in entries:
        assert entry.get("reason", "").strip(), f"{entry['check']}: every accepted finding needs its reason"
    return entries


def matches(entry: dict[str, str], finding: dict[str, Any]) -> bool:
    name = Path(finding["file_path"]).name
    return (
        entry["check"] == finding["check_id"]
        and fnmatch.fnmatch(finding["resource"], entry.get("resource", "*"))
        and fnmatch.fnmatch(name, entry.get("file", "*"))
    )


def test_checkov_finds_nothing_that_is_not_accepted_with_a_reason(
    helm_path: Path, checkov_path: Path, tmp_path: Path
) -> None:
    write_manifests(helm_path, tmp_path)
    report = run_checkov(checkov_path, tmp_path)
    summary = report["summary"]
    assert summary["parsing_errors"] == 0, summary
    # The examples alone yield dozens of objects; far fewer means checkov read almost nothing.
    assert summary["resource_count"] >= 40, summary
    entries = accepted()
    failed = report["results"]["failed_checks"]
    unexplained = [
        f"{f['check_id']} {f['resource']} ({Path(f['file_path']).name}): {f['check_name']}"
        for f in failed
        if not any(matches(entry, f) for entry in entries)
    ]
    assert not unexplained, "new checkov findings; fix them or accept them with a reason:\n" + "\n".join(unexplained)
    stale = [e["check"] + " " + e.get("resource", "*") for e in entries if not any(matches(e, f) for f in failed)]
    assert not stale, f"accepted findings that checkov no longer reports; remove them from {ACCEPTED.name}: {stale}"
