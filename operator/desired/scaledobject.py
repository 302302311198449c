"""The KEDA ScaledObject: queue-length scaling plus one cron trigger per schedule.

Who owns replicas: the ScaledObject targets the TTSDeployment itself (its scale subresource),
not the StatefulSet. The HPA that KEDA creates therefore writes ``TTSDeployment.spec.replicas``
through ``/scale``, and the operator copies spec.replicas to the StatefulSet as always. There is
exactly one writer per field (HPA → TTSDeployment, operator → StatefulSet), so the two never
fight, ``kubectl scale ttsd/x`` behaves the same with and without autoscaling, and status
reports the result through the scale subresource. The alternative (target the StatefulSet and
stop applying its replicas) would leave spec.replicas lying about the fleet and make the
operator's apply depend on the autoscaler's state.

For GitOps: with autoscaling on, leave spec.replicas out of git (the schema defaults it) and
sync with server-side apply: the HPA's field manager then owns replicas and Argo CD has no diff.
"""

from __future__ import annotations

from typing import Any

from ttsfleet import contract
from ttsfleet.operator import naming
from ttsfleet.operator import spec as model
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import TTSDeploymentSpec


def queue_query(owner: Owner) -> str:
    """Total queue of the fleet; KEDA divides by the per-pod target (AverageValue).

    No ``or vector(0)``: "no series" is left to the trigger's ``ignoreNullValues``, stated in
    the trigger, not hidden in PromQL. It is "true" (KEDA's default, said out loud) because a
    fleet whose pods are all gone, or not yet scraped, legitimately has no series, and an
    erroring metric stops the HPA from ever scaling down (a closing cron window included). A
    fleet that nothing scrapes is reported by the operator instead (condition Autoscaling=False,
    QueueMetricNotScraped), where a user sees it.
    """
    selector = f'namespace="{owner.namespace}",service="{naming.client_service_name(owner)}"'
    return f"sum({contract.METRIC_QUEUE_LENGTH}{{{selector}}})"


def _triggers(owner: Owner, spec: TTSDeploymentSpec, starts: dict[str, str]) -> list[dict[str, Any]]:
    scaling = spec.autoscaling
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "name": "queue-length",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": scaling.prometheus_address,
                "query": queue_query(owner),
                "threshold": str(scaling.target_queue_length),
                "ignoreNullValues": "true",
            },
        }
    ]
    for schedule in scaling.schedules:
        start = schedule.start or starts.get(schedule.name)
        if start is None:
            continue
        triggers.append(
            {
                "type": "cron",
                "name": f"schedule-{schedule.name}",
                "metadata": {
                    "timezone": schedule.timezone,
                    "start": start,
                    "end": schedule.end,
                    "desiredReplicas": str(schedule.replicas),
                },
            }
        )
    return triggers


def build(owner: Owner, spec: TTSDeploymentSpec, starts: dict[str, str]) -> dict[str, Any] | None:
    """``starts`` maps schedule names to derived cron starts (for schedules given as readyBy)."""
    scaling = spec.autoscaling
    if not scaling.enabled:
        return None
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": naming.metadata(owner, owner.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": model.API_VERSION, "kind": model.KIND, "name": owner.name},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": scaling.polling_interval_seconds,
            "cooldownPeriod": scaling.cooldown_seconds,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds,
                            # One pod at a time: each removed pod drops its warm model.
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                        },
                    },
                },
            },
            "triggers": _triggers(owner, spec, starts),
        },
    }
