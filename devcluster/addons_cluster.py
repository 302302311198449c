"""A local cluster with optional add-ons: ``ClusterWithAddons(workdir, add_ons=("keda", ...))``.

The main e2e session's cluster runs without them (it must stay fast); tests of the real
autoscaling and GitOps paths bring up one of these per module. Each add-on runs as its own
process group with its log in ``<workdir>/logs`` and its pid in ``state.json``, so the base
class's ``down`` stops it (add-ons first: they started last).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ttsfleet.devcluster import addons_keda, addons_prometheus
from ttsfleet.devcluster.cluster import ClusterHandle, LocalCluster, _Process, _stop_group, free_port

log = logging.getLogger("ttsfleet.devcluster.addons")

ADD_ONS = ("prometheus", "keda", "argocd")


class ClusterWithAddons(LocalCluster):
    def __init__(self, workdir: Path, *, add_ons: tuple[str, ...] = (), **kwargs: Any) -> None:
        unknown = set(add_ons) - set(ADD_ONS)
        if unknown:
            raise ValueError(f"unknown add-ons {sorted(unknown)}; known: {ADD_ONS}")
        super().__init__(workdir, **kwargs)
        self.add_ons = add_ons

    def up(self) -> ClusterHandle:
        # Build before the control plane starts: a cold build takes minutes.
        keda_bins = addons_keda.binaries() if "keda" in self.add_ons else None
        if "argocd" in self.add_ons:
            from ttsfleet.devcluster import addons_argocd

            addons_argocd.prepare()
        handle = super().up()
        try:
            self.start_add_ons(handle, keda_bins)
        except BaseException:
            log.error("add-on start failed; logs are in %s", self.logs_dir)
            self.down(quiet=True)
            raise
        return handle

    def start_add_ons(self, handle: ClusterHandle, keda_bins: tuple[Path, Path] | None = None) -> None:
        """Start the add-ons on this (already running) cluster; their pids join its state file."""
        if "keda" in self.add_ons and keda_bins is None:
            keda_bins = addons_keda.binaries()
        started = time.monotonic()
        state: dict[str, Any] = json.loads(self.state_file.read_text())
        info: dict[str, Any] = state.setdefault("addons", {})
        if "prometheus" in self.add_ons:
            port = free_port()
            config = addons_prometheus.write_config(self.workdir / "prometheus", port)
            binary = addons_prometheus.binary()
            self._start(
                state,
                _Process("prometheus", addons_prometheus.argv(binary, config, self.workdir / "prometheus-data", port)),
            )
            # The Prometheus Operator's part: scrape jobs from the cluster's ServiceMonitors.
            sync = addons_prometheus.sync_argv(handle.kubeconfig, config, state["pids"]["prometheus"], port)
            self._start(state, _Process("prometheus-config", sync))
            info["prometheus"] = {"url": addons_prometheus.url(port)}
        if keda_bins is not None:
            operator_bin, adapter_bin = keda_bins
            certs = addons_keda.write_certs(self.workdir / "pki" / "keda")
            ports = addons_keda.KedaPorts(*(free_port() for _ in range(5)))
            for crd in addons_keda.crds():
                handle.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
            handle.wait_crds_established()
            handle.apply_objects(addons_keda.aggregation_objects(certs, ports))
            env = {**handle.env, **addons_keda.env(handle.kubeconfig)}
            self._start(state, _Process("keda-operator", addons_keda.operator_argv(operator_bin, certs, ports)), env)
            self._start(
                state,
                _Process("keda-adapter", addons_keda.adapter_argv(adapter_bin, certs, handle.kubeconfig, ports)),
                env,
            )
            addons_keda.wait_available(handle.kubectl)
            info["keda"] = {"grpc": ports.grpc}
        if "argocd" in self.add_ons:
            from ttsfleet.devcluster import addons_argocd

            info["argocd"] = addons_argocd.start(self, state, handle)
        self.state_file.write_text(json.dumps(state, indent=2))
        log.info("add-ons %s up in %.1fs", ",".join(self.add_ons), time.monotonic() - started)

    def stop_add_ons(self, handle: ClusterHandle, keep: set[str]) -> None:
        """Stop every process started after ``keep`` (the cluster's own); used by ``attached``."""
        if "keda" in self.add_ons:
            handle.kubectl("delete", "apiservice", addons_keda.APISERVICE, "--ignore-not-found", check=False)
        state: dict[str, Any] = json.loads(self.state_file.read_text())
        for name, pid in reversed([(n, p) for n, p in state["pids"].items() if n not in keep]):
            _stop_group(pid)
            del state["pids"][name]
            log.info("stopped add-on process %s pid=%d", name, pid)
        state.pop("addons", None)
        self.state_file.write_text(json.dumps(state, indent=2))

    def addon_info(self) -> dict[str, Any]:
        info: dict[str, Any] = json.loads(self.state_file.read_text()).get("addons", {})
        return info


@contextmanager
def attached(handle: ClusterHandle, add_ons: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Add-ons on a cluster that is already running, e.g. the e2e session's (the one holding the
    machine's only real node): started here, stopped on exit, the cluster left as it was (the
    external-metrics APIService removed with KEDA's adapter, so discovery stays whole)."""
    cluster = ClusterWithAddons(handle.workdir, add_ons=add_ons)
    before = set(json.loads(cluster.state_file.read_text())["pids"])
    try:
        cluster.start_add_ons(handle)
        yield cluster.addon_info()
    finally:
        cluster.stop_add_ons(handle, keep=before)


@contextmanager
def running(workdir: Path, add_ons: tuple[str, ...], **kwargs: Any) -> Iterator[tuple[ClusterHandle, dict[str, Any]]]:
    cluster = ClusterWithAddons(workdir, add_ons=add_ons, **kwargs)
    handle = cluster.up()
    try:
        yield handle, cluster.addon_info()
    finally:
        cluster.down()
