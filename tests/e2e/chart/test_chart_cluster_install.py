"""The chart on a real API server: what it renders is accepted, it installs into a namespace that
enforces the restricted Pod Security Standard, upgrades, and refuses bad values."""

from __future__ import annotations

import json

import pytest
import yaml
from chart_e2e import Release, helm
from chartkit import CHART, RELEASE, template_args

from ttsfleet.devcluster.cluster import ClusterHandle
from ttsfleet.devcluster.waiting import wait_for

EVERYTHING_ON = {
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    "dashboard": {"enabled": True},
    "imagePolicy": {"allowedPrefixes": ["registry.example.com/tts/"]},
    "image": {"digest": "sha256:" + "ab" * 32},
}


def server_dry_run(cluster: ClusterHandle, manifest: str) -> str:
    return cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest).stdout


@pytest.mark.parametrize(
    "values",
    [EVERYTHING_ON, {**EVERYTHING_ON, "watch_own_namespace": True}],
    ids=["all-namespaces", "one-namespace"],
)
def test_every_rendered_object_is_accepted_by_the_api_server(
    cluster: ClusterHandle, namespace: str, release: Release, values: dict[str, object]
) -> None:
    # The release fixture has installed the kopf.dev CRDs that the peering objects need.
    values = dict(values)
    if values.pop("watch_own_namespace", False):
        values["watchNamespaces"] = [namespace]
    manifest = helm(cluster, *template_args("dry", namespace), values=values)
    kinds = {doc["kind"] for doc in yaml.safe_load_all(manifest) if doc}
    assert {"CustomResourceDefinition", "Deployment", "ServiceMonitor", "PrometheusRule"} <= kinds
    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= kinds
    out = server_dry_run(cluster, manifest)
    assert "(server dry run)" in out


def test_installed_into_a_restricted_namespace_both_replicas_become_available(
    cluster: ClusterHandle, release: Release
) -> None:
    labels = json.loads(cluster.kubectl("get", "namespace", release.namespace, "-o", "json").stdout)
    assert labels["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    deployment = release.deployment(cluster)
    assert deployment["status"].get("availableReplicas") == 2, deployment["status"]
    crd = json.loads(cluster.kubectl("get", "crd", "ttsdeployments.tts.ttsfleet.io", "-o", "json").stdout)
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-namespace"] == release.namespace


def _upgrade(cluster: ClusterHandle, release: Release, **values: str) -> None:
    helm(
        cluster, "upgrade", RELEASE, str(CHART), "--namespace", release.namespace,
        "--reuse-values", "--wait", "--timeout", "3m", values=values,
    )  # fmt: skip


def test_an_upgrade_changes_the_log_level(cluster: ClusterHandle, release: Release) -> None:
    _upgrade(cluster, release, logLevel="debug")
    try:
        assert "--log-level=debug" in release.operator_args(cluster)
    finally:
        _upgrade(cluster, release, logLevel="info")
    wait_for(lambda: "--log-level=info" in release.operator_args(cluster), what="the rollback to info", timeout=30)


def test_bad_values_are_refused_before_anything_is_created(cluster: ClusterHandle, namespace: str) -> None:
    with pytest.raises(RuntimeError, match="logLevel") as refused:
        helm(
            cluster,
            "install",
            "refused",
            str(CHART),
            "--namespace",
            namespace,
            values={"logLevel": "verbose", "crds": {"install": False}},
        )
    assert "schema" in str(refused.value)
    listed = cluster.kubectl("get", "deployments", "-n", namespace, "-o", "name").stdout
    assert listed.strip() == ""
