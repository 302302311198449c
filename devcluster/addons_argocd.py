"""Argo CD's repo server and application controller (one multi-call binary built from the module
proxy), with Debian's redis-server as their cache, run out of cluster next to the control plane.

There is no argocd-server: tests drive Argo CD through its CRDs (Applications, the AppProject
``default`` that only argocd-server would create) and read the answer from Application status.
``ARGOCD_FAKE_IN_CLUSTER`` maps ``https://kubernetes.default.svc`` to the kubeconfig. Redis
listens on loopback with a password from a 0600 config file, handed to Argo CD through the
environment (never an argument). Git repositories are served by file path (``file://``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttsfleet.devcluster import addons_build, binaries, versions
from ttsfleet.devcluster.waiting import wait_for

if TYPE_CHECKING:
    from ttsfleet.devcluster.cluster import ClusterHandle, LocalCluster

NAMESPACE = "argocd"
PART_OF = {"app.kubernetes.io/part-of": "argocd"}


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
    return addons_build.argocd_binary()


def crds() -> list[Path]:
    base = module_dir() / "manifests" / "crds"
    return [base / "application-crd.yaml", base / "appproject-crd.yaml"]


def tool_dir(workdir: Path) -> Path:
    """PATH entries the repo server needs: its own names for the binary, git's signature wrapper."""
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
    config.write_text(
        f"port {port}\nbind 127.0.0.1\nprotected-mode yes\nrequirepass {password}\n"
        f'save ""\nappendonly no\ndir {directory}\n'
    )
    config.chmod(0o600)
    return config, password


def base_objects() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "argocd-cm", "namespace": NAMESPACE, "labels": PART_OF},
            # Poll git often: a test commits and expects the change within seconds.
            "data": {"timeout.reconciliation": "10s"},
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


def start(cluster: LocalCluster, state: dict[str, Any], handle: ClusterHandle) -> dict[str, Any]:
    from ttsfleet.devcluster.cluster import _Process, free_port

    argocd = addons_build.argocd_binary()
    redis_port, repo_port, repo_metrics, controller_metrics = (free_port() for _ in range(4))
    redis_config, password = write_redis_config(cluster.workdir / "redis", redis_port)
    cluster._start(state, _Process("redis-server", [str(redis_binary()), str(redis_config)]))
    for crd in crds():
        handle.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    handle.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    handle.apply_objects(base_objects())
    helm_dir = binaries.build_bundle(next(b for b in binaries.BUNDLES if b.name == "helm"))
    path = os.pathsep.join([str(tool_dir(cluster.workdir)), str(helm_dir), os.environ.get("PATH", "")])
    env = {
        **handle.env,
        "PATH": path,
        "REDIS_PASSWORD": password,
        "ARGOCD_FAKE_IN_CLUSTER": "true",
        "HOME": str(cluster.workdir / "argocd-home"),
    }
    (cluster.workdir / "argocd-home").mkdir(exist_ok=True)
    redis = f"127.0.0.1:{redis_port}"
    cluster._start(
        state,
        _Process(
            "argocd-repo-server",
            [
                str(argocd),
                "--address=127.0.0.1",
                f"--port={repo_port}",
                "--metrics-address=127.0.0.1",
                f"--metrics-port={repo_metrics}",
                f"--redis={redis}",
                "--disable-tls",
                "--loglevel=info",
                "--logformat=text",
            ],
        ),
        {**env, "ARGOCD_BINARY_NAME": "argocd-repo-server"},
    )
    cluster._start(
        state,
        _Process(
            "argocd-application-controller",
            [
                str(argocd),
                f"--repo-server=127.0.0.1:{repo_port}",
                "--repo-server-plaintext",
                f"--redis={redis}",
                f"--metrics-port={controller_metrics}",
                f"--namespace={NAMESPACE}",
                "--persist-resource-health",
                "--self-heal-timeout-seconds=1",
                "--loglevel=info",
                "--logformat=text",
            ],
        ),
        {**env, "ARGOCD_BINARY_NAME": "argocd-application-controller"},
    )
    wait_for(
        lambda: "Starting" in (handle.logs_dir / "argocd-application-controller.log").read_text(errors="replace"),
        what="the Argo CD application controller to start",
        timeout=60,
    )
    return {"version": versions.ARGOCD, "repo_server": f"127.0.0.1:{repo_port}", "namespace": NAMESPACE}
