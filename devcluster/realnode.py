"""The real node's configuration, as pure builders: containerd, kubelet, kube-proxy, the CNI
network, and the Kubernetes objects that go with a real node (RBAC for the kubelet's webhooks
and the API server's kubelet client, local volumes on real directories).

Machine-level effects (interfaces, iptables, cgroups, sysctls, mounts) live in ``hostnet``.
Only one real node runs per machine: kube-proxy's iptables chains and the addresses below are
machine-wide, so a second cluster gets kwok nodes only (``hostnet.claim`` decides).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsfleet.cache import cache_root
from ttsfleet.devcluster.addons import HOSTNAME_LABEL, LOCAL_SSD_CLASS, LOCAL_SSD_LABEL, ZONE_LABEL

# Addresses the cluster creates for itself; nothing here is routed off the machine.
NODE_IP = "10.243.0.1"  # the node's own address, a /32 on a veth the cluster makes
POD_SUBNET = "10.244.250.0/24"  # inside the cluster's POD_CIDR, away from kwok's fake pod IPs
POD_GATEWAY = "10.244.250.1"
BRIDGE = "tsf-br0"
NODE_VETH = "tsf-node0"
NODE_VETH_PEER = "tsf-node0p"
CNI_NETWORK = "ttsfleet-pods"
CGROUP_PARENT = "ttsfleet-realnode"  # top cgroup in every hierarchy: runtime + pods
RUN_DIR = Path("/run/ttsfleet-realnode")  # machine-wide: owner, saved sysctls, containerd state

NODE_KIND_LABEL = "ttsfleet.io/node-kind"
REAL_NODE_TAINT_KEY = "ttsfleet.io/real-node"
# Pods choose the real node with this toleration and a nodeSelector on NODE_KIND_LABEL=real;
# the taint keeps every other pod (the kwok-shaped GPU tests) on the simulated nodes.
REAL_NODE_TOLERATION = {"key": REAL_NODE_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
REAL_NODE_SELECTOR = {NODE_KIND_LABEL: "real"}
WIPE_ANNOTATION = "ttsfleet.io/wipe-on-release"
APISERVER_KUBELET_CLIENT = "kube-apiserver-kubelet-client"


@dataclass(frozen=True)
class RealNodeLayout:
    """Where one real node keeps its files; ``workdir`` is the cluster's work folder."""

    workdir: Path
    name: str = "real-node-0"
    zone: str = "zone-a"
    volumes: int = 4
    # An advertised capacity (the volumes are directories): as large as a fleet's default model
    # cache (spec.modelCache.size, 20Gi) so examples bind as written, like the kwok nodes' 100Gi.
    volume_size: str = "100Gi"

    @property
    def root(self) -> Path:
        return self.workdir / "realnode"

    @property
    def containerd_root(self) -> Path:
        # Outside the cluster's folder, like the binaries: imported images (the worker's is
        # 6 GB) survive `down` and are not imported again by the next `up`. One real node per
        # machine, so one root.
        return cache_root() / "realnode" / "containerd"

    @property
    def containerd_state(self) -> Path:
        # Short and on tmpfs: the socket path must stay under 108 bytes.
        return RUN_DIR / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_state / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_data_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def disks(self) -> Path:
        return self.root / "disks"

    def disk(self, slot: int) -> Path:
        return self.disks / f"ssd{slot}"


def containerd_config(layout: RealNodeLayout, sandbox_image: str) -> str:
    """containerd config v3 (TOML written by hand: a few tables and a dozen keys). The runc shim
    is found on containerd's PATH, which the caller sets."""

    def q(value: object) -> str:
        return json.dumps(str(value))

    cri_runtime = '[plugins."io.containerd.cri.v1.runtime"]'
    return "\n".join(
        [
            "version = 3",
            f"root = {q(layout.containerd_root / 'root')}",
            f"state = {q(layout.containerd_state)}",
            # Plugins that need kernel features or files this machine does not have.
            'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",'
            ' "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs",'
            ' "io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp"]',
            "[grpc]",
            f"  address = {q(layout.containerd_socket)}",
            "[ttrpc]",
            f"  address = {q(layout.containerd_state / 'containerd.sock.ttrpc')}",
            "[debug]",
            '  address = ""',
            '  level = "info"',
            "[metrics]",
            '  address = ""',
            '[plugins."io.containerd.internal.v1.opt"]',
            f"  path = {q(layout.containerd_root / 'opt')}",
            '[plugins."io.containerd.cri.v1.images"]',
            '  snapshotter = "overlayfs"',
            '[plugins."io.containerd.cri.v1.images".pinned_images]',
            # The pause image is imported at start and never pulled.
            f"  sandbox = {q(sandbox_image)}",
            cri_runtime,
            # Without it every sandbox fails: this machine lacks CAP_SYS_RESOURCE, so runc may
            # not lower oom_score_adj below its own.
            "  restrict_oom_score_adj = true",
            "  disable_apparmor = true",
            "  netns_mounts_under_state_dir = true",
            f"{cri_runtime[:-1]}.cni]",
            '  bin_dirs = ["/usr/lib/cni"]',
            f"  conf_dir = {q(layout.cni_conf_dir)}",
            "  max_conf_num = 1",
            f"{cri_runtime[:-1]}.containerd]",
            '  default_runtime_name = "runc"',
            f"{cri_runtime[:-1]}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"{cri_runtime[:-1]}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",
            '  BinaryName = "/usr/sbin/runc"',
            '[plugins."io.containerd.grpc.v1.cri"]',
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            "",
        ]
    )


def cni_config(layout: RealNodeLayout, service_cidr: str) -> dict[str, Any]:
    """bridge + host-local: pods get routes to their subnet, Services and the node, and no default route."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.cni_data_dir),
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                    "routes": [{"dst": service_cidr}, {"dst": f"{NODE_IP}/32"}],
                },
            },
            {"type": "loopback"},
        ],
    }


def kubelet_config(
    layout: RealNodeLayout, *, ca_file: Path, tls_cert: Path, tls_key: Path, port: int, healthz_port: int
) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # Kubernetes 1.36 refuses cgroup v1 unless told; this machine's cgroups are hybrid v1.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_PARENT}",
        # Without CAP_SYS_RESOURCE the kubelet may not lower its own oom_score_adj.
        "oomScoreAdj": 0,
        "failSwapOn": False,
        "protectKernelDefaults": False,
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(tls_cert),
        "tlsPrivateKeyFile": str(tls_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "imageServiceEndpoint": f"unix://{layout.containerd_socket}",
        "registerWithTaints": [{"key": REAL_NODE_TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
        # A shared build machine: evict only when really out of room, never garbage-collect
        # the images imported at start (nothing can pull them back).
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "resolvConf": "",
        "maxPods": 32,
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "5s",
        "volumePluginDir": str(layout.kubelet_root / "volume-plugins"),
        "podLogsDir": str(layout.root / "pod-logs"),
        "enforceNodeAllocatable": ["pods"],
    }


def kubelet_args(
    layout: RealNodeLayout, kubelet: Path, *, config: Path, kubeconfig: Path, labels: dict[str, str]
) -> list[str]:
    return [
        str(kubelet),
        f"--config={config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={layout.kubelet_root}",
        f"--cert-dir={layout.kubelet_root / 'pki'}",
        f"--hostname-override={layout.name}",
        f"--node-ip={NODE_IP}",
        "--node-labels=" + ",".join(f"{key}={value}" for key, value in sorted(labels.items())),
        "--v=1",
    ]


def node_labels(layout: RealNodeLayout) -> dict[str, str]:
    return {
        NODE_KIND_LABEL: "real",
        ZONE_LABEL: layout.zone,
        "topology.kubernetes.io/region": "local",
        LOCAL_SSD_LABEL: "true",
    }


def kube_proxy_config(kubeconfig: Path, cluster_cidr: str, metrics_port: int, healthz_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "clusterCIDR": cluster_cidr,
        # NodePorts only on the node's own address, never on the machine's uplink or loopback.
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        "conntrack": {"maxPerCore": 0, "min": 0},
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
    }


def rbac_objects() -> list[dict[str, Any]]:
    """Bindings a kubeadm cluster has for a kubelet that authorizes through the API server
    (kube-proxy's identity, system:kube-proxy, is bound by the API server's own defaults)."""
    return [
        {
            # The kubelet checks each caller (the API server proxying logs/exec) with
            # TokenReview/SubjectAccessReview, which the Node authorizer does not grant.
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "ttsfleet:nodes-auth-delegator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:auth-delegator",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "ttsfleet:apiserver-kubelet-client"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": APISERVER_KUBELET_CLIENT}],
        },
    ]


def local_volumes(layout: RealNodeLayout) -> list[dict[str, Any]]:
    """Local-SSD volumes on real directories, so a cache volume really holds files."""
    volumes = []
    for slot in range(layout.volumes):
        volumes.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": f"{LOCAL_SSD_CLASS}-{layout.name}-{slot}",
                    "labels": {LOCAL_SSD_LABEL: "true", HOSTNAME_LABEL: layout.name},
                    # The recycler empties the directory before the volume binds again.
                    "annotations": {WIPE_ANNOTATION: "true"},
                },
                "spec": {
                    "capacity": {"storage": layout.volume_size},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": LOCAL_SSD_CLASS,
                    "volumeMode": "Filesystem",
                    "local": {"path": str(layout.disk(slot))},
                    "nodeAffinity": {
                        "required": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": HOSTNAME_LABEL, "operator": "In", "values": [layout.name]}
                                    ]
                                }
                            ]
                        }
                    },
                },
            }
        )
    return volumes
