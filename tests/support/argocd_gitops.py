"""Helpers for the GitOps e2e tests on the real Argo CD: the shipped examples/argocd published
into a local git repository, and Application status read the way ``argocd app get`` shows it.

The adapter changes only what must differ on the local cluster: the repository URL (GitHub ->
``file://`` of the local repository). Everything else (waves, sync options, the health checks
in argocd-cm.yaml, the fleets) is the example as shipped.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kube_watch import watched

from ttsfleet.devcluster.addons_argocd import NAMESPACE, GitRepository
from ttsfleet.devcluster.cluster import ClusterHandle

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = Path("examples/argocd")
CHART = Path("charts/ttsfleet-operator")
# What the shipped Applications point at; the adapter swaps it for the local repository.
UPSTREAM_URL = "https://github.com/ttsfleet/ttsfleet.git"
APP_FILES = (
    EXAMPLE / "root.yaml",
    EXAMPLE / "apps" / "ttsfleet-operator.yaml",
    EXAMPLE / "apps" / "ttsfleet-fleets.yaml",
)


def localize(text: str, url: str) -> str:
    if UPSTREAM_URL not in text:
        raise AssertionError(f"the example no longer points at {UPSTREAM_URL}: update the adapter")
    return text.replace(UPSTREAM_URL, url)


def publish(repo: GitRepository, source: Path = REPO) -> str:
    """Copy the example and the chart it installs to the same paths in ``repo``, point the
    Applications at ``repo`` and commit; returns the commit."""
    for part in (EXAMPLE, CHART):
        shutil.copytree(source / part, repo.path / part, dirs_exist_ok=True)
    for app in APP_FILES:
        target = repo.path / app
        target.write_text(localize(target.read_text(), repo.url))
    return repo.commit("ttsfleet: operator chart and fleets for Argo CD")


def application(cluster: ClusterHandle, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "application", name, "-n", NAMESPACE, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    app: dict[str, Any] = json.loads(result.stdout)
    return app


def sync_status(app: dict[str, Any] | None) -> str:
    return str(((app or {}).get("status") or {}).get("sync", {}).get("status", ""))


def health_status(app: dict[str, Any] | None) -> str:
    return str(((app or {}).get("status") or {}).get("health", {}).get("status", ""))


def revision(app: dict[str, Any] | None) -> str:
    return str(((app or {}).get("status") or {}).get("sync", {}).get("revision", ""))


def resource(app: dict[str, Any] | None, kind: str, name: str) -> dict[str, Any]:
    """The Application's view of one resource it tracks: sync status and (with the controller's
    --persist-resource-health) health, as ``argocd app get`` lists them."""
    for entry in ((app or {}).get("status") or {}).get("resources") or []:
        if entry.get("kind") == kind and entry.get("name") == name:
            return dict(entry)
    return {}


def resource_health(app: dict[str, Any] | None, kind: str, name: str) -> str:
    return str((resource(app, kind, name).get("health") or {}).get("status", ""))


@dataclass
class AppHistory:
    """Every version of every Application, in the order the API server sent them (a watch):
    states that last one status write (a fleet Progressing for a second on kwok) are kept."""

    seen: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, obj: dict[str, Any]) -> None:
        with self._lock:
            self.seen.append((time.monotonic(), obj))

    def versions(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return [(t, o) for t, o in self.seen if o["metadata"]["name"] == name]

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [o for _, o in self.seen]


@contextmanager
def watch_applications(cluster: ClusterHandle) -> Iterator[AppHistory]:
    history = AppHistory()
    with watched(cluster, ["applications", "-n", NAMESPACE], history.add):
        yield history
