"""What a real kubelet writes into a pod's status in situations kwok's simulated kubelet never
reaches, written the same way (the pod's status subresource), for e2e tests on kwok nodes.

kwok starts every container it is given: it does not resolve the Secrets a container's
environment names. A real kubelet does, and when one is absent it leaves the container waiting
with reason CreateContainerConfigError and the API server's NotFound text as the message, retrying
on every sync. That report is all the operator sees of a missing Secret (it has no right to read
Secrets), so the tests write exactly that report and check what the operator makes of it.
"""

from __future__ import annotations

import json
from typing import Any

from fleet_helpers import get, wait_for

from ttsfleet.operator import naming


def missing_secret(cluster: Any, namespace: str, pod: str, secret: str) -> None:
    """The fetch init container cannot be created: its environment names a Secret that is absent."""
    live = wait_for(f"pod {namespace}/{pod} to be scheduled", lambda: _scheduled(cluster, namespace, pod), 60)
    waiting = {
        "name": naming.FETCH_CONTAINER,
        "image": live["spec"]["initContainers"][0]["image"],
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "started": False,
        "state": {"waiting": {"reason": "CreateContainerConfigError", "message": f'secret "{secret}" not found'}},
    }
    conditions = []
    for cond in live["status"].get("conditions") or []:
        if cond.get("type") in ("Ready", "ContainersReady"):
            cond = {**cond, "status": "False", "reason": "ContainersNotReady"}
        elif cond.get("type") == "Initialized":
            cond = {**cond, "status": "False", "reason": "ContainersNotInitialized"}
        conditions.append(cond)
    # The phase stays as kwok left it (Running): kwok's pod-ready stage would take a Pending pod
    # that is not Ready as its cue to start it again. The operator reads containers, not the phase.
    status = {
        "initContainerStatuses": [waiting],
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {"waiting": {"reason": "PodInitializing"}},
            }
            for c in live["spec"]["containers"]
        ],
        "conditions": conditions,
    }
    cluster.kubectl(
        "patch", "pod", pod, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def _scheduled(cluster: Any, namespace: str, pod: str) -> dict[str, Any] | None:
    live = get(cluster, namespace, "pod", pod)
    return live if live and live.get("spec", {}).get("nodeName") and live.get("status", {}).get("podIP") else None
