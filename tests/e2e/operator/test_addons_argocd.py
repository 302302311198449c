"""GitOps through the real Argo CD v3.6.1: examples/argocd as shipped, synced from a local git
repository (only the repository URL is adapted, tests/support/argocd_gitops.py).

The root Application syncs the operator chart (wave 0, its CRD first) and then the fleets
(wave 1); every fleet's health is Argo CD evaluating health/ttsdeployment.lua, installed as a
user installs it (examples/argocd/argocd-cm.yaml merged into argocd-cm). KEDA v2.18.0 runs for
real: it scales the autoscaled fleet through ``/scale`` while Argo CD watches.

The operator runs as a local process (the chart's Deployment lands on kwok nodes, which run no
container); pods are kwok's, so health comes from status as the operator reports it, with the
kubelet's own report written for a missing Secret (tests/support/kubelet_reports.py).

Needs its own cluster with the add-ons (Argo CD and KEDA are built once and cached: cold builds
take minutes; `python -m ttsfleet.devcluster.addons_build build` builds them ahead).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubelet_reports
import pytest
import yaml
from argocd_gitops import (
    EXAMPLE,
    REPO,
    AppHistory,
    application,
    health_status,
    localize,
    publish,
    resource,
    resource_health,
    revision,
    sync_status,
    watch_applications,
)
from fleet_helpers import condition, get
from operator_process import OperatorProcess

from ttsfleet.devcluster.addons_argocd import GitRepository
from ttsfleet.devcluster.addons_cluster import running
from ttsfleet.devcluster.cluster import ClusterHandle, default_workdir
from ttsfleet.devcluster.waiting import wait_for
from ttsfleet.operator.spec import API_VERSION, KIND

FLEETS_NAMESPACE = "tts"  # the fleets Application's destination
ROOT, OPERATOR_APP, FLEETS_APP = "ttsfleet", "ttsfleet-operator", "ttsfleet-fleets"
FIXED, AUTOSCALED = "tts-standard", "tts-autoscaled"
CRD = "ttsdeployments.tts.ttsfleet.io"
TIMEOUT = 240
ALWAYS_ON = {"start": "0 0 1 1 *", "end": "59 23 31 12 *"}
# Another tree's examples/argocd (and chart), e.g. an older commit's, to see these tests catch
# what it gets wrong; default: this checkout.
SOURCE = Path(os.environ.get("TTSFLEET_ARGOCD_EXAMPLE_SOURCE") or REPO)
# The first run builds Argo CD and KEDA from source inside the module fixture.
pytestmark = pytest.mark.timeout(3600)


@dataclass
class GitOps:
    cluster: ClusterHandle
    repo: GitRepository
    history: AppHistory
    operator: OperatorProcess

    def app(self, name: str) -> dict[str, Any] | None:
        return application(self.cluster, name)

    def fleet_file(self, name: str) -> Path:
        return self.repo.path / EXAMPLE / "fleets" / f"{name}.yaml"

    def edit_fleet(self, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        path = self.fleet_file(name)
        doc = yaml.safe_load(path.read_text())
        change(doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def wait_app(self, name: str, probe: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        return wait_for(
            lambda: (lambda app: app if app and probe(app) else None)(self.app(name)),
            what=f"Application {name}: {what}",
            timeout=TIMEOUT,
            describe=lambda: json.dumps(((self.app(name) or {}).get("status") or {}), indent=1)[-3000:],
        )

    def fleet(self, name: str) -> dict[str, Any]:
        return get(self.cluster, FLEETS_NAMESPACE, "ttsd", name) or {}

    def fleet_with_owners(self, name: str) -> dict[str, Any]:
        """The fleet with its managedFields (kubectl leaves them out unless asked)."""
        out = self.cluster.kubectl(
            "get", "ttsd", name, "-n", FLEETS_NAMESPACE, "-o", "json", "--show-managed-fields"
        ).stdout
        fleet: dict[str, Any] = json.loads(out)
        return fleet

    def statefulset(self, name: str) -> dict[str, Any]:
        return get(self.cluster, FLEETS_NAMESPACE, "sts", name) or {}


def synced_at(sha: str) -> Callable[[dict[str, Any]], bool]:
    return lambda app: revision(app) == sha and sync_status(app) == "Synced"


def sts_at(gitops: GitOps, name: str, replicas: int) -> dict[str, Any] | None:
    sts = gitops.statefulset(name)
    spec_ok = sts.get("spec", {}).get("replicas") == replicas
    return sts if spec_ok and (sts.get("status") or {}).get("readyReplicas", 0) == replicas else None


@pytest.fixture(scope="module")
def argocd_cluster() -> Iterator[ClusterHandle]:
    if os.environ.get("TTSFLEET_TEST_KUBECONFIG") or os.environ.get("TTSFLEET_CLUSTER_BACKEND") == "kind":
        pytest.skip("needs a local cluster with the Argo CD and KEDA add-ons")
    started = time.monotonic()
    with running(default_workdir(f"e2e-argocd-{os.getpid()}"), ("keda", "argocd"), real_nodes=0) as (handle, _):
        print(f"\ncluster with keda+argocd up in {time.monotonic() - started:.1f}s")
        yield handle


@pytest.fixture(scope="module")
def gitops(argocd_cluster: ClusterHandle) -> Iterator[GitOps]:
    """The root Application applied as the example's README says, synced to the end: both waves
    Synced, every fleet Healthy."""
    cluster = argocd_cluster
    repo = GitRepository.create(cluster.workdir / "gitops")
    first = publish(repo, SOURCE)
    # As a user merges it into their argocd-cm: their own field manager, next to the install's keys.
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=argocd-admin", "-f", str(SOURCE / EXAMPLE / "argocd-cm.yaml")
    )
    with watch_applications(cluster) as history:
        started = time.monotonic()
        root = localize((SOURCE / EXAMPLE / "root.yaml").read_text(), repo.url)
        cluster.kubectl("apply", "-f", "-", input=root)
        wait_for(
            lambda: cluster.kubectl("get", "crd", CRD, check=False).returncode == 0,
            what="the chart's CRD, synced by Argo CD in wave 0",
            timeout=TIMEOUT,
        )
        cluster.wait_crds_established(f"crd/{CRD}")
        cluster.wait_for_owner_kind(API_VERSION, KIND)
        operator = OperatorProcess(cluster.env, cluster.logs_dir / "operator.log", namespace=FLEETS_NAMESPACE)
        operator.start()
        try:
            ops = GitOps(cluster, repo, history, operator)
            ops.wait_app(ROOT, lambda a: synced_at(first)(a) and health_status(a) == "Healthy", "Synced and Healthy")
            ops.wait_app(FLEETS_APP, lambda a: health_status(a) == "Healthy", "Healthy")
            print(
                f"root Application applied -> both waves Synced, every fleet Healthy: {time.monotonic() - started:.1f}s"
            )
            yield ops
        finally:
            operator.stop()


def test_waves_put_the_chart_before_the_fleets_and_fleets_go_progressing_then_healthy(gitops: GitOps) -> None:
    seen = gitops.history.all()
    names = [o["metadata"]["name"] for o in seen]
    first_fleets = names.index(FLEETS_APP)
    # Wave 1 is created only once wave 0 is Synced and Healthy (the Application health check
    # from argocd-cm.yaml makes the root wait for it).
    operator_before = [o for o in seen[:first_fleets] if o["metadata"]["name"] == OPERATOR_APP]
    assert operator_before, "the fleets Application appeared before the operator Application"
    assert sync_status(operator_before[-1]) == "Synced", operator_before[-1].get("status")
    assert operator_before[-1]["status"]["operationState"]["phase"] == "Succeeded", operator_before[-1]["status"]
    assert health_status(operator_before[-1]) == "Healthy", operator_before[-1].get("status")
    fleets_app = gitops.app(FLEETS_APP)
    assert (fleets_app or {})["status"]["operationState"]["phase"] == "Succeeded"

    # Argo CD's verdict on each fleet, from the Lua: Progressing while the operator rolls it out,
    # then Healthy.
    for name in (FIXED, AUTOSCALED):
        verdicts = [resource_health(o, KIND, name) for _, o in gitops.history.versions(FLEETS_APP)]
        verdicts = [v for v in verdicts if v]
        assert "Progressing" in verdicts, (name, verdicts)
        assert "Healthy" in verdicts[verdicts.index("Progressing") :], (name, verdicts)
        message = (resource(fleets_app, KIND, name).get("health") or {}).get("message", "")
        assert "Ready=True" in message, message  # the Lua's own message, not a built-in check's

    # Children the operator creates are owned by the fleet, not tracked from git.
    tracked = {(r["kind"], r["name"]) for r in (fleets_app or {})["status"]["resources"]}
    assert tracked == {(KIND, FIXED), (KIND, AUTOSCALED)}, tracked


def test_a_hand_edit_of_a_fixed_size_fleet_is_healed_from_git(gitops: GitOps) -> None:
    cluster = gitops.cluster
    before = gitops.fleet(FIXED)
    generation = before["metadata"]["generation"]
    assert before["spec"]["replicas"] == 2
    started = time.monotonic()
    cluster.kubectl("scale", "ttsd", FIXED, "-n", FLEETS_NAMESPACE, "--replicas=4")
    wait_for(
        lambda: (lambda f: f if f["metadata"]["generation"] >= generation + 2 and f["spec"]["replicas"] == 2 else None)(
            gitops.fleet(FIXED)
        ),
        what=f"Argo CD to heal {FIXED}'s replicas back to git's 2",
        timeout=TIMEOUT,
        describe=lambda: json.dumps(gitops.fleet(FIXED).get("spec")),
    )
    heal = time.monotonic() - started
    wait_for(lambda: sts_at(gitops, FIXED, 2), what="the StatefulSet back at 2 Ready", timeout=TIMEOUT)
    managed = gitops.fleet_with_owners(FIXED)["metadata"]["managedFields"]
    owners = [m["manager"] for m in managed if "f:replicas" in ((m.get("fieldsV1") or {}).get("f:spec") or {})]
    assert "argocd-controller" in owners, owners
    gitops.wait_app(FLEETS_APP, lambda a: sync_status(a) == "Synced", "Synced again")
    print(f"\nhand edit (kubectl scale 2->4) healed by Argo CD self-heal in {heal:.1f}s")


def test_commits_to_a_fixed_size_fleet_reach_its_statefulset(gitops: GitOps) -> None:
    image = "ttsfleet/worker:0.1.1"

    def change(doc: dict[str, Any]) -> None:
        doc["spec"]["replicas"] = 3
        doc["spec"]["image"] = image

    gitops.edit_fleet(FIXED, change)
    started = time.monotonic()
    sha = gitops.repo.commit(f"{FIXED}: 3 replicas, worker 0.1.1")
    gitops.wait_app(FLEETS_APP, synced_at(sha), f"Synced to {sha[:8]}")
    synced = time.monotonic() - started

    def rolled() -> dict[str, Any] | None:
        sts = sts_at(gitops, FIXED, 3)
        containers = ((sts or {}).get("spec") or {}).get("template", {}).get("spec", {}).get("containers", [])
        status = (sts or {}).get("status") or {}
        done = status.get("updatedReplicas") == 3 and status.get("currentRevision") == status.get("updateRevision")
        return sts if any(c.get("image") == image for c in containers) and done else None

    wait_for(rolled, what=f"{FIXED}'s StatefulSet at 3 Ready pods of {image}", timeout=TIMEOUT)
    print(
        f"\ncommit -> Application Synced {synced:.1f}s,"
        f" -> StatefulSet 3 Ready on the new image {time.monotonic() - started:.1f}s"
    )
    gitops.wait_app(FLEETS_APP, lambda a: resource_health(a, KIND, FIXED) == "Healthy", f"{FIXED} Healthy")


def _replicas_writer(fleet: dict[str, Any]) -> tuple[str, str]:
    """Who last wrote spec.replicas, and when (server time, RFC 3339)."""
    for entry in fleet["metadata"].get("managedFields") or []:
        if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}):
            return str(entry["manager"]) + (f" ({entry['subresource']})" if entry.get("subresource") else ""), str(
                entry["time"]
            )
    return "", ""


def test_keda_scales_an_autoscaled_fleet_and_the_application_stays_synced(gitops: GitOps) -> None:
    """A commit adds a pre-scaling window; KEDA (not git) sets replicas; Argo CD, which owns only
    the fields in git, keeps reporting Synced and never syncs the replicas back."""

    def add_window(doc: dict[str, Any]) -> None:
        doc["spec"]["autoscaling"]["pollingIntervalSeconds"] = 5
        doc["spec"]["autoscaling"]["schedules"] = [{"name": "always", "replicas": 3, **ALWAYS_ON}]

    gitops.edit_fleet(AUTOSCALED, add_window)
    started = time.monotonic()
    sha = gitops.repo.commit(f"{AUTOSCALED}: pre-scale to 3")
    gitops.wait_app(FLEETS_APP, synced_at(sha), f"Synced to {sha[:8]}")
    wait_for(lambda: sts_at(gitops, AUTOSCALED, 3), what="KEDA to scale the fleet to 3 Ready", timeout=TIMEOUT)
    scaled = gitops.fleet_with_owners(AUTOSCALED)
    assert "replicas" not in yaml.safe_load(gitops.fleet_file(AUTOSCALED).read_text())["spec"]
    assert scaled["spec"]["replicas"] == 3
    writer, _ = _replicas_writer(scaled)
    # Git does not own the field (the autoscaler does, through /scale).
    assert not writer.startswith("argocd"), scaled["metadata"]["managedFields"]
    synced_operation = gitops.app(FLEETS_APP)["status"]["operationState"]  # type: ignore[index]
    print(f"\ncommit of a cron window -> KEDA -> 3 Ready replicas in {time.monotonic() - started:.1f}s")

    # The positive signal that Argo CD compared after the scale: a reconcile stamped later than a
    # marker written after it (both server-side RFC 3339 times, so they compare as strings).
    marker = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after-scale", "namespace": "default"}}
    gitops.cluster.kubectl("apply", "-f", "-", input=json.dumps(marker))
    marked_at = str((get(gitops.cluster, "default", "configmap", "after-scale") or {})["metadata"]["creationTimestamp"])
    app = gitops.wait_app(
        FLEETS_APP,
        lambda a: str(a["status"].get("reconciledAt", "")) > marked_at,
        "a reconcile after KEDA's scale",
    )
    assert sync_status(app) == "Synced", app["status"].get("sync")
    assert resource(app, KIND, AUTOSCALED).get("status") == "Synced", resource(app, KIND, AUTOSCALED)
    # No sync operation since: Argo CD did not write the replicas back.
    assert app["status"]["operationState"]["startedAt"] == synced_operation["startedAt"], app["status"][
        "operationState"
    ]
    assert gitops.fleet(AUTOSCALED)["spec"]["replicas"] == 3
    # The replicas came from the HPA KEDA made for the fleet's ScaledObject.
    hpa = get(gitops.cluster, FLEETS_NAMESPACE, "hpa", f"keda-hpa-{AUTOSCALED}") or {}
    assert (hpa.get("status") or {}).get("desiredReplicas") == 3, hpa.get("status")


def test_a_missing_secret_turns_the_fleet_and_its_application_degraded(gitops: GitOps) -> None:
    name = "tts-private"
    doc = yaml.safe_load(gitops.fleet_file(FIXED).read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["replicas"] = 1
    doc["spec"]["model"]["secretRef"] = "hf-token"
    gitops.fleet_file(name).write_text(yaml.safe_dump(doc, sort_keys=False))
    sha = gitops.repo.commit(f"{name}: a fleet reading a private model")
    gitops.wait_app(FLEETS_APP, synced_at(sha), f"Synced to {sha[:8]}")
    # What the kubelet reports for a pod whose environment names the absent Secret.
    kubelet_reports.missing_secret(gitops.cluster, FLEETS_NAMESPACE, f"{name}-0", "hf-token")
    app = gitops.wait_app(FLEETS_APP, lambda a: resource_health(a, KIND, name) == "Degraded", f"{name} Degraded")
    message = (resource(app, KIND, name).get("health") or {}).get("message", "")
    assert "hf-token" in message, message
    gitops.wait_app(FLEETS_APP, lambda a: health_status(a) == "Degraded", "Degraded (worst of its fleets)")

    # Removed from git: pruned, and the Application is Healthy again.
    gitops.fleet_file(name).unlink()
    sha = gitops.repo.commit(f"{name}: removed")
    gitops.wait_app(FLEETS_APP, lambda a: synced_at(sha)(a) and health_status(a) == "Healthy", "Healthy after prune")
    wait_for(lambda: not gitops.fleet(name), what=f"{name} pruned", timeout=TIMEOUT)


def test_one_fleet_at_zero_replicas_leaves_the_applications_healthy(gitops: GitOps) -> None:
    gitops.edit_fleet(FIXED, lambda doc: doc["spec"].__setitem__("replicas", 0))
    sha = gitops.repo.commit(f"{FIXED}: paused (0 replicas)")
    wait_for(
        lambda: condition(gitops.fleet(FIXED), "Ready").get("reason") == "ScaledToZero",
        what=f"{FIXED} Ready with reason ScaledToZero",
        timeout=TIMEOUT,
    )
    app = gitops.wait_app(
        FLEETS_APP,
        lambda a: synced_at(sha)(a) and "ScaledToZero" in json.dumps(resource(a, KIND, FIXED).get("health")),
        f"Argo CD's verdict on {FIXED} at zero",
    )
    assert resource_health(app, KIND, FIXED) == "Healthy", resource(app, KIND, FIXED)
    assert health_status(app) == "Healthy", app["status"]["health"]
    root = gitops.wait_app(
        ROOT, lambda a: bool(a["status"].get("reconciledAt", "") > app["status"]["reconciledAt"]), "a later reconcile"
    )
    assert health_status(root) == "Healthy", root["status"]["health"]
