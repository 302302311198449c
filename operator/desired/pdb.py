"""The PodDisruptionBudget: only when more than one replica can exist (a budget over one pod
would either block every node drain or protect nothing)."""

from __future__ import annotations

from typing import Any

from ttsfleet.operator import naming
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import TTSDeploymentSpec


def max_possible_replicas(spec: TTSDeploymentSpec) -> int:
    if spec.autoscaling.enabled:
        return max(spec.replicas, spec.autoscaling.max_replicas)
    return spec.replicas


def build(owner: Owner, spec: TTSDeploymentSpec) -> dict[str, Any] | None:
    if max_possible_replicas(spec) <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": naming.metadata(owner, owner.name),
        "spec": {
            "maxUnavailable": spec.disruption.max_unavailable,
            "selector": {"matchLabels": naming.selector_labels(owner)},
            # A pod still loading its model serves nothing; evicting it must not be blocked.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
