"""A real Kubernetes control plane on loopback, from binaries built from upstream sources.

etcd, kube-apiserver (RBAC and admission on), kube-controller-manager (garbage collection,
StatefulSet, disruption, volume binding, ...), kube-scheduler, kwok simulating nodes, and a volume
recycler. Every component runs as its own process group with its log in ``<workdir>/logs``; the
pids are kept in ``<workdir>/state.json`` so ``down`` (or the next ``up``) can clean up after a
run that was killed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ttsfleet.cache import cache_root
from ttsfleet.devcluster import addons, binaries, pki, upstream
from ttsfleet.devcluster.waiting import wait_for

log = logging.getLogger("ttsfleet.devcluster")

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_CLUSTER_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"
_STOP_GRACE_SECONDS = 10


def default_workdir(name: str) -> Path:
    return cache_root() / "clusters" / name


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ClusterHandle:
    """What a running cluster offers to its users: a kubeconfig and a kubectl that uses it."""

    workdir: Path
    kubeconfig: Path
    kubectl_path: Path
    helm_path: Path | None = None
    logs_dir: Path = field(default_factory=Path)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = os.pathsep.join(
            [str(self.kubectl_path.parent)]
            + ([str(self.helm_path.parent)] if self.helm_path else [])
            + [env.get("PATH", "")]
        )
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed (exit {result.returncode}): {result.stderr.strip()}")
        return result

    def wait_for_owner_kind(self, api_version: str, kind: str, timeout: float = 60) -> None:
        """Wait until admission can resolve a freshly installed custom kind as an owner.

        OwnerReferencesPermissionEnforcement resolves ``blockOwnerDeletion`` owners through a
        discovery cache that kube-apiserver refreshes only every 30 s: until then, creating a
        child owned by the new kind is forbidden ("cannot find RESTMapping"). A server-side
        dry-run of such a child says when that window is over.
        """
        probe = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "owner-kind-probe",
                "namespace": "default",
                "ownerReferences": [
                    {
                        "apiVersion": api_version,
                        "kind": kind,
                        "name": "probe",
                        "uid": "00000000-0000-0000-0000-000000000000",
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
        }
        deadline = time.monotonic() + timeout
        while True:
            result = self.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False)
            # Any other answer (even a refusal for another reason) means the kind resolves.
            if "cannot find RESTMapping" not in result.stderr:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"admission does not resolve {kind} ({api_version}) as an owner: {result.stderr}")
            time.sleep(1)

    def apply_objects(self, objects: list[dict[str, Any]], field_manager: str = "ttsfleet-devcluster") -> None:
        self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={field_manager}",
            "-f",
            "-",
            input=yaml.safe_dump_all(objects),
        )


@dataclass
class _Process:
    name: str
    argv: list[str]


class LocalCluster:
    """Bring-up and tear-down of the loopback control plane in one work directory."""

    def __init__(self, workdir: Path, plan: addons.NodePlan | None = None, *, third_party_crds: bool = True) -> None:
        self.workdir = workdir
        self.plan = plan or addons.NodePlan()
        # KEDA's and the Prometheus Operator's CRDs; off for a cluster without those add-ons.
        self.third_party_crds = third_party_crds
        self.logs_dir = workdir / "logs"
        self.state_file = workdir / "state.json"

    # -- public -------------------------------------------------------------------------------

    def up(self) -> ClusterHandle:
        started = time.monotonic()
        self.down(quiet=True)
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.logs_dir.mkdir(parents=True)
        log.info("step 1/6: binaries (built from source on first use, cached in %s)", cache_root() / "bin")
        paths = binaries.ensure_binaries()
        handle = ClusterHandle(
            workdir=self.workdir,
            kubeconfig=self.workdir / "kubeconfig",
            kubectl_path=paths["kubectl"],
            helm_path=paths["helm"],
            logs_dir=self.logs_dir,
        )
        log.info("step 2/6: certificates")
        certs = pki.generate(self.workdir / "pki", SERVICE_CLUSTER_IP)
        ports = {name: free_port() for name in ("etcd", "etcd-peer", "apiserver", "cm", "scheduler", "kwok")}
        server = f"https://127.0.0.1:{ports['apiserver']}"
        for stem in ("admin", "controller-manager", "scheduler", "kwok"):
            self._write_kubeconfig(self.workdir / f"{stem}.kubeconfig", server, certs, stem)
        shutil.copy(self.workdir / "admin.kubeconfig", handle.kubeconfig)
        state: dict[str, Any] = {"pids": {}, "ports": ports, "kubeconfig": str(handle.kubeconfig)}
        try:
            log.info("step 3/6: etcd and kube-apiserver on %s", server)
            self._start(state, self._etcd(paths, ports))
            self._start(state, self._apiserver(paths, ports, certs))
            wait_for(
                lambda: handle.kubectl("get", "--raw=/readyz", check=False, timeout=10).stdout.strip() == "ok",
                what="kube-apiserver /readyz to answer ok",
                timeout=90,
                describe=lambda: self._log_tail("kube-apiserver"),
            )
            log.info("step 4/6: controller-manager, scheduler, kwok, volume recycler")
            self._start(state, self._controller_manager(paths, ports, certs))
            self._start(state, self._scheduler(paths, ports))
            self._start(state, self._kwok(paths, ports))
            self._start(state, self._pv_recycler())
            log.info("step 5/6: nodes, local-SSD storage, KEDA and Prometheus Operator CRDs")
            handle.apply_objects(addons.all_objects(self.plan))
            for crd in upstream.third_party_crds() if self.third_party_crds else []:
                handle.kubectl("apply", "--server-side", "-f", str(crd))
            log.info("step 6/6: waiting for nodes Ready, CRDs Established, default service account")
            self._wait_healthy(handle)
        except BaseException:
            log.error("cluster bring-up failed; component logs are in %s", self.logs_dir)
            self.down(quiet=True)
            raise
        log.info(
            "cluster up in %.0fs kubeconfig=%s logs=%s",
            time.monotonic() - started,
            handle.kubeconfig,
            self.logs_dir,
        )
        return handle

    def down(self, quiet: bool = False) -> None:
        """Stop every component recorded in the state file; logs stay for inspection."""
        if not self.state_file.exists():
            return
        state = json.loads(self.state_file.read_text())
        # Reverse start order: clients before the API server, the API server before etcd.
        for name, pid in reversed(list(state.get("pids", {}).items())):
            _stop_group(pid)
            if not quiet:
                log.info("stopped %s pid=%d", name, pid)
        self.state_file.unlink()

    def handle(self) -> ClusterHandle:
        """A handle on an already running cluster started by ``up``."""
        if not self.state_file.exists():
            raise RuntimeError(f"no cluster running in {self.workdir}; run `ttsfleet-cluster up` first")
        paths = binaries.ensure_binaries(("kubernetes", "helm"))
        return ClusterHandle(
            workdir=self.workdir,
            kubeconfig=self.workdir / "kubeconfig",
            kubectl_path=paths["kubectl"],
            helm_path=paths["helm"],
            logs_dir=self.logs_dir,
        )

    # -- components -----------------------------------------------------------------------------

    def _etcd(self, paths: dict[str, Path], ports: dict[str, int]) -> _Process:
        client_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        return _Process(
            "etcd",
            [
                str(paths["etcd"]),
                "--name=local",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=local={peer_url}",
                "--log-level=warn",
                # A throw-away test store: durability across power loss buys nothing here.
                "--unsafe-no-fsync",
            ],
        )

    def _apiserver(self, paths: dict[str, Path], ports: dict[str, int], certs: pki.Pki) -> _Process:
        return _Process(
            "kube-apiserver",
            [
                str(paths["kube-apiserver"]),
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={certs.apiserver_cert}",
                f"--tls-private-key-file={certs.apiserver_key}",
                f"--client-ca-file={certs.ca_cert}",
                f"--service-account-key-file={certs.service_account_pub}",
                f"--service-account-signing-key-file={certs.service_account_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                # On top of the default set (NamespaceLifecycle, ServiceAccount, DefaultStorageClass,
                # ResourceQuota, PodSecurity, webhooks, ValidatingAdmissionPolicy, ...).
                "--enable-admission-plugins=NodeRestriction,PodNodeSelector,PodTolerationRestriction,"
                # As on OpenShift and hardened clusters: setting blockOwnerDeletion needs finalizers RBAC.
                "OwnerReferencesPermissionEnforcement",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=0",
            ],
        )

    def _controller_manager(self, paths: dict[str, Path], ports: dict[str, int], certs: pki.Pki) -> _Process:
        kubeconfig = self.workdir / "controller-manager.kubeconfig"
        return _Process(
            "kube-controller-manager",
            [
                str(paths["kube-controller-manager"]),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['cm']}",
                "--leader-elect=false",
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={certs.service_account_key}",
                f"--root-ca-file={certs.ca_cert}",
                f"--cluster-signing-cert-file={certs.ca_cert}",
                f"--cluster-signing-key-file={certs.ca_key}",
                f"--cluster-cidr={POD_CIDR}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--v=0",
            ],
        )

    def _scheduler(self, paths: dict[str, Path], ports: dict[str, int]) -> _Process:
        kubeconfig = self.workdir / "scheduler.kubeconfig"
        return _Process(
            "kube-scheduler",
            [
                str(paths["kube-scheduler"]),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                "--leader-elect=false",
                "--v=0",
            ],
        )

    def _kwok(self, paths: dict[str, Path], ports: dict[str, int]) -> _Process:
        config = self.workdir / "kwok.yaml"
        config.write_text(yaml.safe_dump_all(upstream.kwok_stages()))
        return _Process(
            "kwok",
            [
                str(paths["kwok"]),
                f"--kubeconfig={self.workdir / 'kwok.kubeconfig'}",
                f"--config={config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={addons.KWOK_NODE_ANNOTATION}=fake",
                f"--server-address=127.0.0.1:{ports['kwok']}",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=40",
            ],
        )

    def _pv_recycler(self) -> _Process:
        return _Process(
            "pv-recycler",
            [
                sys.executable,
                "-m",
                "ttsfleet.devcluster.pvrecycler",
                f"--kubeconfig={self.workdir / 'admin.kubeconfig'}",
            ],
        )

    # -- helpers --------------------------------------------------------------------------------

    def _start(self, state: dict[str, Any], process: _Process) -> None:
        log_path = self.logs_dir / f"{process.name}.log"
        with log_path.open("ab") as log_file:
            # A session of its own: `ttsfleet-cluster up` returns while the cluster runs on,
            # and `down` can signal the whole group.
            child = subprocess.Popen(
                process.argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.workdir,
            )
        state["pids"][process.name] = child.pid
        self.state_file.write_text(json.dumps(state, indent=2))
        time.sleep(0.2)
        if child.poll() is not None:
            raise RuntimeError(
                f"{process.name} exited at start (code {child.returncode}):\n{self._log_tail(process.name)}"
            )

    def _log_tail(self, name: str, lines: int = 20) -> str:
        path = self.logs_dir / f"{name}.log"
        if not path.exists():
            return f"(no log at {path})"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _wait_healthy(self, handle: ClusterHandle) -> None:
        def nodes_ready() -> bool:
            out = handle.kubectl(
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{' '}{end}",
                check=False,
            ).stdout.split()
            return len(out) == len(self.plan.node_names()) and all(status == "True" for status in out)

        wait_for(
            nodes_ready,
            what=f"{len(self.plan.node_names())} kwok nodes to be Ready",
            timeout=60,
            describe=lambda: handle.kubectl("get", "nodes", "-o", "wide", check=False).stdout + self._log_tail("kwok"),
        )
        if self.third_party_crds:
            handle.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        wait_for(
            lambda: handle.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
            what="the default ServiceAccount (controller-manager's serviceaccount controller)",
            timeout=60,
            describe=lambda: self._log_tail("kube-controller-manager"),
        )

    @staticmethod
    def _write_kubeconfig(path: Path, server: str, certs: pki.Pki, stem: str) -> None:
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "ttsfleet-local",
                    "cluster": {"server": server, "certificate-authority": str(certs.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": stem,
                    "user": {
                        "client-certificate": str(certs.client_cert(stem)),
                        "client-key": str(certs.client_key(stem)),
                    },
                }
            ],
            "contexts": [{"name": "ttsfleet-local", "context": {"cluster": "ttsfleet-local", "user": stem}}],
            "current-context": "ttsfleet-local",
        }
        path.write_text(yaml.safe_dump(document))
        path.chmod(0o600)


def _stop_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        # Reap it if it is our own child, so it does not linger as a zombie that killpg still sees.
        with suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale(prefix: str, keep: int = 1) -> None:
    """Stop clusters named ``<prefix>-<pid>`` whose owning process died without ``down``.

    Each test session owns a cluster folder named after its pid, so concurrent sessions never
    stop each other's cluster. The newest ``keep`` dead folders stay for their logs.
    """
    root = cache_root() / "clusters"
    dead: list[Path] = []
    for folder in root.glob(f"{prefix}-*"):
        owner = folder.name.rsplit("-", 1)[1]
        if owner.isdigit() and not _pid_alive(int(owner)):
            LocalCluster(folder).down(quiet=True)
            dead.append(folder)
    dead.sort(key=lambda folder: folder.stat().st_mtime, reverse=True)
    for folder in dead[keep:]:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def running(
    workdir: Path, plan: addons.NodePlan | None = None, *, third_party_crds: bool = True
) -> Iterator[ClusterHandle]:
    cluster = LocalCluster(workdir, plan, third_party_crds=third_party_crds)
    handle = cluster.up()
    try:
        yield handle
    finally:
        cluster.down()
