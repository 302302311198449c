"""The Argo CD example: app of apps with sync waves, the fleets folder, and the health check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from argo_health import ARGOCD_CM, HEALTH_KEY, HEALTH_LUA, health
from chartkit import REPO, one, render

from ttsfleet.operator import spec

ARGO = REPO / "examples" / "argocd"


def documents(folder: Path) -> list[dict[str, Any]]:
    return [doc for path in sorted(folder.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def applications() -> dict[str, dict[str, Any]]:
    return {app["metadata"]["name"]: app for app in documents(ARGO / "apps")}


def wave(app: dict[str, Any]) -> int:
    return int(app["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def fleets_app() -> dict[str, Any]:
    return next(a for a in applications().values() if a["spec"]["source"]["path"] == "examples/argocd/fleets")


def operator_app() -> dict[str, Any]:
    return next(a for a in applications().values() if a["spec"]["source"]["path"] == "charts/ttsfleet-operator")


def test_the_root_application_syncs_the_apps_folder() -> None:
    root = yaml.safe_load((ARGO / "root.yaml").read_text())
    assert (REPO / root["spec"]["source"]["path"]) == ARGO / "apps"


def test_the_operator_and_its_crd_sync_before_the_fleets() -> None:
    assert wave(operator_app()) < wave(fleets_app())
    # Within the operator's own sync, the CRD goes first too.
    crd_wave = operator_app()["spec"]["source"]["helm"]["valuesObject"]["crds"]["annotations"]
    assert int(crd_wave["argocd.argoproj.io/sync-wave"]) < 0


def test_the_operator_application_values_render(helm_path: Path) -> None:
    helm = operator_app()["spec"]["source"]["helm"]
    objects = render(helm_path, helm["valuesObject"], release=helm["releaseName"])
    crd = one(objects, "CustomResourceDefinition", f"{spec.PLURAL}.{spec.GROUP}")
    assert crd["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-1"


def test_sync_waves_can_wait_on_application_health() -> None:
    data = yaml.safe_load(ARGOCD_CM.read_text())["data"]
    assert "resource.customizations.health.argoproj.io_Application" in data


def test_a_child_application_still_syncing_or_out_of_sync_holds_the_next_wave() -> None:
    """Argo CD v3.6.1 reports a child Healthy while its own sync still applies later waves
    (tests/e2e/operator/test_addons_argocd.py saw the fleets wave start then)."""
    script = yaml.safe_load(ARGOCD_CM.read_text())["data"]["resource.customizations.health.argoproj.io_Application"]

    def verdict(status: dict[str, Any], **extra: Any) -> str:
        return health({"metadata": {"name": "child"}, "status": status, **extra}, script)[0]

    healthy = {"health": {"status": "Healthy"}, "sync": {"status": "Synced"}}
    assert verdict({**healthy, "operationState": {"phase": "Succeeded"}}) == "Healthy"
    assert verdict({**healthy, "operationState": {"phase": "Running"}}) == "Progressing"
    assert verdict({**healthy, "sync": {"status": "OutOfSync"}}) == "Progressing"
    assert verdict(healthy, operation={"sync": {}}) == "Progressing"
    assert verdict({"health": {"status": "Degraded", "message": "x"}, "sync": {"status": "Synced"}}) == "Degraded"


def test_argocd_cm_carries_the_tested_health_script_verbatim() -> None:
    data = yaml.safe_load(ARGOCD_CM.read_text())["data"]
    assert data[HEALTH_KEY] == HEALTH_LUA.read_text()
    assert f"resource.customizations.health.{spec.GROUP}_{spec.KIND}" == HEALTH_KEY


def test_every_fleet_in_the_gitops_folder_is_a_valid_ttsdeployment() -> None:
    fleets = documents(ARGO / "fleets")
    assert fleets
    for doc in fleets:
        assert (doc["apiVersion"], doc["kind"]) == (spec.API_VERSION, spec.KIND)
        spec.parse_spec(doc["spec"])


def test_autoscaled_fleets_leave_replicas_to_the_autoscaler_and_fixed_ones_to_git() -> None:
    """Server-side apply gives each fleet the owner it needs: Git owns replicas only where Git sets
    them. A blanket ignoreDifferences on /spec/replicas would take fixed-size fleets out of Git's
    control (a hand edit would stay, a commit would change nothing)."""
    kinds = set()
    for doc in documents(ARGO / "fleets"):
        autoscaled = bool(doc["spec"].get("autoscaling", {}).get("enabled"))
        kinds.add(autoscaled)
        if autoscaled:
            assert "replicas" not in doc["spec"], f"{doc['metadata']['name']} would fight KEDA over replicas"
        else:
            assert "replicas" in doc["spec"], f"{doc['metadata']['name']} leaves its size to the schema default"
    assert kinds == {True, False}
    app = fleets_app()
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    assert not [
        rule for rule in app["spec"].get("ignoreDifferences") or [] if "/spec/replicas" in rule.get("jsonPointers", [])
    ]
