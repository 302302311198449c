"""A cluster without KEDA and without the Prometheus Operator: fleets run, their conditions say
why there is no ScaledObject or ServiceMonitor, and installing the Prometheus Operator's CRD later
gives them their ServiceMonitor as soon as the API server's discovery lists the new kind, without
restarting the operator; removing it again turns the condition back.

This needs a cluster whose CRDs the test may change, so it brings up its own (about 15 s) rather
than removing CRDs that the other tests in the session rely on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fleet_helpers import HANG_GUARD_SECONDS, apply, condition, fleet, get, ready_fleet, wait_for
from operator_process import OperatorProcess, watching
from session_clusters import own_cluster

from ttsfleet.devcluster import upstream
from ttsfleet.devcluster.cluster import ClusterHandle

NAMESPACE = "no-addons"
NAME = "plain"
SERVICEMONITORS = "servicemonitors.monitoring.coreos.com"


@pytest.fixture(scope="module")
def bare_cluster() -> Iterator[ClusterHandle]:
    yield from own_cluster("e2e-bare", "it installs CRDs mid-test", third_party_crds=False)


@pytest.fixture
def bare_operator(bare_cluster: ClusterHandle) -> Iterator[OperatorProcess]:
    with watching(bare_cluster, NAMESPACE) as operator:
        yield operator


def test_fleets_run_without_keda_and_prometheus_and_pick_them_up_when_installed(
    bare_cluster: ClusterHandle, bare_operator: OperatorProcess
) -> None:
    autoscaling = {"enabled": True, "minReplicas": 1, "maxReplicas": 3}
    apply(
        bare_cluster, NAMESPACE, fleet(NAME, replicas=2, autoscaling=autoscaling, monitoring={"serviceMonitor": True})
    )
    obj = ready_fleet(bare_cluster, NAMESPACE, NAME)
    monitoring, scaling = condition(obj, "Monitoring"), condition(obj, "Autoscaling")
    assert (monitoring["status"], monitoring["reason"]) == ("False", "ServiceMonitorCRDMissing"), monitoring
    assert "monitoring.coreos.com" in monitoring["message"]
    assert (scaling["status"], scaling["reason"]) == ("False", "KEDANotInstalled"), scaling
    assert condition(obj, "Degraded")["status"] == "False"

    # The platform team installs the Prometheus Operator (its ServiceMonitor CRD) later on.
    crd = next(path for path in upstream.prometheus_operator_crds() if "servicemonitors" in path.name)
    bare_cluster.kubectl("apply", "--server-side", "-f", str(crd))

    def monitored() -> dict[str, Any] | None:
        try:
            monitor = get(bare_cluster, NAMESPACE, "servicemonitor", NAME)
        except RuntimeError:  # kubectl's discovery does not know the new kind yet
            return None
        status = condition(get(bare_cluster, NAMESPACE, "ttsd", NAME), "Monitoring").get("status")
        return monitor if monitor and status == "True" else None

    # A hang guard, not a budget: the operator's log says which path brought the ServiceMonitor.
    monitor = wait_for("the ServiceMonitor and Monitoring=True after the CRD appeared", monitored, HANG_GUARD_SECONDS)
    assert monitor["metadata"]["ownerReferences"][0]["name"] == NAME
    # The CRD's events, once discovery listed the kind, not the discovery cache expiring (60 s).
    assert operator_said(bare_operator, f"CRD {SERVICEMONITORS}: discovery lists ServiceMonitor")
    scaling = condition(get(bare_cluster, NAMESPACE, "ttsd", NAME), "Autoscaling")
    assert scaling["reason"] == "KEDANotInstalled"  # KEDA is still missing

    # A deleted ServiceMonitor comes back: through kopf's watch of the new kind, or, had that watch
    # missed the deletion (it came before the watch's first listing), the overdue-child lookup.
    # Before this was fixed it never came back: the operator took its absence for a lagging watch.
    uid = monitor["metadata"]["uid"]
    bare_cluster.kubectl("delete", "servicemonitor", NAME, "-n", NAMESPACE, "--wait=false")

    def recreated() -> dict[str, Any] | None:
        again = get(bare_cluster, NAMESPACE, "servicemonitor", NAME)
        return again if again and again["metadata"]["uid"] != uid else None

    wait_for("the deleted ServiceMonitor to be applied again", recreated, HANG_GUARD_SECONDS)

    # The Prometheus Operator uninstalled: the condition says so again, nothing fails.
    said_before = len(bare_operator.log_path.read_text())
    bare_cluster.kubectl("delete", "crd", SERVICEMONITORS)

    def unmonitored() -> dict[str, Any] | None:
        found = condition(get(bare_cluster, NAMESPACE, "ttsd", NAME), "Monitoring")
        return found if found.get("reason") == "ServiceMonitorCRDMissing" else None

    assert wait_for("Monitoring=False after the CRD was removed", unmonitored, HANG_GUARD_SECONDS)["status"] == "False"
    assert operator_said(bare_operator, f"CRD {SERVICEMONITORS}: discovery does not list ServiceMonitor", said_before)
    assert condition(get(bare_cluster, NAMESPACE, "ttsd", NAME), "Degraded")["status"] == "False"
    # Not even for a moment: the ServiceMonitor refused while its CRD terminated is no failure.
    events = bare_cluster.kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout
    assert "ApplyFailed" not in events, events


def operator_said(operator: OperatorProcess, words: str, since: int = 0) -> bool:
    return words in operator.log_path.read_text()[since:]
