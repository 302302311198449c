"""The least any controller of TTSDeployments does, for the operator bench's reference window.

It watches what the operator watches (the fleets, their children, their pods: the same streams,
label selectors and identity) and keeps every object as the operator's cache keeps it (trimmed,
compact JSON); for each new fleet it renders the children with the operator's own builders and
server-side applies them through the operator's own client, from ``--workers`` threads. Nothing
else: no kopf, no work queue, no comparison with what exists, no status, no Events, no resync.

So its window against the direct apply is the floor the machine sets for the operator's ratio
(the fleets' own applies, the watch streams, the children's applies), and the operator's window
against its window is what the operator adds. Not a controller to run: it never repairs, prunes
or retries anything.

    KUBECONFIG=op.kubeconfig python bench/reference_controller.py -n NAMESPACE [--workers 8]

Prints ``listed`` once every watch has listed, then runs until terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from kubernetes import client, config
from kubernetes.watch.watch import iter_resp_lines

from ttsfleet.operator import applied, cache, desired, handlers, kinds
from ttsfleet.operator.kinds import Kind
from ttsfleet.operator.kube import Kube
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import parse_spec

# What the operator watches in a cluster without the add-ons, with its server-side selectors.
WATCHED: list[tuple[Kind, str]] = [
    (kinds.TTSDEPLOYMENT, ""),
    *((kind, handlers.CHILD_SELECTOR) for kind in kinds.CHILD_KINDS if kind not in kinds.OPTIONAL_KINDS),
    (kinds.POD, handlers.POD_SELECTOR),
]


def _say_failure(future: Future[Any]) -> None:
    if future.exception() is not None:  # the bench then waits for that child in vain: say why
        print(f"apply failed: {future.exception()}", file=sys.stderr, flush=True)


class Reference:
    def __init__(self, api: client.ApiClient, namespace: str, workers: int) -> None:
        self.api = api
        self.kube = Kube(api)  # the operator's client and field manager
        self.namespace = namespace
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.store: dict[tuple[str, str], cache.Packed] = {}  # (plural, name) -> trimmed object
        self.lock = threading.Lock()

    def _get(self, path: str, query: list[tuple[str, str]], stream: bool = False) -> Any:
        _, url, headers, _, _ = self.api.param_serialize(
            method="GET",
            resource_path=path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        return self.api.rest_client.pool_manager.request(
            "GET", url, headers=headers, preload_content=not stream, timeout=None if stream else 30
        )

    def _keep(self, kind: Kind, obj: dict[str, Any], deleted: bool = False) -> None:
        key = (kind.plural, obj["metadata"]["name"])
        if deleted:
            with self.lock:
                self.store.pop(key, None)
            return
        packed = cache.Packed.of(cache.trim_pod(obj) if kind is kinds.POD else cache.trim_object(obj))
        with self.lock:
            self.store[key] = packed

    def _new_fleet(self, body: dict[str, Any]) -> None:
        owner = Owner.of(body)
        for child in desired.build_all(owner, parse_spec(body["spec"]), {}):
            self.pool.submit(self.kube.apply, applied.stamp(child)).add_done_callback(_say_failure)

    def list_kind(self, kind: Kind, selector: str) -> str:
        query = [("labelSelector", selector)] if selector else []
        listed = json.loads(self._get(kind.path(self.namespace), query).data)
        for item in listed.get("items") or []:
            self._keep(kind, item)
        return str(listed["metadata"]["resourceVersion"])

    def watch(self, kind: Kind, selector: str, resource_version: str) -> None:
        query = [("watch", "true"), ("allowWatchBookmarks", "true")]
        query += [("labelSelector", selector)] if selector else []
        while True:  # the API server ends a watch after a while: go on from the last version seen
            response = self._get(kind.path(self.namespace), [*query, ("resourceVersion", resource_version)], True)
            for line in iter_resp_lines(response):
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "ERROR":
                    raise RuntimeError(f"watch of {kind.plural}: {obj.get('message')}")
                resource_version = obj["metadata"]["resourceVersion"]
                if event["type"] == "BOOKMARK":
                    continue
                self._keep(kind, obj, deleted=event["type"] == "DELETED")
                if kind is kinds.TTSDEPLOYMENT and event["type"] == "ADDED":
                    self._new_fleet(obj)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--namespace", required=True)
    parser.add_argument("--workers", type=int, default=8, help="threads that apply children")
    args = parser.parse_args(argv)
    configuration = client.Configuration()
    config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = args.workers + len(WATCHED)
    reference = Reference(client.ApiClient(configuration), args.namespace, args.workers)
    versions = [reference.list_kind(kind, selector) for kind, selector in WATCHED]
    for (kind, selector), version in zip(WATCHED, versions, strict=True):
        threading.Thread(target=reference.watch, args=(kind, selector, version), daemon=True).start()
    print("listed", flush=True)
    threading.Event().wait()  # until SIGTERM ends the process
    return 0


if __name__ == "__main__":
    sys.exit(main())
