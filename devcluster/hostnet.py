"""Machine-level set-up and tear-down for the real node: who holds it, its cgroups, its address,
the pod firewall, the sysctls it changes, and everything its processes leave behind.

Everything here is keyed by fixed names (``realnode.BRIDGE``, ``CGROUP_PARENT``, ...) rather
than by a state file, so ``cleanup`` also mends what a killed run left: the next ``up`` calls it
first. Saved sysctl values live in ``RUN_DIR`` (tmpfs): a reboot resets both together.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from ttsfleet.cache import cache_root
from ttsfleet.devcluster import STATE_FILE
from ttsfleet.devcluster.realnode import (
    BRIDGE,
    CGROUP_PARENT,
    NODE_IP,
    NODE_VETH,
    NODE_VETH_PEER,
    POD_SUBNET,
    RUN_DIR,
)

log = logging.getLogger("ttsfleet.devcluster.realnode")

CGROUP_ROOT = Path("/sys/fs/cgroup")
FIREWALL_CHAIN = "TTSFLEET-PODS"
OWNER_FILE = RUN_DIR / "owner"
SYSCTL_FILE = RUN_DIR / "sysctl.json"
# Every sysctl the node's components may change (kubelet's kernel defaults, the CNI gateway's
# forwarding, kube-proxy's localnet routing); restored on cleanup.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)


# -- can it run, and who holds it -----------------------------------------------------------


def unavailable_reason() -> str | None:
    """Why this machine cannot run a real node, or None when it can."""
    if os.geteuid() != 0:
        return "not root (containerd, the kubelet and the pod network need root)"
    missing = [tool for tool in ("runc", "iptables", "ip", "conntrack") if shutil.which(tool) is None]
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("containernetworking-plugins")
    if missing:
        return f"missing {', '.join(missing)} (run devcluster/system-packages.sh, which `make` runs)"
    if not (CGROUP_ROOT / "memory").is_dir() and not (CGROUP_ROOT / "cgroup.controllers").exists():
        return "no memory cgroup"
    return None


def current_owner() -> Path | None:
    """The cluster work folder holding this machine's real node, if its cluster still runs."""
    try:
        owner = Path(OWNER_FILE.read_text().strip())
    except FileNotFoundError:
        return None
    state = owner / STATE_FILE
    if not state.exists():
        return None
    pids = json.loads(state.read_text()).get("pids", {})
    if any(pid_alive(pid) for pid in pids.values()):
        return owner
    return None


def claim(workdir: Path) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    OWNER_FILE.write_text(str(workdir))


def owned_by(workdir: Path) -> bool:
    try:
        return Path(OWNER_FILE.read_text().strip()) == workdir
    except FileNotFoundError:
        return False


# -- set-up ---------------------------------------------------------------------------------


def save_sysctls() -> None:
    """Remember the values before anything changes them (only the first time since the last cleanup)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    if SYSCTL_FILE.exists():
        return
    saved = {}
    for name in SYSCTLS:
        path = Path("/proc/sys") / name
        if path.exists():
            saved[name] = path.read_text().strip()
    SYSCTL_FILE.write_text(json.dumps(saved, indent=2))


def make_cgroups() -> None:
    """One parent cgroup per hierarchy: containerd, its shims, the containers and the kubelet's
    pods all live below it, so cleanup finds every process the node ever started."""
    for hierarchy in _hierarchies():
        path = hierarchy / CGROUP_PARENT
        path.mkdir(exist_ok=True)
        if (hierarchy / "cpuset.cpus").exists():
            # A v1 cpuset child starts empty and accepts no task until given cpus and mems.
            for name in ("cpuset.cpus", "cpuset.mems"):
                (path / name).write_text((hierarchy / name).read_text())
        (path / "runtime").mkdir(exist_ok=True)
        if (hierarchy / "cpuset.cpus").exists():
            for name in ("cpuset.cpus", "cpuset.mems"):
                (path / "runtime" / name).write_text((path / name).read_text())


def enter_runtime_cgroup() -> None:
    """For ``preexec_fn``: move the calling (child) process into the node's runtime cgroup."""
    pid = str(os.getpid())
    for hierarchy in _hierarchies():
        procs = hierarchy / CGROUP_PARENT / "runtime" / "cgroup.procs"
        if procs.exists():
            procs.write_text(pid)


def make_node_address() -> None:
    """A veth pair whose host end carries the node's /32: an address of the cluster's own that
    the kubelet accepts (it refuses loopback) and that never leads off the machine."""
    _ip("link", "add", NODE_VETH, "type", "veth", "peer", "name", NODE_VETH_PEER)
    _ip("addr", "add", f"{NODE_IP}/32", "dev", NODE_VETH)
    _ip("link", "set", NODE_VETH, "up")
    _ip("link", "set", NODE_VETH_PEER, "up")


def route_services(service_cidr: str) -> None:
    """The host reaches ClusterIPs through the node's veth: an unknown Service address must
    not leave through the machine's default route."""
    _ip("route", "replace", service_cidr, "dev", NODE_VETH, "src", NODE_IP)


def install_firewall(service_cidr: str) -> None:
    """Pods may only talk to pods, Services and the node: everything else from the pod subnet
    is dropped before routing (mangle PREROUTING sees it before kube-proxy's DNAT)."""
    for rule in (
        ["-N", FIREWALL_CHAIN],
        ["-A", FIREWALL_CHAIN, "-d", POD_SUBNET, "-j", "RETURN"],
        ["-A", FIREWALL_CHAIN, "-d", service_cidr, "-j", "RETURN"],
        ["-A", FIREWALL_CHAIN, "-d", f"{NODE_IP}/32", "-j", "RETURN"],
        ["-A", FIREWALL_CHAIN, "-j", "DROP"],
        ["-I", "PREROUTING", "1", "-s", POD_SUBNET, "-j", FIREWALL_CHAIN],
    ):
        _run(["iptables", "-w", "-t", "mangle", *rule])


# -- tear-down ------------------------------------------------------------------------------


def cleanup(layout_root: Path | None, kube_proxy: Path | None) -> list[str]:
    """Remove everything a real node made; safe to call when nothing is there. Returns what it did."""
    done: list[str] = []
    killed = kill_cgroup_processes()
    if killed:
        done.append(f"killed {killed} node processes")
    if kube_proxy is not None and kube_proxy.exists():
        for flag in ("--cleanup",):
            subprocess.run([str(kube_proxy), flag, "--v=0"], capture_output=True, timeout=60)
        done.append("kube-proxy --cleanup")
    done += _remove_kube_chains()
    done += _remove_firewall()
    roots = [RUN_DIR, cache_root() / "realnode"] + ([layout_root] if layout_root else [])
    # A killed run's node may live in another cluster's folder: its mounts go too.
    with contextlib.suppress(FileNotFoundError):
        roots.append(Path(OWNER_FILE.read_text().strip()) / "realnode")
    unmounted = unmount_under(roots)
    if unmounted:
        done.append(f"unmounted {unmounted} mounts")
    for name in (NODE_VETH, BRIDGE):
        if Path("/sys/class/net", name).exists():
            _ip("link", "delete", name)
            done.append(f"deleted interface {name}")
    removed = remove_cgroups()
    if removed:
        done.append(f"removed {removed} cgroups")
    if SYSCTL_FILE.exists():
        for name, value in json.loads(SYSCTL_FILE.read_text()).items():
            path = Path("/proc/sys") / name
            if path.exists() and path.read_text().strip() != value:
                path.write_text(value)
                done.append(f"restored {name.replace('/', '.')}={value}")
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    return done


def kill_cgroup_processes() -> int:
    """SIGKILL every process below the node's cgroup (containerd, shims, containers), until none is left."""
    killed = 0
    for _ in range(50):
        pids = set(_cgroup_pids())
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    log.warning("processes still in cgroup %s: %s", CGROUP_PARENT, sorted(_cgroup_pids()))
    return killed


def saved_sysctls() -> dict[str, str]:
    """The values the node's first start found (empty when no node changed anything)."""
    try:
        saved: dict[str, str] = json.loads(SYSCTL_FILE.read_text())
    except FileNotFoundError:
        return {}
    return saved


def leftovers(layout_root: Path, sysctls: dict[str, str]) -> list[str]:
    """Every trace of a real node still on the machine; ``sysctls`` are the values to expect."""
    found = [f"process {pid}" for pid in leftover_processes()]
    found += [f"interface {name}" for name in leftover_interfaces()]
    found += [f"iptables chain {chain}" for chain in leftover_chains()]
    found += [f"cgroup {path}" for path in leftover_cgroups()]
    found += [f"mount {path}" for path in mounts_under([RUN_DIR, cache_root() / "realnode", layout_root])]
    for name, value in sysctls.items():
        path = Path("/proc/sys") / name
        if path.exists() and path.read_text().strip() != value:
            found.append(f"sysctl {name.replace('/', '.')}={path.read_text().strip()} (was {value})")
    if RUN_DIR.exists():
        found.append(f"directory {RUN_DIR}")
    return found


def leftover_processes() -> list[int]:
    return sorted(set(_cgroup_pids()))


def leftover_cgroups() -> list[Path]:
    return [hierarchy / CGROUP_PARENT for hierarchy in _hierarchies() if (hierarchy / CGROUP_PARENT).exists()]


def leftover_interfaces() -> list[str]:
    return [name for name in (NODE_VETH, NODE_VETH_PEER, BRIDGE) if Path("/sys/class/net", name).exists()]


def leftover_chains() -> list[str]:
    found = []
    for binary in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            result = subprocess.run([binary, "-w", "-t", table, "-S"], capture_output=True, text=True)
            for line in result.stdout.splitlines():
                if line.startswith("-N ") and (line[3:].startswith("KUBE-") or line[3:] == FIREWALL_CHAIN):
                    found.append(f"{binary}/{table}/{line[3:]}")
    return found


def mounts_under(roots: Iterable[Path]) -> list[str]:
    prefixes = [str(root).rstrip("/") + "/" for root in roots] + [str(root) for root in roots]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].replace("\\040", " ")
        if any(mount_point == p or mount_point.startswith(p) for p in prefixes):
            found.append(mount_point)
    return found


def unmount_under(roots: Iterable[Path]) -> int:
    roots = list(roots)
    count = 0
    for _ in range(5):
        mounts = sorted(set(mounts_under(roots)), key=len, reverse=True)
        if not mounts:
            break
        for mount_point in mounts:
            if subprocess.run(["umount", mount_point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mount_point], capture_output=True)
            count += 1
    return count


def remove_cgroups() -> int:
    removed = 0
    for hierarchy in _hierarchies():
        top = hierarchy / CGROUP_PARENT
        if not top.exists():
            continue
        # Deepest first: a cgroup directory can only be removed once it has no children.
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                directory.rmdir()
                removed += 1
            except OSError:
                pass
        try:
            top.rmdir()
            removed += 1
        except OSError as error:
            log.warning("could not remove cgroup %s: %s", top, error)
    return removed


# -- helpers ---------------------------------------------------------------------------------


def _hierarchies() -> list[Path]:
    if not CGROUP_ROOT.is_dir():
        return []
    found = []
    for entry in sorted(CGROUP_ROOT.iterdir()):
        # Skip the symlinks (cpu -> cpu,cpuacct) so each hierarchy is handled once.
        if entry.is_dir() and not entry.is_symlink() and (entry / "cgroup.procs").exists():
            found.append(entry)
    return found


def _cgroup_pids() -> list[int]:
    pids: list[int] = []
    for hierarchy in _hierarchies():
        top = hierarchy / CGROUP_PARENT
        if not top.exists():
            continue
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):  # the cgroup may vanish while we read it
                pids += [int(pid) for pid in procs.read_text().split()]
    return pids


def _remove_kube_chains() -> list[str]:
    """What ``kube-proxy --cleanup`` leaves (the kubelet's own KUBE-FIREWALL, KUBE-KUBELET-CANARY...)."""
    done = []
    for binary in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = subprocess.run([binary, "-w", "-t", table, "-S"], capture_output=True, text=True).stdout
            chains = [line[3:] for line in rules.splitlines() if line.startswith("-N KUBE-")]
            if not chains:
                continue
            for line in rules.splitlines():
                if line.startswith("-A ") and "-j KUBE-" in line and not line.split()[1].startswith("KUBE-"):
                    subprocess.run([binary, "-w", "-t", table, "-D", *line.split()[1:]], capture_output=True)
            for chain in chains:
                subprocess.run([binary, "-w", "-t", table, "-F", chain], capture_output=True)
            for chain in chains:
                subprocess.run([binary, "-w", "-t", table, "-X", chain], capture_output=True)
            done.append(f"removed {len(chains)} {binary} {table} KUBE-* chains")
    return done


def _remove_firewall() -> list[str]:
    check = subprocess.run(["iptables", "-w", "-t", "mangle", "-S", FIREWALL_CHAIN], capture_output=True)
    if check.returncode != 0:
        return []
    while (
        subprocess.run(
            ["iptables", "-w", "-t", "mangle", "-D", "PREROUTING", "-s", POD_SUBNET, "-j", FIREWALL_CHAIN],
            capture_output=True,
        ).returncode
        == 0
    ):
        pass
    _run(["iptables", "-w", "-t", "mangle", "-F", FIREWALL_CHAIN])
    _run(["iptables", "-w", "-t", "mangle", "-X", FIREWALL_CHAIN])
    return [f"removed iptables chain {FIREWALL_CHAIN}"]


def _ip(*args: str) -> None:
    _run(["ip", *args])


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
