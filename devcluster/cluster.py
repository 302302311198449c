"""A real Kubernetes control plane on loopback, from binaries built from upstream sources.

etcd, kube-apiserver (RBAC and admission on), kube-controller-manager (garbage collection,
StatefulSet, disruption, volume binding, ...), kube-scheduler, kwok simulating nodes, and a volume
recycler; where the machine allows (root, runc, CNI plugins), one real node too: containerd,
kubelet and kube-proxy running real containers from images built offline (see ``realnode``).
Every component runs as its own process group with its log in ``<workdir>/logs``; the pids are
kept in ``<workdir>/state.json`` so ``down`` (or the next ``up``) can clean up after a run that
was killed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ttsfleet.cache import cache_root
from ttsfleet.devcluster import STATE_FILE, addons, binaries, hostnet, images, pki, realnode, upstream
from ttsfleet.devcluster.waiting import wait_for
from ttsfleet.ports import free_port

log = logging.getLogger("ttsfleet.devcluster")

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_CLUSTER_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"
_STOP_GRACE_SECONDS = 10
_REAL_NODE_BY_DEFAULT = True


def default_workdir(name: str) -> Path:
    return cache_root() / "clusters" / name


@dataclass
class ClusterHandle:
    """What a running cluster offers to its users: a kubeconfig and a kubectl that uses it."""

    workdir: Path
    kubeconfig: Path
    kubectl_path: Path
    helm_path: Path | None = None
    logs_dir: Path = field(default_factory=Path)
    # The real node(s), where pods run real containers; empty on a kwok-only cluster.
    real_nodes: list[str] = field(default_factory=list)
    # image name ("operator", "worker", "pause") -> reference imported into the real node.
    images: dict[str, str] = field(default_factory=dict)
    # How pods reach the API server without the `kubernetes` Service (host:port).
    pod_api_server: str = ""

    def component_pids(self) -> dict[str, int]:
        """The running components (etcd, kube-apiserver, ...), by name: the process group
        leaders that ``down`` stops."""
        state = json.loads((self.workdir / STATE_FILE).read_text())
        return {name: int(pid) for name, pid in state.get("pids", {}).items()}

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

    def wait_crds_established(self, *selection: str, timeout: float = 60) -> None:
        """Every CRD (or those ``selection`` names, e.g. ``-f file``) Established. ``kubectl wait``
        gives up at once on a CRD so new that the API server has not written its status yet
        (".status.conditions accessor error"; it failed a whole module that way): wait again."""
        what = list(selection) or ["crd", "--all"]
        deadline = time.monotonic() + timeout
        while True:
            left = max(1, int(deadline - time.monotonic()))
            result = self.kubectl(
                "wait", "--for=condition=Established", f"--timeout={left}s", *what, check=False, timeout=left + 30
            )
            if result.returncode == 0:
                return
            if "accessor error" not in result.stderr or time.monotonic() > deadline:
                raise RuntimeError(f"CRDs not Established ({' '.join(what)}): {result.stderr.strip()}")
            time.sleep(0.5)

    def create_namespace(self, name: str, timeout: float = 60) -> None:
        """Create ``name`` (if missing) and wait for its default ServiceAccount: pods are refused
        until it exists, and a controller that got refused backs off exponentially (the
        Kubernetes e2e framework waits for it too)."""
        self.kubectl("create", "namespace", name, check=False)
        wait_for(
            lambda: self.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
            what=f"ServiceAccount default in namespace {name}",
            timeout=timeout,
        )

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

    def __init__(
        self,
        workdir: Path,
        plan: addons.NodePlan | None = None,
        *,
        third_party_crds: bool = True,
        real_nodes: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.plan = plan or addons.NodePlan()
        # None: one real node wherever this machine can run it, none (with the reason logged)
        # elsewhere; TTSFLEET_REAL_NODES=0 or 1 sets it for every cluster (the e2e fixture's too).
        if real_nodes is None and os.environ.get("TTSFLEET_REAL_NODES") in ("0", "1"):
            real_nodes = int(os.environ["TTSFLEET_REAL_NODES"])
        self.real_nodes = real_nodes
        # KEDA's and the Prometheus Operator's CRDs; off for a cluster without those add-ons.
        self.third_party_crds = third_party_crds
        self.logs_dir = workdir / "logs"
        self.state_file = workdir / STATE_FILE

    # -- public -------------------------------------------------------------------------------

    def up(self) -> ClusterHandle:
        started = time.monotonic()
        self.down(quiet=True)
        real = self._want_real_node()
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.logs_dir.mkdir(parents=True)
        layout = realnode.RealNodeLayout(self.workdir) if real else None
        log.info("step 1/6: binaries (built from source on first use, cached in %s)", cache_root() / "bin")
        paths = binaries.ensure_binaries()
        handle = ClusterHandle(
            workdir=self.workdir,
            kubeconfig=self.workdir / "kubeconfig",
            kubectl_path=paths["kubectl"],
            helm_path=paths["helm"],
            logs_dir=self.logs_dir,
        )
        # With a real node the API server listens on the node's address (which pods reach)
        # instead of loopback; either way only this machine can connect.
        api_host = realnode.NODE_IP if layout else "127.0.0.1"
        log.info("step 2/6: certificates")
        certs = pki.generate(
            self.workdir / "pki",
            SERVICE_CLUSTER_IP,
            extra_ips=(realnode.NODE_IP,) if layout else (),
            nodes=(layout.name,) if layout else (),
            node_ip=realnode.NODE_IP if layout else None,
        )
        port_names = ["etcd", "etcd-peer", "apiserver", "cm", "scheduler", "kwok"]
        if layout:
            port_names += ["kubelet", "kubelet-healthz", "proxy-metrics", "proxy-healthz"]
        ports = {name: free_port() for name in port_names}
        server = f"https://{api_host}:{ports['apiserver']}"
        stems = ["admin", "controller-manager", "scheduler", "kwok"]
        if layout:
            stems += ["kube-proxy", pki.Pki.node_stem(layout.name)]
        for stem in stems:
            self._write_kubeconfig(self.workdir / f"{stem}.kubeconfig", server, certs, stem)
        shutil.copy(self.workdir / "admin.kubeconfig", handle.kubeconfig)
        state: dict[str, Any] = {"pids": {}, "ports": ports, "kubeconfig": str(handle.kubeconfig)}
        try:
            if layout:
                log.info("step 2/6: real node %s: cgroups, address %s, pod firewall", layout.name, realnode.NODE_IP)
                state["real_node"] = {"name": layout.name, "root": str(layout.root)}
                self._prepare_real_node(state, layout)
            log.info("step 3/6: etcd and kube-apiserver on %s", server)
            self._start(state, self._etcd(paths, ports))
            self._start(state, self._apiserver(paths, ports, certs, api_host, real=layout is not None))
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
            if layout:
                log.info("step 5/6: real node %s: containerd, images, kubelet, kube-proxy", layout.name)
                handle.apply_objects(realnode.rbac_objects() + realnode.local_volumes(layout))
                handle.images = self._start_real_node(state, layout, paths, ports, certs)
                handle.real_nodes = [layout.name]
                handle.pod_api_server = f"{api_host}:{ports['apiserver']}"
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
        """Stop every component recorded in the state file; logs stay for inspection.

        A real node is removed completely: its containers, mounts, cgroups, interfaces,
        iptables chains, and the sysctls it changed are restored.
        """
        if not self.state_file.exists():
            return
        state = json.loads(self.state_file.read_text())
        left: list[str] = []
        # Reverse start order: clients before the API server, the API server before etcd.
        for name, pid in reversed(list(state.get("pids", {}).items())):
            _stop_group(pid)
            if not quiet:
                log.info("stopped %s pid=%d", name, pid)
        if "real_node" in state and hostnet.owned_by(self.workdir):
            root = Path(state["real_node"]["root"])
            proxy = state["real_node"].get("kube_proxy")
            sysctls = hostnet.saved_sysctls()
            for action in hostnet.cleanup(root, Path(proxy) if proxy else None):
                if not quiet:
                    log.info("real node: %s", action)
            # Checked on every `down` (so at the end of every e2e session): the machine is shared.
            # Unless another cluster claimed the node in the meantime: the traces are then its own.
            if hostnet.current_owner() is None:
                left = hostnet.leftovers(root, sysctls)
        self.state_file.unlink()
        if left:
            message = f"`down` left the real node's traces on this machine: {', '.join(left)}"
            if quiet:  # inside `up`: the next attempt cleans again; do not hide the original error
                log.error("%s", message)
            else:
                raise RuntimeError(message)

    def handle(self) -> ClusterHandle:
        """A handle on an already running cluster started by ``up``."""
        if not self.state_file.exists():
            raise RuntimeError(f"no cluster running in {self.workdir}; run `ttsfleet-cluster up` first")
        paths = binaries.ensure_binaries(("kubernetes", "helm"))
        state = json.loads(self.state_file.read_text())
        real = state.get("real_node", {})
        return ClusterHandle(
            workdir=self.workdir,
            kubeconfig=self.workdir / "kubeconfig",
            kubectl_path=paths["kubectl"],
            helm_path=paths["helm"],
            logs_dir=self.logs_dir,
            real_nodes=[real["name"]] if real else [],
            images=dict(real.get("images", {})),
            pod_api_server=real.get("pod_api_server", ""),
        )

    # -- the real node ----------------------------------------------------------------------------

    def _want_real_node(self) -> bool:
        """Whether this ``up`` gets a real node; cleans what a crashed run left on the machine."""
        if self.real_nodes == 0 or (self.real_nodes is None and not _REAL_NODE_BY_DEFAULT):
            return False
        reason = hostnet.unavailable_reason()
        if reason is None:
            owner = hostnet.current_owner()
            if owner is not None and owner != self.workdir:
                reason = f"cluster {owner} holds this machine's real node (one per machine)"
        if reason is not None:
            if self.real_nodes:
                raise RuntimeError(f"cannot start a real node: {reason}")
            log.warning("no real node in this cluster: %s; kwok nodes only", reason)
            return False
        # Nothing alive holds the node: whatever is left from a killed run goes now.
        for action in hostnet.cleanup(realnode.RealNodeLayout(self.workdir).root, None):
            log.info("cleaned after an earlier run: %s", action)
        return True

    def _prepare_real_node(self, state: dict[str, Any], layout: realnode.RealNodeLayout) -> None:
        hostnet.claim(self.workdir)
        self.state_file.write_text(json.dumps(state, indent=2))
        hostnet.save_sysctls()
        hostnet.make_cgroups()
        hostnet.make_node_address()
        hostnet.route_services(SERVICE_CIDR)
        hostnet.install_firewall(SERVICE_CIDR)
        for slot in range(layout.volumes):
            layout.disk(slot).mkdir(parents=True, exist_ok=True)
        layout.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        (layout.cni_conf_dir / "10-ttsfleet.conflist").write_text(
            json.dumps(realnode.cni_config(layout, SERVICE_CIDR), indent=2)
        )

    def _start_real_node(
        self,
        state: dict[str, Any],
        layout: realnode.RealNodeLayout,
        paths: dict[str, Path],
        ports: dict[str, int],
        certs: pki.Pki,
    ) -> dict[str, str]:
        runtime = binaries.ensure_binaries(("containerd",))
        state["real_node"]["kube_proxy"] = str(paths["kube-proxy"])
        pause = images.pause_image()
        config = self.workdir / "containerd.toml"
        config.write_text(realnode.containerd_config(layout, pause.ref))
        env = dict(os.environ)
        # containerd finds its runc shim on PATH: the one built with it comes first.
        env["PATH"] = f"{runtime['containerd'].parent}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        self._start(
            state,
            _Process("containerd", [str(runtime["containerd"]), f"--config={config}"]),
            env=env,
            preexec=hostnet.enter_runtime_cgroup,
        )
        wait_for(
            lambda: (
                subprocess.run(
                    [str(runtime["ctr"]), "--address", str(layout.containerd_socket), "version"], capture_output=True
                ).returncode
                == 0
            ),
            what="containerd to answer on its socket",
            timeout=60,
            describe=lambda: self._log_tail("containerd"),
        )
        imported: dict[str, str] = {}
        for name in images.IMAGES:
            image = images.IMAGES[name]()
            if not images.buildable_now(image):
                log.info("image %s not built (run `ttsfleet-cluster images --only %s`); not imported", name, name)
                continue
            # Only seconds of work left (the project layer after a code change, the pause binary).
            images.build(image)
            seconds = images.import_image(image, runtime["ctr"], layout.containerd_socket)
            log.info("imported %s in %.1fs", image.ref, seconds)
            imported[name] = image.ref
        state["real_node"]["images"] = imported

        kubelet_config = self.workdir / "kubelet.yaml"
        kubelet_config.write_text(
            yaml.safe_dump(
                realnode.kubelet_config(
                    layout,
                    ca_file=certs.ca_cert,
                    tls_cert=certs.kubelet_serving_cert(layout.name),
                    tls_key=certs.kubelet_serving_key(layout.name),
                    port=ports["kubelet"],
                    healthz_port=ports["kubelet-healthz"],
                )
            )
        )
        self._start(
            state,
            _Process(
                "kubelet",
                realnode.kubelet_args(
                    layout,
                    paths["kubelet"],
                    config=kubelet_config,
                    kubeconfig=self.workdir / f"{pki.Pki.node_stem(layout.name)}.kubeconfig",
                    labels=realnode.node_labels(layout),
                ),
            ),
        )
        proxy_config = self.workdir / "kube-proxy.yaml"
        proxy_config.write_text(
            yaml.safe_dump(
                realnode.kube_proxy_config(
                    self.workdir / "kube-proxy.kubeconfig", POD_CIDR, ports["proxy-metrics"], ports["proxy-healthz"]
                )
            )
        )
        self._start(
            state,
            _Process(
                "kube-proxy",
                [str(paths["kube-proxy"]), f"--config={proxy_config}", f"--hostname-override={layout.name}", "--v=1"],
            ),
        )
        state["real_node"]["pod_api_server"] = f"{realnode.NODE_IP}:{ports['apiserver']}"
        self.state_file.write_text(json.dumps(state, indent=2))
        return imported

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

    def _apiserver(
        self, paths: dict[str, Path], ports: dict[str, int], certs: pki.Pki, host: str, *, real: bool
    ) -> _Process:
        extra: list[str] = []
        if real:
            extra = [
                # The kubelet's address is the node's InternalIP; its name does not resolve.
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={certs.client_cert('apiserver-kubelet-client')}",
                f"--kubelet-client-key={certs.client_key('apiserver-kubelet-client')}",
                f"--kubelet-certificate-authority={certs.ca_cert}",
            ]
        return _Process(
            "kube-apiserver",
            [
                str(paths["kube-apiserver"]),
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                f"--bind-address={host}",
                # The `kubernetes` Service's endpoint: pods reach the API server there.
                f"--advertise-address={host}",
                *extra,
                # Aggregated API servers (KEDA's metrics adapter) authenticate proxied requests by these.
                f"--requestheader-client-ca-file={certs.front_proxy_ca_cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={certs.front_proxy_client_cert}",
                f"--proxy-client-key-file={certs.front_proxy_client_key}",
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

    def _start(
        self,
        state: dict[str, Any],
        process: _Process,
        env: dict[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> None:
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
                env=env,
                preexec_fn=preexec,
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
            return len(out) == expected and all(status == "True" for status in out)

        real = json.loads(self.state_file.read_text()).get("real_node")
        expected = len(self.plan.node_names()) + (1 if real else 0)
        wait_for(
            nodes_ready,
            what=f"{len(self.plan.node_names())} kwok nodes" + (" and the real node" if real else "") + " to be Ready",
            timeout=60,
            describe=lambda: (
                handle.kubectl("get", "nodes", "-o", "wide", check=False).stdout
                + self._log_tail("kwok")
                + (self._log_tail("kubelet") if real else "")
            ),
        )
        if self.third_party_crds:
            handle.wait_crds_established()
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


def reap_stale(prefix: str, keep: int = 1) -> None:
    """Stop clusters named ``<prefix>-<pid>`` whose owning process died without ``down``.

    Each test session owns a cluster folder named after its pid, so concurrent sessions never
    stop each other's cluster. The newest ``keep`` dead folders stay for their logs.
    """
    root = cache_root() / "clusters"
    dead: list[Path] = []
    for folder in root.glob(f"{prefix}-*"):
        owner = folder.name.rsplit("-", 1)[1]
        if owner.isdigit() and not hostnet.pid_alive(int(owner)):
            LocalCluster(folder).down(quiet=True)
            dead.append(folder)
    dead.sort(key=lambda folder: folder.stat().st_mtime, reverse=True)
    for folder in dead[keep:]:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def running(
    workdir: Path,
    plan: addons.NodePlan | None = None,
    *,
    third_party_crds: bool = True,
    real_nodes: int | None = None,
) -> Iterator[ClusterHandle]:
    cluster = LocalCluster(workdir, plan, third_party_crds=third_party_crds, real_nodes=real_nodes)
    handle = cluster.up()
    try:
        yield handle
    finally:
        cluster.down()
