"""Rendering the operator chart with the real helm binary, for the unit and e2e chart tests."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ttsfleet.devcluster import versions

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ttsfleet-operator"
RELEASE = "ttsfleet"
NAMESPACE = "ttsfleet-system"


class HelmError(RuntimeError):
    """helm exited non-zero; the message is its stderr, which is what a user would read."""


def helm(helm_path: Path, *args: str, values: dict[str, Any] | None = None) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as values_file:
        yaml.safe_dump(values or {}, values_file)
        values_file.flush()
        result = subprocess.run(
            [str(helm_path), *args, "--values", values_file.name],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if result.returncode != 0:
        raise HelmError(result.stderr.strip() or result.stdout.strip())
    return result.stdout


def template_args(release: str = RELEASE, namespace: str = NAMESPACE, *, include_crds: bool = True) -> list[str]:
    # Without a cluster helm assumes an old Kubernetes; render for the one the e2e suite runs.
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", versions.KUBERNETES]
    return [*args, "--include-crds"] if include_crds else args


def render(
    helm_path: Path,
    values: dict[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    include_crds: bool = True,
) -> list[dict[str, Any]]:
    """The objects `helm template` produces, as dicts, in output order."""
    out = helm(helm_path, *template_args(release, namespace, include_crds=include_crds), values=values)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objects, "Deployment")
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "operator")
