"""Manifests taken from upstream Go modules, never hand-copied: KEDA's and the Prometheus
Operator's CRDs, and kwok's stage definitions (how simulated nodes and pods change state)."""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from ttsfleet.devcluster import versions

KEDA_MODULE = "github.com/kedacore/keda/v2"
PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
KWOK_MODULE = "sigs.k8s.io/kwok"

# Only the kinds ttsfleet creates or that users pair with it; the rest of each project's CRDs
# would only slow the API server's start in tests.
KEDA_CRDS = (
    "keda.sh_scaledobjects.yaml",
    "keda.sh_triggerauthentications.yaml",
    "keda.sh_clustertriggerauthentications.yaml",
)
PROMETHEUS_OPERATOR_CRDS = (
    "monitoring.coreos.com_servicemonitors.yaml",
    "monitoring.coreos.com_podmonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
)
# The same stages kwokctl configures for its own clusters: nodes become Ready and renew
# their lease, pods become Running/Ready as soon as they are bound.
KWOK_STAGES = (
    "kustomize/stage/node/fast",
    "kustomize/stage/node/heartbeat-with-lease",
    "kustomize/stage/pod/fast",
)


@cache
def download(module: str, version: str) -> dict[str, str]:
    """``go mod download -json module@version``: fetched through the Go module proxy, checked
    against the checksum database, and described by its ``Dir`` and ``GoMod`` paths."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
    ).stdout
    info: dict[str, str] = json.loads(out)
    if "Error" in info:
        raise RuntimeError(f"go mod download {module}@{version}: {info['Error']}")
    return info


def module_dir(module: str, version: str) -> Path:
    return Path(download(module, version)["Dir"])


def keda_crds() -> list[Path]:
    base = module_dir(KEDA_MODULE, versions.KEDA) / "config" / "crd" / "bases"
    return [base / name for name in KEDA_CRDS]


def prometheus_operator_crds() -> list[Path]:
    base = module_dir(PROMETHEUS_OPERATOR_MODULE, versions.PROMETHEUS_OPERATOR) / "example" / "prometheus-operator-crd"
    return [base / name for name in PROMETHEUS_OPERATOR_CRDS]


def third_party_crds() -> list[Path]:
    return keda_crds() + prometheus_operator_crds()


def kwok_stages() -> list[dict[str, Any]]:
    root = module_dir(KWOK_MODULE, versions.KWOK)
    documents: list[dict[str, Any]] = []
    for stage_dir in KWOK_STAGES:
        kustomization = yaml.safe_load((root / stage_dir / "kustomization.yaml").read_text())
        for resource in kustomization["resources"]:
            documents += [doc for doc in yaml.safe_load_all((root / stage_dir / resource).read_text()) if doc]
    return documents
