"""Return released local-SSD volumes to the pool, as local-static-provisioner does.

With ``kubernetes.io/no-provisioner`` nothing deletes a local volume once its claim is gone: the
PV sits ``Released`` (or ``Failed`` under reclaim ``Delete``) and can never bind again. The real
provisioner wipes the disk and recreates the PV; here the "disk" holds nothing, so clearing the
claim reference is the whole job, except for the real node's volumes (annotated
``ttsfleet.io/wipe-on-release``), whose directories are emptied first, as a fresh disk would be.
Runs as its own process next to the control plane.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from kubernetes import client, config

from ttsfleet.cache import cache_root
from ttsfleet.devcluster.addons import LOCAL_SSD_LABEL

WIPE_ANNOTATION = "ttsfleet.io/wipe-on-release"  # realnode.WIPE_ANNOTATION (no import cycle)


def wipe(path: Path) -> None:
    """Empty a released real-node volume; only directories under the clusters' own folders."""
    root = (cache_root() / "clusters").resolve()
    resolved = path.resolve()
    if root not in resolved.parents:
        raise ValueError(f"refusing to wipe {path}: not under {root}")
    if not resolved.is_dir():
        return
    for entry in resolved.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


log = logging.getLogger("ttsfleet.devcluster.pvrecycler")


def recycle_once(api: client.CoreV1Api) -> int:
    recycled = 0
    for volume in api.list_persistent_volume(label_selector=f"{LOCAL_SSD_LABEL}=true").items:
        phase = volume.status.phase if volume.status else None
        name = volume.metadata.name if volume.metadata else None
        if name is None or phase not in ("Released", "Failed"):
            continue
        annotations = (volume.metadata.annotations if volume.metadata else None) or {}
        local = volume.spec.local if volume.spec else None
        if annotations.get(WIPE_ANNOTATION) == "true" and local is not None:
            wipe(Path(local.path))
        api.patch_persistent_volume(name, [{"op": "remove", "path": "/spec/claimRef"}])
        log.info("recycled volume=%s previous_phase=%s", name, phase)
        recycled += 1
    return recycled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    api = client.CoreV1Api(config.new_client_from_config(config_file=args.kubeconfig))
    while True:
        try:
            recycle_once(api)
        except Exception as error:  # the API server may be restarting; try again next tick
            log.warning("recycle pass failed error=%r", error)
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
