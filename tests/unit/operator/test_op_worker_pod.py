"""The worker pod's contract with its image: liveness follows the model, the user is the image's."""

from __future__ import annotations

import re
from typing import Any

from fixtures_operator import OWNER, REPO, minimal_spec

from ttsfleet import contract
from ttsfleet.operator.desired import statefulset
from ttsfleet.operator.spec import parse_spec


def _pod(**overrides: Any) -> dict[str, Any]:
    spec = parse_spec(minimal_spec(**overrides))
    return statefulset.build(OWNER, spec, config_hash="abc")["spec"]["template"]["spec"]


def _budget(probe: dict[str, Any]) -> int:
    return int(probe["periodSeconds"] * probe["failureThreshold"])


def test_liveness_fails_when_the_model_leaves_ready_but_tolerates_hiccups() -> None:
    (worker,) = _pod(model={"source": "hf://a/b", "name": "voicey"})["containers"]
    live, ready = worker["livenessProbe"], worker["readinessProbe"]
    # The model's own readiness: Triton's /v2/health/live stays 200 with the model unloaded.
    assert live["httpGet"] == {"path": "/v2/models/voicey/ready", "port": contract.HTTP_PORT_NAME}
    assert live["httpGet"]["path"] != contract.LIVE_PATH
    # One slow answer restarts nothing; readiness drops the pod from rotation long before.
    assert live["failureThreshold"] >= 3
    assert _budget(live) > _budget(ready)
    # Gated by the startup probe, which covers the whole warmup budget.
    assert worker["startupProbe"]["httpGet"]["path"] == live["httpGet"]["path"]


def test_pod_runs_as_the_images_high_non_root_user() -> None:
    pod = _pod()
    uid = contract.WORKER_UID
    assert uid >= 10_000  # no account of the base image (triton-server is 1000) or a node's users
    security = pod["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (uid, uid, uid)
    assert security["runAsNonRoot"] is True
    for container in pod["containers"] + pod["initContainers"]:
        assert (container["securityContext"]["runAsUser"], container["securityContext"]["runAsGroup"]) == (uid, uid)


def test_worker_image_user_matches_the_pod() -> None:
    dockerfile = (REPO / "worker" / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)\s*$", dockerfile, flags=re.MULTILINE)
    assert users == [f"{contract.WORKER_UID}:{contract.WORKER_UID}"]
    # The directories the worker writes belong to that user in the image, too.
    (chown,) = re.findall(r"chown -R (\S+) ", dockerfile)
    assert chown == f"{contract.WORKER_UID}:{contract.WORKER_UID}"


def _threads(**resources: Any) -> str:
    (worker,) = _pod(resources={"gpu": 0, **resources})["containers"]
    return str(next(e["value"] for e in worker["env"] if e["name"] == statefulset.COMPUTE_THREADS_ENV))


def test_compute_threads_follow_the_pods_cpu_not_the_nodes_cores() -> None:
    # torch would otherwise start a thread per core of the node, whatever the pod requested.
    assert _threads(cpu="500m") == "1"
    assert _threads(cpu="1") == "1"
    assert _threads(cpu="1500m") == "2"
    assert _threads(cpu=4) == "4"
    assert _threads(cpu="0") == "1"  # no request: still one thread
    assert _threads(cpu="2", cpuLimit="6") == "6"  # a limit is what the pod may use
