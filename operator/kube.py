"""The operator's only door to the API server: get, list, watch, server-side apply, delete, events.

Objects are plain dicts (the builders' output), applied with server-side apply under one field
manager, forced: the operator is the declared owner of every field it sets on its children, so
a hand edit of those fields is drift to undo, not a conflict to negotiate.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.watch.watch import iter_resp_lines

from ttsfleet.operator.kinds import Kind, kind_of
from ttsfleet.operator.naming import FIELD_MANAGER

log = logging.getLogger(__name__)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
REQUEST_TIMEOUT_SECONDS = 30.0
# Add-ons (KEDA, Prometheus Operator) may be installed after the operator starts.
DISCOVERY_TTL_SECONDS = 60.0


@dataclass
class ApiError(Exception):
    status: int
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.message}"


class Kube:
    def __init__(self, api: client.ApiClient, *, field_manager: str = FIELD_MANAGER) -> None:
        self._api = api
        self._field_manager = field_manager
        self._served: dict[str, tuple[bool, float]] = {}
        self._served_lock = threading.Lock()
        self._served_epoch = 0
        self._discovering = threading.Lock()

    @classmethod
    def connect(cls, context: str | None = None, connections: int = 10) -> Kube:
        """In-cluster credentials when running in a pod, else the current kube context;
        ``connections``: how many requests may be in flight at once without a new TLS connection
        each (the client's default pool is 5 per CPU of the machine, not of the pod)."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(context=context, client_configuration=configuration)
        configuration.connection_pool_maxsize = connections
        return cls(client.ApiClient(configuration))

    def close(self) -> None:
        self._api.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _, url, headers, body, _ = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(
            method, url, header_params=headers, body=body, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
        response.read()
        data = response.data or b""
        try:
            payload: dict[str, Any] = json.loads(data) if data else {}
        except ValueError:
            # Not a Status object: e.g. "404 page not found" for an API group nobody serves.
            if 200 <= response.status <= 299:
                raise
            payload = {"message": data.decode(errors="replace").strip()}
        if not 200 <= response.status <= 299:
            raise ApiError(response.status, str(payload.get("reason", "")), str(payload.get("message", data)))
        return payload

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", kind.path(namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def list_objects(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None, field_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return self.list_versioned(kind, namespace, label_selector, field_selector)[0]

    def list_versioned(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None, field_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """The objects and the list's resourceVersion (where a watch of them goes on from)."""
        query = [("labelSelector", label_selector)] if label_selector else []
        if field_selector:
            query.append(("fieldSelector", field_selector))
        result = self._call("GET", kind.path(namespace), query=query)
        items: list[dict[str, Any]] = result.get("items") or []
        for item in items:
            # List items come without apiVersion/kind; put them back so objects are self-describing.
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        return items, str((result.get("metadata") or {}).get("resourceVersion") or "")

    def watch(
        self, kind: Kind, namespace: str | None, label_selector: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[dict[str, Any]]:
        """Watch events after ``resource_version`` (BOOKMARKs included) until the API server ends
        the watch, at most ``timeout_seconds`` later. A watch the server refuses raises ApiError;
        an expired version arrives as an ERROR event (410), as the API server sends it."""
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if label_selector:
            query.append(("labelSelector", label_selector))
        _, url, headers, _, _ = self._api.param_serialize(
            method="GET",
            resource_path=kind.path(namespace),
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        # Bookmarks arrive about once a minute: a read that long past the watch's own end is a
        # dead connection.
        timeout = urllib3.Timeout(connect=REQUEST_TIMEOUT_SECONDS, read=timeout_seconds + REQUEST_TIMEOUT_SECONDS)
        response = self._api.rest_client.pool_manager.request(
            "GET", url, headers=headers, preload_content=False, timeout=timeout
        )
        try:
            if response.status != 200:
                data = response.read()
                try:
                    payload = json.loads(data)
                except ValueError:
                    payload = {"message": data.decode(errors="replace").strip()}
                raise ApiError(response.status, str(payload.get("reason", "")), str(payload.get("message", "")))
            for line in iter_resp_lines(response):
                event: dict[str, Any] = json.loads(line)
                yield event
        finally:
            # A watch is never read to its end when left early: its connection cannot be reused.
            response.close()
            response.release_conn()

    def find(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """One object by name through a list (the operator may list its children, not get them)."""
        found = self.list_objects(kind, namespace, field_selector=f"metadata.name={name}")
        return found[0] if found else None

    def served(self, kind: Kind) -> bool:
        """Whether the API server serves this kind (its CRD is installed), as discovery said at
        most ``DISCOVERY_TTL_SECONDS`` ago or since the last :meth:`forget_served`."""
        key = kind.api_version + "/" + kind.plural
        if (known := self._served_now(key)) is not None:
            return known
        # One discovery request at a time: when the answer expires, every worker's pass asks at
        # once, and the others take the answer of the first.
        with self._discovering:
            if (known := self._served_now(key)) is not None:
                return known
            with self._served_lock:
                epoch = self._served_epoch
            now = time.monotonic()
            found = self.discover(kind)
            with self._served_lock:
                # An answer asked for before a forget_served() may predate the CRD event behind it.
                if epoch == self._served_epoch:
                    self._served[key] = (found, now)
            return found

    def _served_now(self, key: str) -> bool | None:
        """The cached answer for ``key`` while it is fresh."""
        with self._served_lock:
            cached = self._served.get(key)
        if cached and time.monotonic() - cached[1] < DISCOVERY_TTL_SECONDS:
            return cached[0]
        return None

    def discover(self, kind: Kind) -> bool:
        """Whether discovery lists this kind right now (no cache)."""
        try:
            resources = self._call("GET", kind.base_path()).get("resources") or []
        except ApiError as err:
            if err.status != 404:
                raise
            return False
        return any(r.get("name") == kind.plural for r in resources)

    def forget_served(self) -> None:
        """Drop cached discovery answers (a CRD came or went)."""
        with self._served_lock:
            self._served.clear()
            self._served_epoch += 1

    def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        kind = kind_of(obj)
        meta = obj["metadata"]
        query = [("fieldManager", self._field_manager)]
        if force:
            query.append(("force", "true"))
        return self._call(
            "PATCH",
            kind.path(meta.get("namespace"), meta["name"]),
            query=query,
            body=obj,
            content_type=APPLY_CONTENT_TYPE,
        )

    def apply_status(self, kind: Kind, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": kind.api_version,
            "kind": kind.kind,
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        }
        return self._call(
            "PATCH",
            kind.path(namespace, name, "status"),
            query=[("fieldManager", self._field_manager), ("force", "true")],
            body=body,
            content_type=APPLY_CONTENT_TYPE,
        )

    def delete(self, kind: Kind, namespace: str, name: str, uid: str | None = None) -> None:
        """Delete in the background; the uid precondition keeps us off a same-named successor."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        body["propagationPolicy"] = "Background"
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self._call("DELETE", kind.path(namespace, name), body=body)
        except ApiError as err:
            if err.status not in (404, 409):
                raise

    def merge_patch(self, kind: Kind, namespace: str | None, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (the peering object: kopf's keep-alives own the rest of it)."""
        return self._call("PATCH", kind.path(namespace, name), body=patch, content_type="application/merge-patch+json")

    def create(self, kind: Kind, namespace: str | None, obj: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", kind.path(namespace), body=obj)
