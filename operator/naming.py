"""Names, labels and owner references shared by every child of a TTSDeployment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttsfleet.operator import spec

FIELD_MANAGER = "ttsfleet-operator"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_DEPLOYMENT = f"{spec.GROUP}/deployment"
LABEL_SERVICE_ROLE = f"{spec.GROUP}/service"
APP_NAME = "ttsfleet-worker"
ANNOTATION_CONFIG_HASH = f"{spec.GROUP}/serving-config-sha256"

CACHE_VOLUME = "model-cache"
WORKER_CONTAINER = "worker"
FETCH_CONTAINER = "fetch-model"
# StatefulSet pods are <name>-<ordinal> and carry controller-revision-hash=<name>-<hash>;
# both must stay within the 63-character label limit.
MAX_NAME_LENGTH = 40


@dataclass(frozen=True)
class Owner:
    """The TTSDeployment that children point back to."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def of(cls, body: dict[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def statefulset_name(owner: Owner) -> str:
    return owner.name


def headless_service_name(owner: Owner) -> str:
    return f"{owner.name}-pods"


def client_service_name(owner: Owner) -> str:
    return owner.name


def configmap_name(owner: Owner) -> str:
    return f"{owner.name}-serving"


def selector_labels(owner: Owner) -> dict[str, str]:
    """Immutable once a StatefulSet exists: never add to this."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: owner.name}


def labels(owner: Owner) -> dict[str, str]:
    return {
        **selector_labels(owner),
        LABEL_COMPONENT: "tts-server",
        LABEL_PART_OF: "ttsfleet",
        LABEL_MANAGED_BY: FIELD_MANAGER,
        LABEL_DEPLOYMENT: owner.name,
    }


def selector_string(owner: Owner) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(owner).items()))


def children_selector(owner: Owner) -> str:
    return f"{LABEL_MANAGED_BY}={FIELD_MANAGER},{LABEL_DEPLOYMENT}={owner.name}"


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": spec.API_VERSION,
        "kind": spec.KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(owner: Owner, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner),
        "ownerReferences": [owner_reference(owner)],
    }


def is_owned_by(obj: dict[str, Any], owner: Owner) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner.uid and ref.get("controller") for ref in refs)
