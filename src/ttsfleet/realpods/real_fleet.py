"""An example fleet adapted for the local cluster's real node: what changes, and only that.

- ``spec.image``: the worker image imported into the real node (examples name a registry image);
  ``imagePullPolicy: Never`` since nothing may be pulled.
- ``spec.model``: the in-cluster model server (``model_server``) over plain http, so
  ``allowInsecureHTTP`` (the cluster has no DNS and no certificates for it).
- the real node's convention: a toleration of its taint and a nodeSelector on its label
  (kwok nodes run no containers), and the real node's local-SSD class is the default already.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ttsfleet.devcluster import realnode
from ttsfleet.devcluster.cluster import ClusterHandle

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"


def adapt(
    example: dict[str, Any], *, image: str, source: str, revision: str, sha256: str | None = None
) -> dict[str, Any]:
    fleet = copy.deepcopy(example)
    spec = fleet["spec"]
    spec["image"] = image
    spec["imagePullPolicy"] = "Never"
    model = dict(spec.get("model", {}))
    model.update({"source": source, "revision": revision, "allowInsecureHTTP": source.startswith("http://")})
    if sha256 is not None:
        model["sha256"] = sha256
    else:
        model.pop("sha256", None)
    spec["model"] = model
    spec["tolerations"] = [*spec.get("tolerations", []), realnode.REAL_NODE_TOLERATION]
    spec["nodeSelector"] = {**spec.get("nodeSelector", {}), **realnode.REAL_NODE_SELECTOR}
    return fleet


def load_example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return document


def get(cluster: ClusterHandle, namespace: str, *args: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-n", namespace, "-o", "json").stdout)
    return body


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in body.get("status", {}).get("conditions", []):
        if item.get("type") == kind:
            return dict(item)
    return {}


def describe(cluster: ClusterHandle, namespace: str) -> str:
    state = cluster.kubectl("get", "ttsd,sts,pods,pvc,endpoints", "-n", namespace, "-o", "wide", check=False).stdout
    fleets = cluster.kubectl("get", "ttsd", "-n", namespace, "-o", "jsonpath={.items[*].status}", check=False).stdout
    events = cluster.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout
    return f"{state}\nstatus: {fleets}\n{events[-2500:]}"


# The real node's CPUs, and what runs there beside a fleet: the operator pod (100m) and the model
# server (100m: a pod is scheduled on the larger of its init and app requests), plus room to spare.
REAL_NODE_MILLICPU = 2000
BESIDE_FLEET_MILLICPU = 300


def cpu_share(pods: int) -> str:
    """A worker CPU request with which ``pods`` fleet pods fit on the real node beside the operator
    and the model server (multiples of 50m). A test adaptation, not a change an example needs: a
    real CPU node has more than two cores. No CPU limit is set, so a pod still uses what is free."""
    share = (REAL_NODE_MILLICPU - BESIDE_FLEET_MILLICPU) // pods
    return f"{share - share % 50}m"


@dataclass(frozen=True)
class StartTimes:
    """One pod's start, from its own status: created -> Ready, split at the fetcher's exit."""

    pod: str
    total: float  # creation -> Ready
    fetch: float  # the fetcher's run (download and sha256 checks, or finding the cache filled)
    load: float  # fetcher finished -> Ready: Triton loads and warms the model

    def line(self) -> str:
        return f"{self.pod}: {self.total:.0f}s to Ready (fetch {self.fetch:.0f}s, load + warmup {self.load:.0f}s)"


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def start_times(pod: dict[str, Any]) -> StartTimes:
    status = pod["status"]
    ready_at = next(
        _ts(c["lastTransitionTime"]) for c in status["conditions"] if c["type"] == "Ready" and c["status"] == "True"
    )
    fetch = status["initContainerStatuses"][0]["state"]["terminated"]
    finished = _ts(fetch["finishedAt"])
    return StartTimes(
        pod=pod["metadata"]["name"],
        total=(ready_at - _ts(pod["metadata"]["creationTimestamp"])).total_seconds(),
        fetch=(finished - _ts(fetch["startedAt"])).total_seconds(),
        load=(ready_at - finished).total_seconds(),
    )
