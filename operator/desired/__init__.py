"""Pure builders of a fleet's desired children: spec in, API objects (dicts) out, no I/O.

Each builder returns None when its child must not exist, so the reconciler prunes it.
"""

from __future__ import annotations

from typing import Any

from ttsfleet.operator.desired import (
    configmap,
    networkpolicy,
    pdb,
    scaledobject,
    service,
    servicemonitor,
    statefulset,
    triggerauthentication,
)
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import TTSDeploymentSpec


def build_all(
    owner: Owner, spec: TTSDeploymentSpec, schedule_starts: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every child that should exist, in apply order (config before the pods that mount it)."""
    config = configmap.build(owner, spec)
    candidates = [
        config,
        # Before the pods: a new pod is never reachable from more than the policy allows.
        networkpolicy.build(owner, spec),
        service.build_headless(owner, spec),
        service.build_client(owner, spec),
        statefulset.build(owner, spec, config_hash=configmap.content_hash(config)),
        pdb.build(owner, spec),
        # Before the ScaledObject that names it: KEDA resolves it when it builds the scaler.
        triggerauthentication.build(owner, spec),
        scaledobject.build(owner, spec, schedule_starts or {}),
        servicemonitor.build(owner, spec),
    ]
    return [child for child in candidates if child is not None]
