"""Where a fleet runs on the local cluster's real node: a namespace of its own with the in-cluster
model server, and the operator pod installed by the Helm chart; removed again afterwards.

Every real-pod suite starts from this stage, then applies its example (``real_fleet.adapt``)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import yaml

from ttsfleet.devcluster import hostnet
from ttsfleet.devcluster.cluster import ClusterHandle
from ttsfleet.realpods import model_server, operator_pod, real_fleet

log = logging.getLogger("ttsfleet.realpods")

IMAGES = ("operator", "worker")


@dataclass(frozen=True)
class Stage:
    cluster: ClusterHandle
    namespace: str
    source: str  # the model server's URL, for spec.model.source
    operator: operator_pod.OperatorPod

    def adapt(self, example: str, **model: Any) -> dict[str, Any]:
        """``examples/<example>`` for the real node, served from this stage's model server."""
        return real_fleet.adapt(
            real_fleet.load_example(example),
            image=self.cluster.images["worker"],
            source=model.get("source", self.source),
            revision=model_server.REVISION,
            sha256=model.get("sha256"),
        )

    def apply(self, body: dict[str, Any]) -> None:
        self.cluster.kubectl("apply", "-n", self.namespace, "-f", "-", input=yaml.safe_dump(body))

    def describe(self) -> str:
        return f"{real_fleet.describe(self.cluster, self.namespace)}\noperator:\n{self.operator.logs(self.cluster)}"


def unavailable(cluster: ClusterHandle) -> str | None:
    """Why this cluster has no real node for fleets (this machine cannot run one, or another
    cluster holds it), or None when it has one."""
    if not cluster.real_nodes:
        return f"this cluster has no real node: {hostnet.unavailable_reason() or 'held by another cluster'}"
    return None


@contextmanager
def staged(cluster: ClusterHandle, prefix: str, release: str) -> Iterator[Stage]:
    """A fresh namespace ``<prefix>-<random>`` with the model server, and the operator installed as
    chart release ``release`` in ``<release>-system``. A real node without the project's images
    is a broken setup, not a reason to skip: it raises."""
    missing = sorted(set(IMAGES) - set(cluster.images))
    if missing:
        raise RuntimeError(f"images not imported into the real node: {missing}; run `ttsfleet-cluster images`")
    namespace = f"{prefix}-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(namespace)
    operator: operator_pod.OperatorPod | None = None
    try:
        started = time.monotonic()
        source = model_server.start(cluster, namespace)
        log.info("model server serving at %s after %.1fs", source, time.monotonic() - started)
        started = time.monotonic()
        operator = operator_pod.install(cluster, release, f"{release}-system")
        log.info("operator pod of release %s Ready after %.1fs", release, time.monotonic() - started)
        yield Stage(cluster, namespace, source, operator)
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        if operator is not None:
            operator_pod.uninstall(cluster, operator)
