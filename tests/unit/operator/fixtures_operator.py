"""Shared helpers for the operator unit tests: spec bodies and an in-memory API server."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from ttsfleet.operator import kinds
from ttsfleet.operator.kinds import Kind
from ttsfleet.operator.kube import ApiError
from ttsfleet.operator.naming import Owner

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
OWNER = Owner(name="fleet", namespace="team-a", uid="uid-1")


def minimal_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": "ttsfleet/worker:0.1.0",
        "model": {"source": "hf://2Noise/ChatTTS"},
    }
    spec.update(overrides)
    return spec


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "TTSDeployment":
                docs.append((str(path.relative_to(EXAMPLES)), doc))
    return docs


def fleet_body(spec: dict[str, Any], *, generation: int = 1, status: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "tts.ttsfleet.io/v1alpha1",
        "kind": "TTSDeployment",
        "metadata": {
            "name": OWNER.name,
            "namespace": OWNER.namespace,
            "uid": OWNER.uid,
            "generation": generation,
            "resourceVersion": "1",
        },
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return body


class FakeKube:
    """Just enough of the API server: objects by (kind, namespace, name), label-selected lists,
    resourceVersions, and server-side apply's no-op detection: an apply that changes nothing
    leaves the object (and its resourceVersion) alone, yet it is still a PATCH request, recorded
    in ``applied`` like any other. Tests count those requests."""

    def __init__(self, served: dict[Kind, bool] | None = None) -> None:
        self.objects: dict[tuple[Kind, str, str], dict[str, Any]] = {}
        self.applied: list[dict[str, Any]] = []
        self.noop_applies = 0
        self.status_writes: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str]] = []
        self.reads = 0
        self.fail_apply: dict[str, ApiError] = {}
        self._served = served or {}
        self._revision = 0

    def _next_version(self) -> str:
        self._revision += 1
        return str(self._revision)

    def put(self, obj: dict[str, Any]) -> None:
        """An object as another client (kubectl, a controller) writes it."""
        kind = kinds.kind_of(obj)
        meta = obj["metadata"]
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = self._next_version()
        key = (kind, meta.get("namespace", ""), meta["name"])
        existing = self.objects.get(key)
        if existing is not None and existing.get("spec") != stored.get("spec"):
            # As the API server does: a new spec is a new generation.
            stored["metadata"]["generation"] = (existing["metadata"].get("generation") or 0) + 1
        self.objects[key] = stored

    def edit(self, kind: Kind, namespace: str, name: str, change: Any) -> None:
        """A hand edit: ``change(obj)`` mutates the stored object, which gets a new resourceVersion."""
        obj = self.objects[(kind, namespace, name)]
        change(obj)
        obj["metadata"]["resourceVersion"] = self._next_version()

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        self.reads += 1
        obj = self.objects.get((kind, namespace or "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def list_objects(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        self.reads += 1
        wanted = dict(part.split("=", 1) for part in label_selector.split(",")) if label_selector else {}
        out = []
        for (k, ns, _), obj in self.objects.items():
            labels = obj["metadata"].get("labels") or {}
            if (
                k == kind
                and (namespace is None or ns == namespace)
                and all(labels.get(a) == b for a, b in wanted.items())
            ):
                out.append(copy.deepcopy(obj))
        return out

    def find(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def served(self, kind: Kind) -> bool:
        return self._served.get(kind, True)

    def forget_served(self) -> None:
        self.discovery_resets = getattr(self, "discovery_resets", 0) + 1

    def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        if obj["kind"] in self.fail_apply:
            raise self.fail_apply[obj["kind"]]
        self.applied.append(copy.deepcopy(obj))
        kind = kinds.kind_of(obj)
        key = (kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
        existing = self.objects.get(key)
        stored = copy.deepcopy(obj)
        stored["metadata"].setdefault("uid", f"uid-{obj['kind']}-{obj['metadata']['name']}")
        if existing is not None:
            stored["metadata"]["uid"] = existing["metadata"].get("uid")
            stored["metadata"]["resourceVersion"] = existing["metadata"].get("resourceVersion")
            if "status" in existing:
                stored["status"] = existing["status"]
            if stored == existing:
                # Server-side apply of what is already there: nothing is written.
                self.noop_applies += 1
                return copy.deepcopy(existing)
        stored["metadata"]["resourceVersion"] = self._next_version()
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def apply_status(self, kind: Kind, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        if (kind, namespace, name) not in self.objects:
            raise ApiError(404, "NotFound", f"{name} not found")
        self.status_writes.append(copy.deepcopy(status))
        obj = self.objects[(kind, namespace, name)]
        if obj.get("status") != status:
            obj["status"] = copy.deepcopy(status)
            obj["metadata"]["resourceVersion"] = self._next_version()
        return copy.deepcopy(obj)

    def delete(self, kind: Kind, namespace: str, name: str, uid: str | None = None) -> None:
        self.deleted.append((kind.kind, name))
        self.objects.pop((kind, namespace, name), None)

    def create(self, kind: Kind, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.events.append(copy.deepcopy(obj))
        return obj

    @property
    def writes(self) -> int:
        """Write requests: every apply (no-op or not), status write, delete and create."""
        return len(self.applied) + len(self.status_writes) + len(self.deleted) + len(self.events)
