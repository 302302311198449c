"""The chart's optional image allow-list on the real API server: its ValidatingAdmissionPolicy
refuses a fleet whose image comes from elsewhere, naming the image, and admits the rest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from chart_e2e import Release, helm
from chartkit import template_args
from fleet_helpers import fleet

from ttsfleet.devcluster.cluster import ClusterHandle
from ttsfleet.devcluster.waiting import wait_for

ALLOWED = "registry.example.com/tts/"


@pytest.fixture
def image_policy(cluster: ClusterHandle, namespace: str, release: Release) -> Iterator[None]:
    """Only the policy and its binding, bound to this test's namespace so no other test meets it."""
    values = {"imagePolicy": {"allowedPrefixes": [ALLOWED]}, "watchNamespaces": [namespace]}
    rendered = helm(cluster, *template_args("imgpol", namespace, include_crds=False), values=values)
    docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"].startswith("ValidatingAdmissionPolicy")]
    assert {d["kind"] for d in docs} == {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    manifest = yaml.safe_dump_all(docs)
    cluster.kubectl("apply", "-f", "-", input=manifest)
    try:
        yield
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=manifest)


def test_only_fleets_from_allowed_registries_are_admitted(
    cluster: ClusterHandle, namespace: str, image_policy: None
) -> None:
    def attempt(name: str, image: str) -> tuple[int, str]:
        doc = fleet(name, image=image)
        result = cluster.kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False
        )
        return result.returncode, result.stderr

    def refused() -> tuple[int, str] | None:
        code, message = attempt("elsewhere", "docker.io/someone/tts:1")
        return (code, message) if code != 0 else None

    # The API server compiles a new policy asynchronously: wait for its first refusal.
    code, message = wait_for(
        refused,
        what="the image policy to refuse an image from another registry",
        timeout=30,
    )
    assert "docker.io/someone/tts:1" in message and ALLOWED in message, message
    # A prefix must match from the start and up to its '/': a longer registry name is not a match.
    assert attempt("lookalike", "registry.example.com/tts-evil/x:1")[0] != 0
    code, message = attempt("allowed", f"{ALLOWED}worker:0.1.0@sha256:{'ab' * 32}")
    assert code == 0, message
