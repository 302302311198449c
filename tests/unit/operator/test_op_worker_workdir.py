"""The worker and fetcher start in the pod's writable /tmp emptyDir, not in the image's WORKDIR
(/tmp/ttsfleet-worker): the runtime creates a missing WORKDIR inside the mounted emptyDir as root,
and on the real node the non-root worker then failed with "Permission denied:
'/tmp/ttsfleet-worker/models'" and crash-looped."""

from __future__ import annotations

from typing import Any

from fixtures_operator import OWNER, minimal_spec

from ttsfleet.operator.desired import statefulset
from ttsfleet.operator.spec import parse_spec


def _pod() -> dict[str, Any]:
    return statefulset.build(OWNER, parse_spec(minimal_spec()), config_hash="abc")["spec"]["template"]["spec"]


def test_every_container_starts_at_the_root_of_a_writable_empty_dir() -> None:
    pod = _pod()
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"}

    for container in pod["initContainers"] + pod["containers"]:
        writable_roots = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs}
        assert container.get("workingDir") in writable_roots, container["name"]
