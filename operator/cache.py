"""What the watches already told us, per fleet: the fleet itself, its children and its pods.

The fleets and the add-ons' children are in kopf's indexes (``@kopf.index``); the other children
and the pods in the operator's own watch streams (streams.py says why). Both are fed by watches
that run anyway, and passes wait until both have listed: a pass reads the cluster from memory
instead of listing children and pods again, and the first pass after a restart already sees
every child. ``Listing`` is the same interface read straight from the API server, for one-off
passes (tests, tools) that run without watches.

Stored objects are trimmed: managedFields (often half an object) and, for pods, everything the
status does not read are dropped before they are stored. They are kept as compact JSON and
parsed when a pass reads them: a pass reads one fleet, while the cache holds every fleet's
objects for as long as they live, and a parsed object takes about ten times the memory of its
JSON (at 1,000 fleets the parsed indexes were about a fifth of the operator's memory).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ttsfleet.operator import kinds, naming
from ttsfleet.operator.kinds import Kind
from ttsfleet.operator.kube import ApiError, Kube

if TYPE_CHECKING:
    from ttsfleet.operator.streams import Streams

Key = tuple[str, str]  # (namespace, fleet name)

FLEET_INDEX = "ttsfleet_fleets"


def child_index_id(kind: Kind) -> str:
    return f"ttsfleet_children_{kind.plural}"


@dataclass(frozen=True)
class Observed:
    """One fleet as last seen: its body (None: not known here, read it), children, pods."""

    fleet: dict[str, Any] | None
    children: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)


class Source(Protocol):
    def observe(self, namespace: str, name: str) -> Observed: ...


@dataclass(frozen=True, slots=True)
class Packed:
    """One stored object, as compact JSON."""

    data: bytes

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Packed:
        return cls(json.dumps(obj, separators=(",", ":")).encode())

    def unpack(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.data)
        return loaded


# The trimmed objects share their nested values with the body they come from (no copies): the
# indexes and streams pack them into JSON at once, and ``Listing`` trims objects it has just read.


def trim_object(body: Mapping[str, Any]) -> dict[str, Any]:
    """A fleet or child as stored: everything but managedFields."""
    out = {k: v for k, v in body.items() if k != "metadata"}
    out["metadata"] = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return out


_POD_METADATA = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "labels")


def _container_states(statuses: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    # lastState.terminated: why a crash-looping container (the model fetcher) last failed.
    return [
        {
            "name": s.get("name"),
            "state": s.get("state") or {},
            "lastState": {"terminated": last} if (last := (s.get("lastState") or {}).get("terminated")) else {},
        }
        for s in statuses or ()
    ]


def trim_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """What status.compute and problems.pod_problems read of a pod, nothing more."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {k: meta[k] for k in _POD_METADATA if k in meta},
        "status": {
            "phase": status.get("phase"),
            "conditions": status.get("conditions") or [],
            "initContainerStatuses": _container_states(status.get("initContainerStatuses")),
            "containerStatuses": _container_states(status.get("containerStatuses")),
        },
    }


# -- kopf indexing functions: (namespace, fleet) -> trimmed object ------------------------------


async def index_fleet(body: Mapping[str, Any], namespace: str | None, name: str | None, **_: Any) -> Any:
    if not namespace or not name:
        return None
    return {(namespace, name): Packed.of(trim_object(body))}


async def index_child(body: Mapping[str, Any], namespace: str | None, labels: Mapping[str, str], **_: Any) -> Any:
    fleet = labels.get(naming.LABEL_DEPLOYMENT)
    if not namespace or not fleet:
        return None
    return {(namespace, fleet): Packed.of(trim_object(body))}


class Cache:
    """Reads kopf's indexes and the operator's streams. Call it on the event loop: both are
    updated there."""

    def __init__(self, indices: Mapping[str, Any], streams: Streams) -> None:
        self._fleets = indices[FLEET_INDEX]
        # kopf watches the add-ons' kinds (streams.py says why), the streams every other child.
        self._children = [indices[child_index_id(kind)] for kind in kinds.OPTIONAL_CHILD_KINDS]
        self._streams = streams

    @staticmethod
    def _values(index: Any, key: Key) -> list[dict[str, Any]]:
        store = index.get(key)
        return [packed.unpack() for packed in store] if store else []

    def observe(self, namespace: str, name: str) -> Observed:
        key = (namespace, name)
        fleets = self._values(self._fleets, key)
        children = [obj for index in self._children for obj in self._values(index, key)]
        children += [packed.unpack() for packed in self._streams.children(key)]
        pods = [packed.unpack() for packed in self._streams.pods(key)]
        # A fleet not (or not yet) in the index is read from the API server by the pass.
        return Observed(fleets[0] if fleets else None, children, pods)

    def fleets(self) -> list[Key]:
        return list(self._fleets)

    async def wait_listed(self) -> None:
        """Until the streams have listed (kopf holds its handlers until its own listings are in)."""
        await self._streams.wait_listed()


class Listing:
    """The same view, listed from the API server on every call (no watches needed)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def observe(self, namespace: str, name: str) -> Observed:
        body = self.kube.get(kinds.TTSDEPLOYMENT, namespace, name)
        selector = naming.children_selector(naming.Owner(name, namespace, ""))
        children: list[dict[str, Any]] = []
        for kind in kinds.CHILD_KINDS:
            if not self.kube.served(kind):
                continue
            try:
                children += self.kube.list_objects(kind, namespace, selector)
            except ApiError as err:
                if err.status != 404:
                    raise
        pod_selector = naming.selector_string(naming.Owner(name, namespace, ""))
        pods = [trim_pod(p) for p in self.kube.list_objects(kinds.POD, namespace, pod_selector)]
        return Observed(trim_object(body) if body is not None else None, [trim_object(c) for c in children], pods)
