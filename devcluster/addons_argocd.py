"""Argo CD's repo server and application controller (one multi-call binary built from the module
proxy), with Debian's redis-server as their cache, run out of cluster next to the control plane.

There is no argocd-server: tests drive Argo CD through its CRDs (Applications, the AppProject
``default`` that only argocd-server would create) and read the answer from Application status.
``ARGOCD_FAKE_IN_CLUSTER`` maps ``https://kubernetes.default.svc`` to the kubeconfig. Redis
listens on loopback with a password from a 0600 config file, handed to Argo CD through the
environment (never an argument). Git repositories are served by file path (``file://``, what
Argo CD's own e2e suite uses): ``GitRepository`` makes one.

Listening sockets: the repo server (plaintext gRPC, no authentication, as in a cluster where only
the controller reaches it) and its metrics on 127.0.0.1; redis on 127.0.0.1 with a password. The
controller's metrics/healthz port is bound to all interfaces by Argo CD itself (no flag for it);
it serves read-only metrics, and its pprof endpoints stay off (their switch file does not exist).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import stat
import subprocess
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttsfleet.devcluster import addons_build, binaries, versions
from ttsfleet.devcluster.waiting import wait_for

if TYPE_CHECKING:
    from ttsfleet.devcluster.cluster import ClusterHandle, LocalCluster

NAMESPACE = "argocd"
PART_OF = {"app.kubernetes.io/part-of": "argocd"}
# How often the controller re-reads git and re-compares every Application (upstream default
# 120 s plus up to 60 s jitter; webhooks make up for it there). Short here so a test's commit
# lands within seconds without a webhook. Upstream's manifests pass argocd-cm's
# timeout.reconciliation to both processes as ARGOCD_RECONCILIATION_TIMEOUT; so does this.
RECONCILIATION = "5s"


def module_dir() -> Path:
    return Path(addons_build._download(_wrapper())["Dir"])


def _wrapper() -> addons_build.AddonWrapper:
    return next(w for w in addons_build.wrappers() if w.name == "argocd")


def redis_binary() -> Path:
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError(
            "the argocd add-on needs Debian's `redis-server` (devcluster/system-packages.sh installs it)"
        )
    return Path(found)


def prepare() -> Path:
    """Build (or reuse) the binary before the cluster starts: a cold build takes minutes."""
    redis_binary()
    if not shutil.which("git"):
        raise RuntimeError("the argocd add-on needs `git` on PATH (its repo server clones with it)")
    return addons_build.argocd_binary()


def crds() -> list[Path]:
    base = module_dir() / "manifests" / "crds"
    return [base / "application-crd.yaml", base / "appproject-crd.yaml"]


def tool_dir(workdir: Path) -> Path:
    """PATH entries the repo server needs: git's signature wrapper, which it runs by name."""
    bin_dir = workdir / "argocd-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "git-verify-wrapper.sh"
    shutil.copyfile(module_dir() / "hack" / "git-verify-wrapper.sh", wrapper)
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def write_redis_config(directory: Path, port: int) -> tuple[Path, str]:
    directory.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    config = directory / "redis.conf"
    # Created 0600 before the password is written into it.
    config.touch(mode=0o600)
    config.chmod(0o600)
    config.write_text(
        f"port {port}\nbind 127.0.0.1\nprotected-mode yes\nrequirepass {password}\n"
        f'save ""\nappendonly no\ndir {directory}\n'
    )
    return config, password


def base_objects() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "argocd-cm", "namespace": NAMESPACE, "labels": PART_OF},
            "data": {"timeout.reconciliation": RECONCILIATION},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "argocd-secret", "namespace": NAMESPACE, "labels": PART_OF},
            "stringData": {"server.secretkey": secrets.token_urlsafe(32)},
        },
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AppProject",
            "metadata": {"name": "default", "namespace": NAMESPACE},
            "spec": {
                "sourceRepos": ["*"],
                "destinations": [{"server": "*", "namespace": "*"}],
                "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
            },
        },
    ]


def process_env(base: dict[str, str], state_dir: Path, password: str, path: str) -> dict[str, str]:
    """What both processes share. Everything Argo CD would put under / in its image (temp clones,
    the askpass socket, TLS/SSH known hosts, GnuPG) goes under this cluster's own directory, so two
    clusters on one machine never share a path."""
    for sub in ("tmp", "home", "tls", "ssh"):
        (state_dir / sub).mkdir(parents=True, exist_ok=True)
    return {
        **base,
        "PATH": path,
        "HOME": str(state_dir / "home"),
        "TMPDIR": str(state_dir / "tmp"),
        "REDIS_PASSWORD": password,
        "ARGOCD_FAKE_IN_CLUSTER": "true",
        "ARGOCD_ASK_PASS_SOCK": str(state_dir / "askpass.sock"),
        "ARGOCD_TLS_DATA_PATH": str(state_dir / "tls"),
        "ARGOCD_SSH_DATA_PATH": str(state_dir / "ssh"),
        # No signature verification configured: no GnuPG keyring to initialise.
        "ARGOCD_GPG_ENABLED": "false",
        # pprof answers only while this file says "true"; it is never created.
        "ARGOCD_ENABLE_PROFILER_FILE_PATH": str(state_dir / "profiler.enabled"),
        "ARGOCD_RECONCILIATION_TIMEOUT": RECONCILIATION,
        "ARGOCD_RECONCILIATION_JITTER": "0",
    }


def repo_server_argv(binary: Path, port: int, metrics_port: int, redis: str) -> list[str]:
    return [
        str(binary),
        "--address=127.0.0.1",
        f"--port={port}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics_port}",
        f"--redis={redis}",
        "--disable-tls",
        # Its default points at the in-cluster mTLS Secret mount, which --disable-tls refuses.
        "--client-ca-path=",
        "--loglevel=info",
        "--logformat=text",
    ]


def controller_argv(binary: Path, repo_port: int, metrics_port: int, redis: str) -> list[str]:
    return [
        str(binary),
        f"--repo-server=127.0.0.1:{repo_port}",
        "--repo-server-plaintext",
        f"--redis={redis}",
        f"--metrics-port={metrics_port}",
        f"--namespace={NAMESPACE}",
        # Per-resource health in Application status: what tests (and `kubectl get app`) read.
        "--persist-resource-health",
        "--loglevel=info",
        "--logformat=text",
    ]


def _listening(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start(cluster: LocalCluster, state: dict[str, Any], handle: ClusterHandle) -> dict[str, Any]:
    from ttsfleet.devcluster.cluster import _Process, free_port

    argocd = addons_build.argocd_binary()
    redis_port, repo_port, repo_metrics, controller_metrics = (free_port() for _ in range(4))
    state_dir = cluster.workdir / "argocd"
    redis_config, password = write_redis_config(state_dir / "redis", redis_port)
    cluster._start(state, _Process("redis-server", [str(redis_binary()), str(redis_config)]))
    for crd in crds():
        handle.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    handle.wait_crds_established()
    handle.apply_objects(base_objects())
    helm_dir = binaries.build_bundle(next(b for b in binaries.BUNDLES if b.name == "helm"))
    path = os.pathsep.join([str(tool_dir(state_dir)), str(helm_dir), os.environ.get("PATH", "")])
    env = process_env(handle.env, state_dir, password, path)
    redis = f"127.0.0.1:{redis_port}"
    wait_for(lambda: _listening(redis_port), what="redis-server to listen", timeout=30)
    cluster._start(
        state,
        _Process("argocd-repo-server", repo_server_argv(argocd, repo_port, repo_metrics, redis)),
        {**env, "ARGOCD_BINARY_NAME": "argocd-repo-server"},
    )
    wait_for(lambda: _listening(repo_port), what="the Argo CD repo server to listen", timeout=60)
    cluster._start(
        state,
        _Process("argocd-application-controller", controller_argv(argocd, repo_port, controller_metrics, redis)),
        {**env, "ARGOCD_BINARY_NAME": "argocd-application-controller"},
    )
    wait_for(
        lambda: _listening(controller_metrics),
        what="the Argo CD application controller to serve its metrics",
        timeout=60,
    )
    return {
        "version": versions.ARGOCD,
        "repo_server": f"127.0.0.1:{repo_port}",
        "controller_metrics": f"127.0.0.1:{controller_metrics}",
        "namespace": NAMESPACE,
    }


@dataclass(frozen=True)
class GitRepository:
    """A git repository on a local path, which Argo CD reads through ``file://``."""

    path: Path

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    @classmethod
    def create(cls, path: Path, branch: str = "main") -> GitRepository:
        path.mkdir(parents=True, exist_ok=True)
        repo = cls(path)
        repo.git("init", "--quiet", f"--initial-branch={branch}")
        return repo

    def git(self, *args: str) -> str:
        # A fixed identity and no user/system config: commits do not depend on the machine.
        env = {
            **os.environ,
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "ttsfleet-e2e",
            "GIT_AUTHOR_EMAIL": "e2e@ttsfleet.invalid",
            "GIT_COMMITTER_NAME": "ttsfleet-e2e",
            "GIT_COMMITTER_EMAIL": "e2e@ttsfleet.invalid",
        }
        result = subprocess.run(["git", *args], cwd=self.path, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def commit(self, message: str) -> str:
        """Commit everything in the work tree; returns the new commit's sha."""
        self.git("add", "--all")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")
