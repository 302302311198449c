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
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from kubernetes import client, config

from ttsfleet.operator import applied, cache, desired, kinds, streams
from ttsfleet.operator.kinds import Kind
from ttsfleet.operator.kube import Kube
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import parse_spec

# What the operator watches in a cluster without the add-ons, with its server-side selectors.
WATCHED: list[tuple[Kind, str]] = [
    (kinds.TTSDEPLOYMENT, ""),
    *((feed.kind, feed.selector) for feed in streams.CHILD_FEEDS),
    (streams.POD_FEED.kind, streams.POD_FEED.selector),
]


def _say_failure(future: Future[Any]) -> None:
    if future.exception() is not None:  # the bench then waits for that child in vain: say why
        print(f"apply failed: {future.exception()}", file=sys.stderr, flush=True)


class Reference:
    def __init__(self, api: client.ApiClient, namespace: str, workers: int) -> None:
        self.kube = Kube(api)  # the operator's client and field manager
        self.namespace = namespace
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.store: dict[tuple[str, str], cache.Packed] = {}  # (plural, name) -> trimmed object
        self.lock = threading.Lock()

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
        items, version = self.kube.list_versioned(kind, self.namespace, selector)
        for item in items:
            self._keep(kind, item)
        return version

    def watch(self, kind: Kind, selector: str, resource_version: str) -> None:
        while True:  # the API server ends a watch after a while: go on from the last version seen
            for event in self.kube.watch(kind, self.namespace, selector, resource_version, streams.WATCH_SECONDS):
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
