"""Helpers for the chart e2e tests: installing with helm, the ServiceAccount's token, and the
operator run locally with the chart's arguments and identity."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from ttsfleet.devcluster.cluster import ClusterHandle
from ttsfleet.devcluster.waiting import wait_for

CRD_NAMES = ("ttsdeployments.tts.ttsfleet.io",)
START_TIMEOUT_SECONDS = 60.0
# What an operator without some permission prints, from kopf or from our client.
PERMISSION_MARKERS = ("Forbidden", "forbidden", "Not enough permissions", " 403 ")
# Also a 403, but the API server refusing new objects in a namespace being deleted (an earlier
# test's, whose fleets the cluster-wide operator still sees until the namespace is gone), not RBAC.
NOT_PERMISSION = "because it is being terminated"


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    service_account: str
    cluster_role: str
    health_port: int
    metrics_port: int

    def deployment(self, cluster: ClusterHandle) -> dict[str, Any]:
        out = cluster.kubectl(
            "get",
            "deployment",
            "-n",
            self.namespace,
            "-l",
            f"app.kubernetes.io/instance={self.name}",
            "-o",
            "json",
        ).stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        assert len(items) == 1, f"expected one operator Deployment, found {len(items)}"
        return items[0]

    def operator_args(self, cluster: ClusterHandle) -> list[str]:
        """The installed Deployment's arguments: what the pod would run."""
        container = self.deployment(cluster)["spec"]["template"]["spec"]["containers"][0]
        return list(container["args"])


def adopt(cluster: ClusterHandle, kind: str, name: str, release: str, namespace: str) -> None:
    """Hand an object created outside Helm (e.g. the operator tests' kubectl apply of crds/) to the
    release, as a user adopting an existing install would; Helm refuses objects it does not own."""
    if cluster.kubectl("get", kind, name, check=False).returncode != 0:
        return
    cluster.kubectl("label", "--overwrite", kind, name, "app.kubernetes.io/managed-by=Helm")
    cluster.kubectl(
        "annotate",
        "--overwrite",
        kind,
        name,
        f"meta.helm.sh/release-name={release}",
        f"meta.helm.sh/release-namespace={namespace}",
    )


def helm(cluster: ClusterHandle, *args: str, values: dict[str, Any] | None = None, timeout: float = 240) -> str:
    assert cluster.helm_path is not None, "the cluster handle has no helm"
    command = [str(cluster.helm_path), "--kubeconfig", str(cluster.kubeconfig), *args]
    if values is not None:
        command += ["--values", "-"]
    result = subprocess.run(
        command,
        input=yaml.safe_dump(values) if values is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def token_kubeconfig(cluster: ClusterHandle, release: Release, path: Path) -> Path:
    """A kubeconfig holding only a token of the release's ServiceAccount."""
    token = cluster.kubectl(
        "create", "token", release.service_account, "-n", release.namespace, "--duration=1h"
    ).stdout.strip()
    admin = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": admin["clusters"][0]["name"], "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


class ChartOperator:
    """`python -m ttsfleet.operator` with the chart's arguments and the chart's identity."""

    def __init__(self, cluster: ClusterHandle, release: Release, kubeconfig: Path, log_path: Path) -> None:
        self.release = release
        self.args = release.operator_args(cluster)
        self.log_path = log_path
        self._env = {**cluster.env, "KUBECONFIG": str(kubeconfig)}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        assert not self.running, "operator already running"
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "ttsfleet.operator", *self.args],
            env=self._env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{self.release.health_port}/healthz"

        def live_or_exited() -> str | None:
            if self._proc is not None and self._proc.poll() is not None:
                return f"exited with {self._proc.returncode}"
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return "live"
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return None

        state = wait_for(
            live_or_exited,
            what=f"the operator's liveness endpoint {url}",
            timeout=timeout,
            interval=0.3,
            describe=self.log_tail,
        )
        assert state == "live", f"operator {state}:\n{self.log_tail()}"

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=20)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_since_start(self) -> str:
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_since_start().splitlines()[-lines:])

    def permission_errors(self) -> list[str]:
        return [
            line
            for line in self.log_since_start().splitlines()
            if any(marker in line for marker in PERMISSION_MARKERS) and NOT_PERMISSION not in line
        ]
