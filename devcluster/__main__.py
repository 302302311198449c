"""``ttsfleet-cluster``: bring the local Kubernetes cluster up or down, or just build its binaries.

ttsfleet-cluster up [--name demo] [--backend local|kind] [--real-nodes 0|1]
ttsfleet-cluster status | kubeconfig | down | build
ttsfleet-cluster images [--only pause,operator,worker]   (build the real node's images offline)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ttsfleet import logs
from ttsfleet.devcluster import addons_build, binaries, hostnet, images
from ttsfleet.devcluster.cluster import LocalCluster, default_workdir
from ttsfleet.devcluster.kind import KindCluster

log = logging.getLogger("ttsfleet.devcluster")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ttsfleet-cluster", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("up", "down", "status", "kubeconfig", "build", "images"))
    parser.add_argument("--name", default="dev", help="cluster name; its files live in the cache dir")
    parser.add_argument(
        "--backend", choices=("local", "kind"), default=os.environ.get("TTSFLEET_CLUSTER_BACKEND", "local")
    )
    parser.add_argument(
        "--real-nodes",
        type=int,
        choices=(0, 1),
        default=None,
        help="real nodes (containerd + kubelet) beside the kwok ones; default 1 where the machine allows",
    )
    parser.add_argument("--only", default=",".join(images.DEFAULT_IMAGES), help="images to build (comma-separated)")
    args = parser.parse_args(argv)
    logs.configure()
    workdir = default_workdir(args.name)
    if args.command == "build":
        for name, path in binaries.ensure_binaries().items():
            print(f"{name}\t{path}")
        # The optional add-ons too (KEDA, Argo CD): `make test` runs their e2e modules.
        for name, path in addons_build.addon_binaries().items():
            print(f"{name}\t{path}")
        return 0
    if args.command == "images":
        reason = hostnet.unavailable_reason()
        if reason is not None:
            # `make test` runs this everywhere; without a real node the images have no use.
            log.warning("no real node can run on this machine (%s): images not built", reason)
            return 0
        for report in images.build_all(tuple(name for name in args.only.split(",") if name)):
            state = f"built {len(report.built_layers)} layer(s)" if report.built_layers else "cached"
            print(f"{report.ref}\t{report.size_bytes / 1e6:.0f} MB\t{report.seconds:.1f}s\t{state}")
        return 0
    if args.backend == "kind":
        kind = KindCluster(workdir, name=f"ttsfleet-{args.name}")
        if args.command == "up":
            print(kind.up().kubeconfig)
        elif args.command == "down":
            kind.down()
        else:
            print(workdir / "kubeconfig")
        return 0
    cluster = LocalCluster(workdir, real_nodes=args.real_nodes)
    if args.command == "up":
        handle = cluster.up()
        print(handle.kubectl("get", "nodes", "-L", "topology.kubernetes.io/zone").stdout)
        print(f"export KUBECONFIG={handle.kubeconfig}")
        print(f"export PATH={handle.kubectl_path.parent}:$PATH")
    elif args.command == "down":
        cluster.down()
    elif args.command == "kubeconfig":
        print(cluster.handle().kubeconfig)
    else:
        handle = cluster.handle()
        print(handle.kubectl("get", "--raw=/readyz?verbose").stdout)
        print(handle.kubectl("get", "nodes,storageclass,pv", "-L", "topology.kubernetes.io/zone").stdout)
        for name in handle.real_nodes:
            print(f"real node {name}; pods reach the API server at {handle.pod_api_server}")
        for image, ref in sorted(handle.images.items()):
            print(f"image {image}\t{ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
