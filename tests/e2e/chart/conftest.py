"""Chart e2e fixtures: the chart installed with helm, and the operator run locally as the chart's
ServiceAccount (its own token, so the API server authorises exactly what the pod would get).

The operator Deployment's pods run on kwok nodes, where no container really starts; the process
started here with the Deployment's own arguments stands in for them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from chart_e2e import CRD_NAMES, ChartOperator, Release, adopt, helm, token_kubeconfig
from chartkit import CHART, RELEASE

from ttsfleet.devcluster.cluster import ClusterHandle, free_port
from ttsfleet.operator.spec import API_VERSION, KIND


@pytest.fixture(scope="session")
def release(cluster: ClusterHandle) -> Iterator[Release]:
    """The chart installed once per session, in a namespace that enforces the restricted Pod
    Security Standard, with every optional object on (the dev cluster has the Prometheus CRDs)."""
    namespace = f"ttsfleet-system-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    for crd in CRD_NAMES:
        adopt(cluster, "customresourcedefinition", crd, RELEASE, namespace)
    installed = Release(
        name=RELEASE,
        namespace=namespace,
        service_account=f"{RELEASE}-ttsfleet-operator",
        cluster_role=f"{RELEASE}-ttsfleet-operator-{namespace}",
        health_port=free_port(),
        metrics_port=free_port(),
    )
    values = {
        "health": {"port": installed.health_port},
        "metrics": {
            "port": installed.metrics_port,
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
        },
        "dashboard": {"enabled": True},
        "resyncSeconds": 5,
    }
    helm(
        cluster,
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "3m",
        values=values,
    )
    cluster.wait_for_owner_kind(API_VERSION, KIND)
    try:
        yield installed
    finally:
        helm(cluster, "uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "2m")
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# Per module: the operator tests that may follow in the session must not meet a second operator.
@pytest.fixture(scope="module")
def chart_operator(
    cluster: ClusterHandle, release: Release, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChartOperator]:
    kubeconfig = token_kubeconfig(cluster, release, tmp_path_factory.mktemp("sa") / "kubeconfig")
    cluster.logs_dir.mkdir(parents=True, exist_ok=True)
    operator = ChartOperator(cluster, release, kubeconfig, cluster.logs_dir / "chart-operator.log")
    try:
        yield operator
    finally:
        operator.stop()
