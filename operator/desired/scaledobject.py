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
from ttsfleet.operator.desired import triggerauthentication
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import RedisSpec, TTSDeploymentSpec


def queue_query(owner: Owner) -> str:
    """Total queue of the fleet; KEDA divides by the per-pod target (AverageValue).

    No ``or vector(0)``: "no series" is left to the trigger's ``ignoreNullValues``, stated in
    the trigger, not hidden in PromQL. It is "true" (KEDA's default, said out loud) because a
    fleet whose pods are all gone, or not yet scraped, legitimately has no series, and an
    erroring metric stops the HPA from ever scaling down (a closing cron window included). A
    fleet that nothing scrapes is reported by the operator instead (condition Autoscaling=False,
    QueueMetricNotScraped), where a user sees it.

    ``service`` is the label the Prometheus Operator gives a target: the name of the Service its
    ServiceMonitor selected, i.e. the headless one (the only one with the metrics port), not the
    client Service; selecting the client Service's name matched no series at all.
    """
    selector = f'namespace="{owner.namespace}",service="{naming.headless_service_name(owner)}"'
    return f"sum({contract.METRIC_QUEUE_LENGTH}{{{selector}}})"


def redis_trigger(owner: Owner, redis: RedisSpec) -> dict[str, Any]:
    """KEDA's ``redis`` (list) or ``redis-streams`` (consumer group) trigger. AverageValue: the
    pending jobs divided by targetLength is the replica count. The password is only named, through
    the TriggerAuthentication (never a metadata value, which anyone reading the ScaledObject sees)."""
    metadata: dict[str, str] = {"address": redis.address, "databaseIndex": str(redis.database_index)}
    if redis.stream is not None:
        kind = "redis-streams"
        metadata |= {
            "stream": redis.stream.name,
            "consumerGroup": redis.stream.consumer_group,
            "pendingEntriesCount": str(redis.target_length),
            # The streams scaler's activation threshold, whatever it counts (here: pending entries).
            "activationLagCount": str(redis.activation_length),
        }
    else:
        assert redis.list_name is not None  # the CRD requires exactly one of listName and stream
        kind = "redis"
        metadata |= {
            "listName": redis.list_name,
            "listLength": str(redis.target_length),
            "activationListLength": str(redis.activation_length),
        }
    if redis.enable_tls:
        metadata["enableTLS"] = "true"
    if redis.username is not None:
        metadata["username"] = redis.username
    trigger: dict[str, Any] = {"type": kind, "name": "redis-queue", "metricType": "AverageValue", "metadata": metadata}
    if redis.password_secret_ref is not None:
        trigger["authenticationRef"] = {"name": triggerauthentication.name(owner), "kind": "TriggerAuthentication"}
    return trigger


def _queue_trigger(owner: Owner, spec: TTSDeploymentSpec) -> dict[str, Any]:
    scaling = spec.autoscaling
    return {
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


def _triggers(owner: Owner, spec: TTSDeploymentSpec, starts: dict[str, str]) -> list[dict[str, Any]]:
    scaling = spec.autoscaling
    triggers: list[dict[str, Any]] = []
    # With a Redis queue and nothing scraping the fleet, the per-pod queue trigger could only fail
    # (or read nothing): KEDA's HPA never scales down while any of its metrics errors.
    if scaling.redis is None or spec.monitoring.service_monitor:
        triggers.append(_queue_trigger(owner, spec))
    if scaling.redis is not None:
        triggers.append(redis_trigger(owner, scaling.redis))
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
