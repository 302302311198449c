"""What `helm template` produces for the operator chart, default values and each switch."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from chartkit import CHART, NAMESPACE, RELEASE, REPO, HelmError, find, one, operator_container, render

CRD_NAME = "ttsdeployments.tts.ttsfleet.io"


def test_defaults_run_two_hardened_replicas_with_peering(helm_path: Path) -> None:
    objects = render(helm_path)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(objects)
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    args = container["args"]
    assert "--all-namespaces" in args
    peering = one(objects, "ClusterKopfPeering")
    assert f"--peering={peering['metadata']['name']}" in args
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_image_log_level_and_scheduling_come_from_values(helm_path: Path) -> None:
    objects = render(
        helm_path,
        {
            "image": {"repository": "registry.example/ttsfleet-operator", "tag": "1.2.3"},
            "logLevel": "debug",
            "nodeSelector": {"pool": "system"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}],
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        },
    )
    container = operator_container(objects)
    assert container["image"] == "registry.example/ttsfleet-operator:1.2.3"
    assert "--log-level=debug" in container["args"]
    assert container["resources"]["limits"] == {"memory": "1Gi"}
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"][0]["key"] == "dedicated"


def test_image_tag_defaults_to_the_app_version(helm_path: Path) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert operator_container(render(helm_path))["image"] == f"ttsfleet/operator:{app_version}"


def test_the_crd_is_the_one_in_crds_and_survives_uninstall(helm_path: Path) -> None:
    source = yaml.safe_load((REPO / "crds" / "tts.ttsfleet.io_ttsdeployments.yaml").read_text())
    crd = one(render(helm_path), "CustomResourceDefinition", CRD_NAME)
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_the_crd_can_be_left_to_someone_else(helm_path: Path) -> None:
    objects = render(helm_path, {"crds": {"install": False}})
    assert not find(objects, "CustomResourceDefinition", CRD_NAME)
    assert one(objects, "Deployment")


def test_crd_annotations_reach_the_crd(helm_path: Path) -> None:
    values = {"crds": {"keep": False, "annotations": {"argocd.argoproj.io/sync-wave": "-1"}}}
    crd = one(render(helm_path, values), "CustomResourceDefinition", CRD_NAME)
    assert crd["metadata"]["annotations"] == {"argocd.argoproj.io/sync-wave": "-1"}


def test_kopf_peering_crds_ship_in_the_crds_folder(helm_path: Path) -> None:
    names = {o["metadata"]["name"] for o in find(render(helm_path), "CustomResourceDefinition")}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= names


def test_watch_namespaces_get_a_role_each_and_no_cluster_wide_access(helm_path: Path) -> None:
    objects = render(helm_path, {"watchNamespaces": ["team-a", "team-b"]})
    roles = find(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = find(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    operator_role = one(objects, "ClusterRole", f"{RELEASE}-ttsfleet-operator-{NAMESPACE}")
    cluster_resources = {r for rule in operator_role["rules"] for r in rule["resources"]}
    assert cluster_resources == {"customresourcedefinitions", "namespaces"}
    args = operator_container(objects)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--all-namespaces" not in args
    peerings = find(objects, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert not find(objects, "ClusterKopfPeering")


def test_two_releases_in_two_namespaces_do_not_share_cluster_objects(helm_path: Path) -> None:
    def cluster_scoped(namespace: str) -> set[tuple[str, str]]:
        # Like the CRD, the per-cluster user roles come from one release only.
        values = {"crds": {"install": False}, "rbac": {"userRoles": {"create": False}}}
        objects = render(helm_path, values, namespace=namespace, include_crds=False)
        return {(o["kind"], o["metadata"]["name"]) for o in objects if "namespace" not in o["metadata"]}

    assert not cluster_scoped("ns-one") & cluster_scoped("ns-two")


def test_monitoring_objects_are_off_by_default_and_on_when_asked(helm_path: Path) -> None:
    kinds = ("ServiceMonitor", "PrometheusRule")
    assert not [o for o in render(helm_path) if o["kind"] in kinds]
    assert not [o for o in render(helm_path) if o["metadata"]["name"].endswith("-dashboard")]
    objects = render(
        helm_path,
        {
            "metrics": {
                "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                "prometheusRule": {"enabled": True},
            },
            "dashboard": {"enabled": True, "namespace": "monitoring"},
        },
    )
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    service = one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    alerts = {r["alert"] for g in one(objects, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}
    assert alerts == {
        "TTSFleetNotReady",
        "TTSFleetReconcileErrors",
        "TTSFleetQueueLengthHigh",
        "TTSOperatorNoActiveReplica",
    }
    dashboard = one(objects, "ConfigMap")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_metrics_service_targets_the_port_the_operator_serves_metrics_on(helm_path: Path) -> None:
    objects = render(helm_path, {"metrics": {"port": 9300}})
    container = operator_container(objects)
    assert "--metrics-port=9300" in container["args"]
    assert {"name": "metrics", "containerPort": 9300, "protocol": "TCP"} in container["ports"]
    assert one(objects, "Service")["spec"]["ports"][0]["targetPort"] == "metrics"


def test_objects_land_in_the_release_namespace(helm_path: Path) -> None:
    for obj in render(helm_path, include_crds=False):
        if obj["kind"] in ("ServiceAccount", "Deployment", "Service", "PodDisruptionBudget"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2, "peering": {"enabled": False}}, "needs peering.enabled=true"),
        ({"metrics": {"port": 8081}}, "metrics.port and health.port must differ"),
        (
            {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
            "needs metrics.service.enabled",
        ),
    ],
)
def test_contradictory_values_fail_with_a_reason(helm_path: Path, values: dict[str, object], message: str) -> None:
    with pytest.raises(HelmError, match=message):
        render(helm_path, values)
