"""The fetcher never makes a pod harder to schedule than its worker: Kubernetes schedules a pod on
the larger of its init containers' and its containers' requests, and the fetcher's whole CPU made
a fleet asking for half a CPU per pod fit only one pod on a 2-core node."""

from __future__ import annotations

from fixtures_operator import OWNER, minimal_spec
from kubernetes.utils import parse_quantity

from ttsfleet.operator.desired import statefulset
from ttsfleet.operator.spec import parse_spec


def test_fetcher_requests_no_more_cpu_than_a_small_worker() -> None:
    spec = minimal_spec()
    spec["resources"] = {**spec.get("resources", {}), "gpu": 0, "cpu": "250m", "memory": "1Gi"}
    pod = statefulset.build(OWNER, parse_spec(spec), config_hash="abc")["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    (worker,) = pod["containers"]

    fetch_cpu = parse_quantity(fetch["resources"]["requests"]["cpu"])
    worker_cpu = parse_quantity(worker["resources"]["requests"]["cpu"])

    assert worker_cpu == parse_quantity("250m")
    assert fetch_cpu <= worker_cpu
