"""reconcile() against an in-memory API server: idempotence, pruning, problems, events."""

from __future__ import annotations

import copy
import time
from typing import Any

from fixtures_operator import OWNER, FakeKube, fleet_body, minimal_spec

from ttsfleet.operator import applied, kinds, naming, reconcile
from ttsfleet.operator.kube import ApiError
from ttsfleet.operator.reconcile import Reconciler

NOW = "2026-01-01T00:00:00Z"


def setup(spec: dict[str, Any], **kube_args: Any) -> tuple[FakeKube, Reconciler]:
    kube = FakeKube(**kube_args)
    kube.put(fleet_body(spec))
    return kube, Reconciler(kube, now=lambda: NOW, instance="test")  # type: ignore[arg-type]


def fleet(kube: FakeKube) -> dict[str, Any]:
    body = kube.get(kinds.TTSDEPLOYMENT, OWNER.namespace, OWNER.name)
    assert body is not None
    return body


def condition(kube: FakeKube, type_: str) -> dict[str, Any]:
    return next(c for c in fleet(kube)["status"]["conditions"] if c["type"] == type_)


def mark_statefulset(kube: FakeKube, replicas: int, ready: int) -> None:
    sts = kube.objects[(kinds.STATEFULSET, OWNER.namespace, OWNER.name)]
    sts["metadata"]["generation"] = 1
    sts["status"] = {
        "observedGeneration": 1,
        "replicas": replicas,
        "readyReplicas": ready,
        "updatedReplicas": replicas,
        "currentRevision": "fleet-1",
        "updateRevision": "fleet-1",
    }


def test_first_pass_creates_children_and_status() -> None:
    kube, reconciler = setup(minimal_spec(replicas=2))
    result = reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert result is not None and result.status_written
    kinds_applied = sorted(o["kind"] for o in kube.applied)
    assert kinds_applied == ["ConfigMap", "NetworkPolicy", "PodDisruptionBudget", "Service", "Service", "StatefulSet"]
    assert condition(kube, "Ready")["status"] == "False"
    assert fleet(kube)["status"]["selector"] == naming.selector_string(OWNER)
    assert [(e["reason"], e["type"]) for e in kube.events] == [("ReplicasNotReady", "Normal")]


def test_reconcile_twice_changes_nothing() -> None:
    kube, reconciler = setup(minimal_spec(replicas=2))
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    mark_statefulset(kube, 2, 2)
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert condition(kube, "Ready")["status"] == "True"
    writes = kube.writes
    result = reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert result is not None and not result.status_written and result.applied == 0
    # Not even a no-op server-side apply: a converged fleet costs no write request at all.
    assert kube.writes == writes


def test_ready_transition_emits_one_event() -> None:
    kube, reconciler = setup(minimal_spec())
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    before = len(kube.events)
    mark_statefulset(kube, 1, 1)
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    new = kube.events[before:]
    assert [(e["reason"], e["type"]) for e in new] == [
        ("AllReplicasReady", "Normal"),
        ("RolloutComplete", "Normal"),
    ]
    assert new[0]["involvedObject"]["uid"] == OWNER.uid


def test_stale_children_are_pruned() -> None:
    kube, reconciler = setup(minimal_spec(replicas=3))
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert (kinds.PDB, OWNER.namespace, OWNER.name) in kube.objects
    body = fleet(kube)
    body["spec"]["replicas"] = 1
    kube.put(body)
    result = reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert result is not None and result.pruned == 1
    assert ("PodDisruptionBudget", OWNER.name) in kube.deleted


def test_objects_of_other_owners_are_left_alone() -> None:
    kube, reconciler = setup(minimal_spec())
    stranger = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": "other",
            "namespace": OWNER.namespace,
            "labels": naming.labels(OWNER),
            "ownerReferences": [{"uid": "someone-else", "controller": True}],
        },
    }
    kube.put(stranger)
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert kube.deleted == []


def test_missing_secret_is_reported_not_raised() -> None:
    kube, reconciler = setup(minimal_spec(model={"source": "hf://org/private", "secretRef": "creds"}))
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    mark_statefulset(kube, 1, 0)
    # What the kubelet reports for a container whose environment names an absent Secret.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{OWNER.name}-0", "namespace": OWNER.namespace, "labels": naming.selector_labels(OWNER)},
        "status": {
            "initContainerStatuses": [
                {
                    "name": naming.FETCH_CONTAINER,
                    "state": {
                        "waiting": {"reason": "CreateContainerConfigError", "message": 'secret "creds" not found'}
                    },
                }
            ]
        },
    }
    kube.put(pod)
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    ready = condition(kube, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    assert condition(kube, "Degraded")["status"] == "True"
    assert any(e["type"] == "Warning" and e["reason"] == "SecretNotFound" for e in kube.events)
    # The Secret appears: the kubelet starts the pod, and the fleet turns Ready.
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    kube.put(pod)
    mark_statefulset(kube, 1, 1)
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert condition(kube, "Ready")["status"] == "True"


def test_rejected_child_becomes_a_condition() -> None:
    kube, reconciler = setup(minimal_spec())
    kube.fail_apply["StatefulSet"] = ApiError(422, "Invalid", "spec.template: bad toleration")
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    ready = condition(kube, "Ready")
    assert ready["reason"] == "ApplyFailed"
    assert "bad toleration" in ready["message"]


def test_an_addon_kind_refused_while_its_crd_goes_away_is_retried_without_degrading_the_fleet() -> None:
    kube, reconciler = converged(minimal_spec(monitoring={"serviceMonitor": True}))
    kube.delete(kinds.SERVICEMONITOR, OWNER.namespace, OWNER.name)
    # What kube-apiserver answered (checked): a 403 that is not about permissions.
    refused = (
        'servicemonitors.monitoring.coreos.com "fleet" is forbidden: '
        "create not allowed while custom resource definition is terminating"
    )
    kube.fail_apply["ServiceMonitor"] = ApiError(403, "Forbidden", refused)
    result = reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert result is not None and result.retry
    assert condition(kube, "Ready")["status"] == "True"
    assert condition(kube, "Degraded")["status"] == "False"
    # A fleet's own kind refused the same way is the fleet's problem.
    kube.fail_apply = {"Service": ApiError(404, "NotFound", "the server could not find the requested resource")}
    kube.delete(kinds.SERVICE, OWNER.namespace, OWNER.name)
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert condition(kube, "Ready")["reason"] == "ApplyFailed"
    # And a ServiceMonitor refused for want of permission is one too.
    kube.fail_apply = {"ServiceMonitor": ApiError(403, "Forbidden", "User cannot create servicemonitors")}
    monitor = kube.objects[(kinds.SERVICEMONITOR, OWNER.namespace, OWNER.name)]
    kube.delete(kinds.SERVICEMONITOR, OWNER.namespace, OWNER.name)
    reconciler.child_deleted(OWNER.namespace, OWNER.name, monitor)  # as the watch reports it
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert "cannot create servicemonitors" in condition(kube, "Ready")["message"]


def test_server_errors_propagate_for_retry() -> None:
    kube, reconciler = setup(minimal_spec())
    kube.fail_apply["StatefulSet"] = ApiError(500, "InternalError", "etcd timeout")
    try:
        reconciler.reconcile(OWNER.namespace, OWNER.name)
    except ApiError as err:
        assert err.status == 500
    else:
        raise AssertionError("a server error must propagate")
    assert reconciler.retries.pending((OWNER.namespace, OWNER.name)) is not None


def test_a_failed_apply_is_retried_soon_and_the_backoff_resets_once_it_heals() -> None:
    kube, reconciler = setup(minimal_spec())
    key = (OWNER.namespace, OWNER.name)
    # What admission says about a CRD installed seconds ago, until its discovery cache refreshes.
    kube.fail_apply["ConfigMap"] = ApiError(403, "Forbidden", "cannot find RESTMapping for Kind TTSDeployment")
    first = reconciler.reconcile(*key)
    assert first is not None and first.retry
    assert reconciler.retries.pending(key) is not None
    # Bracket the pass with the clock rather than compare with "now" afterwards: a stall of the
    # machine between the pass and the check must not read as a wrong delay.
    before = time.monotonic()
    reconciler.reconcile(*key)
    after = time.monotonic()
    due = reconciler.retries.pending(key)
    assert due is not None and before + 2 <= due <= after + 2  # 1 s after the first failure, 2 s now
    del kube.fail_apply["ConfigMap"]
    healed = reconciler.reconcile(*key)
    assert healed is not None and not healed.retry
    assert reconciler.retries.pending(key) is None
    assert condition(kube, "Ready")["reason"] != "ApplyFailed"


def test_invalid_spec_is_reported() -> None:
    kube, reconciler = setup({"model": {"source": "hf://a/b"}})
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert condition(kube, "Ready")["reason"] == "InvalidSpec"
    assert kube.applied == []


def test_deleted_or_deleting_fleets_are_skipped() -> None:
    kube, reconciler = setup(minimal_spec())
    body = fleet(kube)
    body["metadata"]["deletionTimestamp"] = NOW
    kube.put(body)
    assert reconciler.reconcile(OWNER.namespace, OWNER.name) is None
    assert reconciler.reconcile(OWNER.namespace, "gone") is None
    assert kube.applied == []


def test_optional_addons_missing_become_conditions() -> None:
    spec = minimal_spec(
        replicas=2,
        autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 3},
        monitoring={"serviceMonitor": True},
    )
    kube, reconciler = setup(spec, served={kinds.SCALEDOBJECT: False, kinds.SERVICEMONITOR: False})
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert condition(kube, "Autoscaling")["reason"] == "KEDANotInstalled"
    assert condition(kube, "Monitoring")["reason"] == "ServiceMonitorCRDMissing"
    assert not any(o["kind"] in ("ScaledObject", "ServiceMonitor") for o in kube.applied)


def test_autoscaling_applies_scaledobject_and_reports_derived_starts() -> None:
    spec = minimal_spec(
        autoscaling={
            "enabled": True,
            "leadTimeMarginSeconds": 60,
            "schedules": [{"name": "eve", "readyBy": "0 19 * * *", "end": "0 23 * * *", "replicas": 3}],
        },
        warmup={"timeoutSeconds": 240},
        # The queue trigger's metric needs a scrape path, else Autoscaling says QueueMetricNotScraped.
        monitoring={"serviceMonitor": True},
    )
    kube, reconciler = setup(spec)
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    scaled = kube.objects[(kinds.SCALEDOBJECT, OWNER.namespace, OWNER.name)]
    cron = scaled["spec"]["triggers"][1]["metadata"]
    assert cron["start"] == "55 18 * * *"  # 240 s warmup budget + 60 s margin, no measurement yet
    assert fleet(kube)["status"]["schedules"] == [{"name": "eve", "start": "55 18 * * *", "leadSeconds": 300}]
    assert condition(kube, "Autoscaling")["status"] == "True"


def test_fleet_deleted_during_a_pass_is_not_an_error() -> None:
    kube, reconciler = setup(minimal_spec())
    original_apply = kube.apply

    def apply_then_vanish(obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        kube.objects.pop((kinds.TTSDEPLOYMENT, OWNER.namespace, OWNER.name), None)
        return original_apply(obj, force=force)

    kube.apply = apply_then_vanish  # type: ignore[method-assign]
    result = reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert result is not None
    assert kube.status_writes == [] and kube.events == []


def converged(spec: dict[str, Any]) -> tuple[FakeKube, Reconciler]:
    kube, reconciler = setup(spec)
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    mark_statefulset(kube, spec.get("replicas", 1), spec.get("replicas", 1))
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    return kube, reconciler


def test_a_fresh_operator_process_writes_nothing_to_a_converged_fleet() -> None:
    """After a restart nothing is remembered: what is on the children must be enough."""
    kube, _ = converged(minimal_spec(replicas=2))
    writes = kube.writes
    restarted = Reconciler(kube, now=lambda: NOW, instance="test")  # type: ignore[arg-type]
    result = restarted.reconcile(OWNER.namespace, OWNER.name)
    assert result is not None and result.applied == 0 and kube.writes == writes


def test_hand_edits_and_deleted_children_are_repaired_and_only_they_are_applied() -> None:
    kube, reconciler = converged(minimal_spec(replicas=2))
    kube.applied.clear()
    kube.edit(kinds.STATEFULSET, OWNER.namespace, OWNER.name, lambda o: o["spec"].update(replicas=1))
    cm = naming.configmap_name(OWNER)
    kube.delete(kinds.CONFIGMAP, OWNER.namespace, cm)
    result = reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert result is not None and result.applied == 2
    assert sorted(o["kind"] for o in kube.applied) == ["ConfigMap", "StatefulSet"]
    assert kube.objects[(kinds.STATEFULSET, OWNER.namespace, OWNER.name)]["spec"]["replicas"] == 2
    assert (kinds.CONFIGMAP, OWNER.namespace, cm) in kube.objects


def test_a_field_dropped_from_the_desired_object_is_applied_away() -> None:
    """Every value still matches, but the desired object lost a field: the stamp tells."""
    kube, reconciler = converged(minimal_spec(replicas=2, topologySpread={"whenUnsatisfiable": "DoNotSchedule"}))
    body = fleet(kube)
    del body["spec"]["topologySpread"]
    kube.put(body)
    kube.applied.clear()
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert [o["kind"] for o in kube.applied] == ["StatefulSet"]


def test_a_cache_that_lags_behind_our_own_apply_causes_no_second_apply() -> None:
    kube, reconciler = setup(minimal_spec())
    before = reconciler.source.observe(OWNER.namespace, OWNER.name)  # nothing applied yet
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    applies = len(kube.applied)
    reconciler.reconcile(OWNER.namespace, OWNER.name, before)  # the watch has shown nothing yet
    assert len(kube.applied) == applies


def test_a_child_deleted_before_any_pass_saw_it_is_applied_again() -> None:
    """Deleted right after our apply: the watch never showed it live, only its deletion."""
    kube, reconciler = setup(minimal_spec())
    before = reconciler.source.observe(OWNER.namespace, OWNER.name)  # the watch lags: nothing yet
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    cm = naming.configmap_name(OWNER)
    deleted = kube.objects[(kinds.CONFIGMAP, OWNER.namespace, cm)]
    kube.delete(kinds.CONFIGMAP, OWNER.namespace, cm)
    kube.applied.clear()
    reconciler.reconcile(OWNER.namespace, OWNER.name, before)
    assert kube.applied == []  # without the deletion event this is our apply not shown yet

    reconciler.child_deleted(OWNER.namespace, OWNER.name, deleted)
    reconciler.reconcile(OWNER.namespace, OWNER.name, before)
    assert [o["kind"] for o in kube.applied] == ["ConfigMap"]
    assert (kinds.CONFIGMAP, OWNER.namespace, cm) in kube.objects


def test_a_child_the_watch_never_shows_is_looked_up_and_applied_only_if_gone(monkeypatch: Any) -> None:
    """Deleted before the watch's first listing: no deletion event ever comes. Once the watch is
    overdue, the pass reads the child from the API server: gone is applied again, present is not."""
    kube, reconciler = setup(minimal_spec())
    before = reconciler.source.observe(OWNER.namespace, OWNER.name)  # the watch never shows anything
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    children = len(kube.applied)
    cm = naming.configmap_name(OWNER)
    kube.delete(kinds.CONFIGMAP, OWNER.namespace, cm)
    kube.applied.clear()
    reads = kube.reads
    reconciler.reconcile(OWNER.namespace, OWNER.name, before)
    assert (kube.applied, kube.reads) == ([], reads)  # the watch may still be on its way

    monkeypatch.setattr(reconcile, "WATCH_SHOWS_AN_APPLY_SECONDS", 0.0)
    reads = kube.reads
    reconciler.reconcile(OWNER.namespace, OWNER.name, before)
    assert [o["kind"] for o in kube.applied] == ["ConfigMap"]  # looked up: gone
    assert kube.reads - reads == children  # one read per overdue child, nothing listed

    kube.applied.clear()
    reconciler.reconcile(OWNER.namespace, OWNER.name, before)
    assert kube.applied == []  # looked up again: all there, nothing to write


def test_the_deletion_of_an_older_child_of_the_same_name_changes_nothing() -> None:
    kube, reconciler = converged(minimal_spec())
    cm = naming.configmap_name(OWNER)
    older = copy.deepcopy(kube.objects[(kinds.CONFIGMAP, OWNER.namespace, cm)])
    older["metadata"]["uid"] = "an-earlier-one"
    reconciler.child_deleted(OWNER.namespace, OWNER.name, older)
    kube.applied.clear()
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert kube.applied == []


def ready_pods(count: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{OWNER.name}-{i}",
                "namespace": OWNER.namespace,
                "uid": f"pod-{i}",
                "labels": naming.labels(OWNER),
                "creationTimestamp": f"2026-01-01T00:00:{i:02d}Z",
            },
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:01:00Z"}]
            },
        }
        for i in range(count)
    ]


def test_a_fleet_of_25_ready_pods_writes_its_status_once_and_then_never() -> None:
    kube, reconciler = setup(minimal_spec(replicas=25))
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    mark_statefulset(kube, 25, 25)
    for pod in ready_pods(25):
        kube.put(pod)
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert len(fleet(kube)["status"]["sampledPods"]) == 20
    writes = kube.writes
    for _ in range(10):
        reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert kube.writes == writes


def test_drift_ignores_what_the_api_server_adds_or_normalises_but_not_edits() -> None:
    want = applied.stamp(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s", "labels": {"a": "b"}},
            "spec": {"ports": [{"port": 80}], "selector": {}, "resources": {"cpu": "0.5", "memory": "1Gi"}},
        }
    )
    live = copy.deepcopy(want)
    live["metadata"].update(uid="u", resourceVersion="3", labels={"a": "b", "added-by": "someone"})
    del live["spec"]["selector"]  # empty maps are dropped
    live["spec"]["ports"][0]["protocol"] = "TCP"  # defaulted
    live["spec"]["resources"]["cpu"] = "500m"  # normalised
    live["status"] = {"loadBalancer": {}}
    assert applied.drift(want, live) is None
    live["spec"]["ports"][0]["port"] = 81
    assert applied.drift(want, live) == ".spec.ports[0].port differs"
    assert applied.drift(want, None) == "missing"
    unstamped = copy.deepcopy(want)
    del unstamped["metadata"]["annotations"][applied.ANNOTATION]
    assert applied.drift(want, unstamped) == "desired state changed"


def test_while_other_fleets_wait_for_children_a_pass_leaves_its_status_for_later() -> None:
    """A burst of new fleets: children first for all of them, status writes after (issue 11)."""
    kube, reconciler = setup(minimal_spec(replicas=2))
    result = reconciler.reconcile(OWNER.namespace, OWNER.name, others_wait=True)
    assert result is not None and result.applied > 0
    assert result.status_deferred and not result.status_written
    assert "status" not in fleet(kube) and kube.events == []
    # A pass with nothing to apply leaves it too (a child's watch event brings one in a burst).
    result = reconciler.reconcile(OWNER.namespace, OWNER.name, others_wait=True)
    assert result is not None and result.applied == 0 and result.status_deferred and not result.status_written
    assert "status" not in fleet(kube) and kube.events == []
    # The burst is over (the controller's later lane): the status and its Event are written.
    result = reconciler.reconcile(OWNER.namespace, OWNER.name, others_wait=False)
    assert result is not None and result.applied == 0 and result.status_written and not result.status_deferred
    assert condition(kube, "Ready")["status"] == "False"
    assert [e["reason"] for e in kube.events] == ["ReplicasNotReady"]


def test_with_nobody_waiting_the_first_pass_writes_its_status_at_once() -> None:
    kube, reconciler = setup(minimal_spec(replicas=2))
    result = reconciler.reconcile(OWNER.namespace, OWNER.name, others_wait=False)
    assert result is not None and result.applied > 0 and result.status_written and not result.status_deferred
    assert condition(kube, "Ready")["status"] == "False"


def test_a_pass_over_children_it_applied_itself_renders_nothing(monkeypatch: Any) -> None:
    """Between passes only references and hashes of the children are kept (1,000 fleets' rendered
    children held ≈30 MB); rendering again happens only when a child may need an apply."""
    from ttsfleet.operator import desired

    kube, reconciler = setup(minimal_spec(replicas=2))
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    renders = 0
    build_all = desired.build_all

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal renders
        renders += 1
        return build_all(*args, **kwargs)

    monkeypatch.setattr(desired, "build_all", counting)
    reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert renders == 0
    kube.edit(
        kinds.SERVICE, OWNER.namespace, naming.client_service_name(OWNER), lambda s: s["spec"].update(type="NodePort")
    )
    result = reconciler.reconcile(OWNER.namespace, OWNER.name)
    assert renders == 1 and result is not None and result.applied == 1
