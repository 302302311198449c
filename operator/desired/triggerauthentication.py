"""The KEDA TriggerAuthentication of a fleet's redis trigger: where KEDA finds the password.

It holds only a reference (Secret name and key), never the password: KEDA's operator reads the
Secret itself, so the operator needs no right on Secrets and the password appears in no object,
status, event or log the operator writes. Absent when the redis trigger takes no password.
"""

from __future__ import annotations

from typing import Any

from ttsfleet.operator import naming
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import TTSDeploymentSpec


def name(owner: Owner) -> str:
    return f"{owner.name}-redis"


def build(owner: Owner, spec: TTSDeploymentSpec) -> dict[str, Any] | None:
    scaling = spec.autoscaling
    redis = scaling.redis
    if not scaling.enabled or redis is None or redis.password_secret_ref is None:
        return None
    ref = redis.password_secret_ref
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": naming.metadata(owner, name(owner)),
        "spec": {"secretTargetRef": [{"parameter": "password", "name": ref.name, "key": ref.key}]},
    }
