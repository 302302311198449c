"""The same cluster on ``kind`` where a Docker engine exists (a laptop, a hosted CI).

kind brings real nodes, so only our additions are applied: the local-SSD class with volumes on
each kind node, zone labels, an advertised ``nvidia.com/gpu`` capacity so GPU fleets schedule,
and the third-party CRDs.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ttsfleet.devcluster import addons, binaries, upstream
from ttsfleet.devcluster.cluster import ClusterHandle

log = logging.getLogger("ttsfleet.devcluster.kind")


class KindCluster:
    def __init__(self, workdir: Path, name: str = "ttsfleet", plan: addons.NodePlan | None = None) -> None:
        self.workdir = workdir
        self.name = name
        self.plan = plan or addons.NodePlan()

    def up(self) -> ClusterHandle:
        kind = shutil.which("kind")
        if kind is None:
            raise RuntimeError("backend 'kind' needs the kind binary and a Docker engine; use backend 'local'")
        self.workdir.mkdir(parents=True, exist_ok=True)
        kubeconfig = self.workdir / "kubeconfig"
        log.info("creating kind cluster name=%s", self.name)
        subprocess.run(
            [
                kind,
                "create",
                "cluster",
                "--name",
                self.name,
                "--kubeconfig",
                str(kubeconfig),
                "--wait",
                "180s",
            ],
            check=True,
        )
        paths = binaries.ensure_binaries(("kubernetes", "helm"))
        handle = ClusterHandle(self.workdir, kubeconfig, paths["kubectl"], paths["helm"], self.workdir)
        nodes = json.loads(handle.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        objects: list[dict[str, Any]] = [addons.storage_class()]
        for index, node in enumerate(nodes):
            name = node["metadata"]["name"]
            handle.kubectl("label", "node", name, "--overwrite", f"{addons.ZONE_LABEL}={self.plan.zone_of(index)}")
            handle.kubectl(
                "patch",
                "node",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps({"status": {"capacity": {addons.GPU_RESOURCE: str(self.plan.gpus)}}}),
            )
            # kind nodes are containers: the local volumes' directories must exist inside them.
            slots = [f"/mnt/disks/ssd{slot}" for slot in range(self.plan.volumes_per_node)]
            subprocess.run(["docker", "exec", name, "mkdir", "-p", *slots], check=True)
            objects += [addons.local_volume(self.plan, name, slot) for slot in range(self.plan.volumes_per_node)]
        handle.apply_objects(objects)
        for crd in upstream.third_party_crds():
            handle.kubectl("apply", "--server-side", "-f", str(crd))
        handle.wait_crds_established()
        return handle

    def down(self) -> None:
        kind = shutil.which("kind")
        if kind is not None:
            subprocess.run([kind, "delete", "cluster", "--name", self.name], check=False)
