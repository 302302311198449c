"""Build the cluster's binaries from source once, into a version-keyed cache outside the repo.

Each wrapper module under ``gowrappers/`` is one bundle: all of its commands are built by one
``go build`` (they share most packages) into ``<cache>/bin/<bundle>-<version>-<fingerprint>/``.
The fingerprint covers the wrapper's go.sum, the Go toolchain and the link flags, so a bump of
any of them builds anew while an unchanged checkout reuses the bundle in milliseconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ttsfleet.cache import cache_root
from ttsfleet.devcluster import versions
from ttsfleet.devcluster.gowrappers import WRAPPERS_DIR

log = logging.getLogger("ttsfleet.devcluster.build")

_K8S_VERSION_PKG = "k8s.io/component-base/version"


@dataclass(frozen=True)
class Bundle:
    """Binaries built together from one wrapper module."""

    name: str
    version: str
    packages: tuple[str, ...]
    ldflags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    # A Go toolchain newer than the machine's, fetched from the module proxy (GOTOOLCHAIN).
    toolchain: str = ""

    @property
    def wrapper_dir(self) -> Path:
        return WRAPPERS_DIR / self.name


def _kubernetes_ldflags() -> tuple[str, ...]:
    # Without these the apiserver reports v0.0.0, which kubectl, helm's kubeVersion checks
    # and the API server's own compatibility-version logic all trip over.
    minor = versions.KUBERNETES.split(".")[1]
    return (
        f"-X {_K8S_VERSION_PKG}.gitVersion={versions.KUBERNETES}",
        f"-X {_K8S_VERSION_PKG}.gitMajor=1",
        f"-X {_K8S_VERSION_PKG}.gitMinor={minor}",
        f"-X {_K8S_VERSION_PKG}.gitTreeState=clean",
    )


BUNDLES: tuple[Bundle, ...] = (
    Bundle(
        name="kubernetes",
        version=versions.KUBERNETES,
        packages=(
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-scheduler",
            "k8s.io/kubernetes/cmd/kubectl",
            "k8s.io/kubernetes/cmd/kubelet",
            "k8s.io/kubernetes/cmd/kube-proxy",
        ),
        ldflags=_kubernetes_ldflags(),
    ),
    Bundle(name="etcd", version=versions.ETCD, packages=("go.etcd.io/etcd/server/v3",)),
    Bundle(
        name="kwok",
        version=versions.KWOK,
        packages=("sigs.k8s.io/kwok/cmd/kwok",),
        ldflags=(f"-X sigs.k8s.io/kwok/pkg/consts.Version={versions.KWOK}",),
    ),
    Bundle(
        name="helm",
        version=versions.HELM,
        packages=("helm.sh/helm/v3/cmd/helm",),
        ldflags=(f"-X helm.sh/helm/v3/internal/version.version={versions.HELM}",),
    ),
    Bundle(
        name="containerd",
        version=versions.CONTAINERD,
        packages=(
            "github.com/containerd/containerd/v2/cmd/containerd",
            "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
            "github.com/containerd/containerd/v2/cmd/ctr",
        ),
        ldflags=(f"-X github.com/containerd/containerd/v2/version.Version={versions.CONTAINERD}",),
        # btrfs support needs cgo headers; the real node uses the overlayfs snapshotter.
        tags=("no_btrfs",),
    ),
)

# etcd's main package is its module root, go.etcd.io/etcd/server/v3, which go names "server".
_RENAMES = {"server": "etcd"}


def _go_version(toolchain: str = "") -> str:
    return subprocess.run(
        ["go", "env", "GOVERSION"], check=True, capture_output=True, text=True, env=go_env(toolchain)
    ).stdout.strip()


def _fingerprint(bundle: Bundle, go_version: str) -> str:
    digest = hashlib.sha256()
    digest.update((bundle.wrapper_dir / "go.sum").read_bytes())
    digest.update((bundle.wrapper_dir / "go.mod").read_bytes())
    digest.update(go_version.encode())
    digest.update("\0".join(bundle.ldflags).encode())
    if bundle.tags:
        digest.update(("\0tags:" + ",".join(bundle.tags)).encode())
    return digest.hexdigest()[:12]


def bundle_dir(bundle: Bundle, go_version: str | None = None) -> Path:
    fingerprint = _fingerprint(bundle, go_version or _go_version(bundle.toolchain))
    return cache_root() / "bin" / f"{bundle.name}-{bundle.version}-{fingerprint}"


def _go_output_name(package: str) -> str:
    """The file name `go build -o dir/` gives a main package (a /vN suffix is skipped)."""
    elements = package.rstrip("/").split("/")
    if len(elements) > 1 and elements[-1][:1] == "v" and elements[-1][1:].isdigit():
        return elements[-2]
    return elements[-1]


def _binary_name(package: str) -> str:
    name = _go_output_name(package)
    return _RENAMES.get(name, name)


def go_env(toolchain: str = "") -> dict[str, str]:
    env = dict(os.environ)
    # CGO off: static binaries that do not depend on the machine's libc headers.
    env.setdefault("CGO_ENABLED", "0")
    if toolchain:
        env["GOTOOLCHAIN"] = toolchain
    return env


def _heartbeat(stop: threading.Event, message: str, started: float, counter: list[int], total: int) -> None:
    while not stop.wait(15):
        elapsed = time.monotonic() - started
        if total:
            done = min(counter[0], total)
            log.info(
                "%s: %d/%d packages compiled (%d%%), %ds elapsed",
                message,
                done,
                total,
                100 * done // total,
                elapsed,
            )
        else:
            log.info("%s: %ds elapsed", message, elapsed)


def _run_with_progress(
    command: list[str], cwd: Path, what: str, total: int, log_path: Path, toolchain: str = ""
) -> None:
    started = time.monotonic()
    counter = [0]
    stop = threading.Event()
    ticker = threading.Thread(target=_heartbeat, args=(stop, what, started, counter, total), daemon=True)
    ticker.start()
    try:
        with log_path.open("a") as log_file:
            process = subprocess.Popen(
                command, cwd=cwd, env=go_env(toolchain), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            assert process.stdout is not None
            for line in process.stdout:
                log_file.write(line)
                # `go build -v` prints one line per package it compiles.
                if not line.startswith(("go: ", "#")):
                    counter[0] += 1
            code = process.wait()
    finally:
        stop.set()
        ticker.join()
    if code != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{what} failed (exit {code}); full log: {log_path}\n{tail}")


def _tag_flags(bundle: Bundle) -> list[str]:
    return ["-tags", ",".join(bundle.tags)] if bundle.tags else []


def _count_packages(bundle: Bundle, log_path: Path) -> int:
    with log_path.open("a") as log_file:
        listed = subprocess.run(
            [
                "go",
                "list",
                *_tag_flags(bundle),
                "-deps",
                "-f",
                "{{if not .Standard}}{{.ImportPath}}{{end}}",
                *bundle.packages,
            ],
            cwd=bundle.wrapper_dir,
            env=go_env(bundle.toolchain),
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    if listed.returncode != 0:
        raise RuntimeError(f"go list for {bundle.name} failed; see {log_path}")
    # Standard-library packages are left out: they mostly come from the build cache and are not
    # printed by `go build -v` when they do.
    return len(listed.stdout.split())


def build_bundle(bundle: Bundle) -> Path:
    """Return the directory holding the bundle's binaries, building it when absent."""
    go_version = _go_version(bundle.toolchain)
    target = bundle_dir(bundle, go_version)
    if all((target / _binary_name(p)).is_file() for p in bundle.packages):
        log.debug("reusing %s from %s", bundle.name, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log_path = target.parent / f"{target.name}.build.log"
    log_path.write_text("")
    started = time.monotonic()
    log.info("building %s %s from source (first time only; log: %s)", bundle.name, bundle.version, log_path)
    log.info("%s: downloading modules", bundle.name)
    _run_with_progress(
        ["go", "mod", "download", "-x"],
        bundle.wrapper_dir,
        f"downloading {bundle.name} modules",
        0,
        log_path,
        bundle.toolchain,
    )
    total = _count_packages(bundle, log_path)
    staging = Path(tempfile.mkdtemp(prefix=f".{bundle.name}-", dir=target.parent))
    try:
        command = ["go", "build", "-v", "-trimpath", *_tag_flags(bundle)]
        command += ["-ldflags", " ".join(("-s", "-w", *bundle.ldflags))]
        command += ["-o", str(staging) + "/", *bundle.packages]
        _run_with_progress(command, bundle.wrapper_dir, f"building {bundle.name}", total, log_path, bundle.toolchain)
        for package in bundle.packages:
            (staging / _go_output_name(package)).rename(staging / _binary_name(package))
        # Rename last so a killed build never leaves a directory that looks complete.
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("built %s in %ds -> %s", bundle.name, time.monotonic() - started, target)
    return target


def ensure_binaries(names: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Build (or reuse) every bundle and return binary name -> path."""
    paths: dict[str, Path] = {}
    for bundle in BUNDLES:
        if names is not None and bundle.name not in names:
            continue
        directory = build_bundle(bundle)
        for package in bundle.packages:
            paths[_binary_name(package)] = directory / _binary_name(package)
    return paths
