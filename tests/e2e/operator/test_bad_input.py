"""Admission refuses every spec a fleet cannot run, naming the field.

A corpus of malformed and hostile TTSDeployments, field by field through the whole spec: wrong
types, out-of-range numbers, negative quantities, formats the StatefulSet, the PodDisruptionBudget,
the Service, KEDA's cron scaler or the worker would refuse later, cross-field contradictions,
absurd lengths and unicode. Each case is one server-side dry-run create against the real API
server (strict field validation, as kubectl does), and the refusal must name the field.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kubernetes
import pytest
from fleet_helpers import IMAGE

from ttsfleet.operator.spec import GROUP, KIND, PLURAL, VERSION

Patch = dict[str, Any] | Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Case:
    id: str
    patch: Patch  # merged into a valid fleet's spec (lists replaced), or a function editing the body
    field: str  # the field path the refusal must name


def base() -> dict[str, Any]:
    """A valid fleet; every case breaks exactly one thing in it."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": "bad-input"},
        "spec": {
            "image": IMAGE,
            # A URL only: dry-run admission never fetches it.
            "model": {"source": "https://models.example.com/chattts", "revision": "v1"},
            "resources": {"gpu": 0, "cpu": "1", "memory": "1Gi"},
        },
    }


def merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def scaling(**fields: Any) -> dict[str, Any]:
    return {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4, **fields}}


def window(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "peak", "start": "0 18 * * *", "end": "0 22 * * *", "replicas": 2}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def one_window(**fields: Any) -> dict[str, Any]:
    return scaling(schedules=[window(**fields)])


def voice(**fields: Any) -> dict[str, Any]:
    return {"voices": [{"id": "default", **fields}]}


def drop(*path: str) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        node = body
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


def replace_spec(value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        body["spec"] = value

    return edit


def rename(name: str) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        body["metadata"]["name"] = name

    return edit


S = "spec."
SCHED = "spec.autoscaling.schedules[0]"
REDIS = "spec.autoscaling.redis"


def redis(**fields: Any) -> dict[str, Any]:
    """A valid redis trigger with ``fields`` changed (None removes a field)."""
    body: dict[str, Any] = {"address": "jobs.redis.svc:6379", "listName": "tts-jobs"}
    body.update(fields)
    return scaling(redis={k: v for k, v in body.items() if v is not None})


CASES: list[Case] = [
    # -- the object itself ---------------------------------------------------------------------
    Case("name-too-long-for-pod-labels", rename("x" * 41), "metadata.name"),
    Case("name-uppercase", rename("Fleet"), "metadata.name"),
    Case("spec-not-an-object", replace_spec("image: x"), "spec"),
    Case("unknown-field-typo", {"imagee": IMAGE}, "spec.imagee"),
    Case("unknown-nested-field", scaling(maxReplica=3), "spec.autoscaling.maxReplica"),
    # -- image -----------------------------------------------------------------------------------
    Case("image-missing", drop("spec", "image"), S + "image"),
    Case("image-empty", {"image": ""}, S + "image"),
    Case("image-with-space", {"image": "ttsfleet/worker :0.1.0"}, S + "image"),
    Case("image-uppercase-repository", {"image": "TTSFleet/Worker:0.1.0"}, S + "image"),
    Case("image-newline-injection", {"image": IMAGE + "\n--privileged"}, S + "image"),
    Case("image-empty-tag", {"image": "ttsfleet/worker:"}, S + "image"),
    Case("image-bad-digest", {"image": "ttsfleet/worker@sha256:xyz"}, S + "image"),
    Case("image-unicode", {"image": "ttsfleet/wörker:0.1.0"}, S + "image"),
    Case("image-absurd-length", {"image": "registry.local/" + "a" * 600}, S + "image"),
    Case("image-not-a-string", {"image": ["ttsfleet/worker"]}, S + "image"),
    # -- model -----------------------------------------------------------------------------------
    Case("model-missing", drop("spec", "model"), S + "model"),
    Case("model-as-string", {"model": "https://models.example.com/chattts"}, S + "model"),
    Case("model-source-missing", {"model": {"source": None}}, S + "model.source"),
    Case("model-source-s3", {"model": {"source": "s3://bucket/chattts"}}, S + "model.source"),
    Case("model-source-ftp", {"model": {"source": "ftp://models.example.com/x"}}, S + "model.source"),
    Case("model-source-empty", {"model": {"source": ""}}, S + "model.source"),
    Case("model-source-newline", {"model": {"source": "https://a.example/x\nrm -rf /"}}, S + "model.source"),
    Case("model-source-absurd-length", {"model": {"source": "https://a.example/" + "a" * 2000}}, S + "model.source"),
    Case("model-name-uppercase", {"model": {"name": "ChatTTS"}}, S + "model.name"),
    Case("model-name-path-traversal", {"model": {"name": "../etc"}}, S + "model.name"),
    Case("model-name-empty", {"model": {"name": ""}}, S + "model.name"),
    Case("model-name-too-long", {"model": {"name": "m" * 64}}, S + "model.name"),
    Case("model-revision-too-long", {"model": {"revision": "r" * 129}}, S + "model.revision"),
    Case("model-sha256-uppercase", {"model": {"sha256": "A" * 64}}, S + "model.sha256"),
    Case("model-sha256-short", {"model": {"sha256": "a" * 63}}, S + "model.sha256"),
    Case("model-sha256-prefixed", {"model": {"sha256": "sha256:" + "a" * 64}}, S + "model.sha256"),
    Case("model-size-garbage", {"model": {"approximateSize": "big"}}, S + "model.approximateSize"),
    Case("model-size-negative", {"model": {"approximateSize": "-1Gi"}}, S + "model.approximateSize"),
    Case("model-larger-than-cache", {"model": {"approximateSize": "30Gi"}}, S + "modelCache.size"),
    Case("model-secret-uppercase", {"model": {"secretRef": "HF_Token"}}, S + "model.secretRef"),
    Case("model-secret-absurd-length", {"model": {"secretRef": "s" * 254}}, S + "model.secretRef"),
    # -- replicas and simple numbers --------------------------------------------------------------
    Case("replicas-string", {"replicas": "3"}, S + "replicas"),
    Case("replicas-fraction", {"replicas": 1.5}, S + "replicas"),
    Case("replicas-negative", {"replicas": -1}, S + "replicas"),
    Case("replicas-too-many", {"replicas": 1001}, S + "replicas"),
    Case("replicas-int64", {"replicas": 2**40}, S + "replicas"),
    Case("max-text-chars-zero", {"maxTextChars": 0}, S + "maxTextChars"),
    Case("max-text-chars-huge", {"maxTextChars": 100_001}, S + "maxTextChars"),
    Case("pull-policy-unknown", {"imagePullPolicy": "Sometimes"}, S + "imagePullPolicy"),
    Case("pull-policy-lowercase", {"imagePullPolicy": "always"}, S + "imagePullPolicy"),
    # -- voices ----------------------------------------------------------------------------------
    Case("voices-not-a-list", {"voices": {"id": "default", "seed": 1}}, S + "voices"),
    Case("voices-empty", {"voices": []}, S + "voices"),
    Case(
        "voices-duplicate-id",
        {"voices": [{"id": "a", "seed": 1}, {"id": "a", "seed": 2}], "defaultVoice": "a"},
        S + "voices[1]",
    ),
    Case("voices-too-many", {"voices": [{"id": f"v{i}", "seed": i} for i in range(65)]}, S + "voices"),
    Case("voice-id-uppercase", voice(id="Narrator", seed=1), S + "voices[0].id"),
    Case("voice-id-unicode", voice(id="café", seed=1), S + "voices[0].id"),
    Case("voice-id-emoji", voice(id="🎤", seed=1), S + "voices[0].id"),
    Case("voice-id-too-long", voice(id="v" * 64, seed=1), S + "voices[0].id"),
    Case("voice-seed-negative", voice(seed=-1), S + "voices[0].seed"),
    Case("voice-seed-above-int32", voice(seed=2**31), S + "voices[0].seed"),
    Case("voice-seed-string", voice(seed="1234"), S + "voices[0].seed"),
    Case("voice-neither-seed-nor-embedding", voice(), S + "voices[0]"),
    Case("voice-seed-and-embedding", voice(seed=1, embedding="蝂"), S + "voices[0]"),
    Case("voice-embedding-empty", voice(embedding=""), S + "voices[0].embedding"),
    Case("voice-embedding-absurd-length", voice(embedding="蝂" * 65537), S + "voices[0].embedding"),
    Case("default-voice-unknown", {"defaultVoice": "nobody"}, S + "defaultVoice"),
    Case("default-voice-empty", {"defaultVoice": ""}, S + "defaultVoice"),
    # -- resources -------------------------------------------------------------------------------
    Case("gpu-negative", {"resources": {"gpu": -1}}, S + "resources.gpu"),
    Case("gpu-too-many", {"resources": {"gpu": 9}}, S + "resources.gpu"),
    Case("gpu-string", {"resources": {"gpu": "1"}}, S + "resources.gpu"),
    Case("cpu-words", {"resources": {"cpu": "four"}}, S + "resources.cpu"),
    Case("cpu-negative-string", {"resources": {"cpu": "-1"}}, S + "resources.cpu"),
    Case("cpu-negative-integer", {"resources": {"cpu": -2}}, S + "resources.cpu"),
    Case("memory-bad-suffix", {"resources": {"memory": "16GB"}}, S + "resources.memory"),
    Case("memory-negative", {"resources": {"memory": "-16Gi"}}, S + "resources.memory"),
    Case("memory-boolean", {"resources": {"memory": True}}, S + "resources.memory"),
    Case(
        "memory-limit-below-request",
        {"resources": {"memory": "2Gi", "memoryLimit": "1Gi"}},
        S + "resources.memoryLimit",
    ),
    Case("cpu-limit-below-request", {"resources": {"cpu": "2", "cpuLimit": "1500m"}}, S + "resources.cpuLimit"),
    Case("cpu-limit-negative", {"resources": {"cpuLimit": -1}}, S + "resources.cpuLimit"),
    # -- scheduling ------------------------------------------------------------------------------
    Case("tolerations-not-a-list", {"tolerations": {"key": "gpu"}}, S + "tolerations"),
    Case("tolerations-too-many", {"tolerations": [{"operator": "Exists"}] * 33}, S + "tolerations"),
    Case(
        "toleration-operator-unknown",
        {"tolerations": [{"key": "gpu", "operator": "Maybe"}]},
        S + "tolerations[0].operator",
    ),
    Case(
        "toleration-effect-unknown",
        {"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "Sometimes"}]},
        S + "tolerations[0].effect",
    ),
    Case(
        "toleration-exists-with-value",
        {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]},
        S + "tolerations[0].value",
    ),
    Case(
        "toleration-seconds-without-noexecute",
        {"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}]},
        S + "tolerations[0].tolerationSeconds",
    ),
    Case(
        "toleration-key-invalid",
        {"tolerations": [{"key": "a gpu!", "operator": "Exists"}]},
        S + "tolerations[0].key",
    ),
    Case("affinity-not-an-object", {"affinity": ["zone-a"]}, S + "affinity"),
    Case("node-selector-bad-key", {"nodeSelector": {"bad key!": "x"}}, S + "nodeSelector"),
    Case("node-selector-value-too-long", {"nodeSelector": {"zone": "z" * 64}}, S + "nodeSelector"),
    Case("node-selector-value-space", {"nodeSelector": {"zone": "zone a"}}, S + "nodeSelector"),
    Case("node-selector-value-number", {"nodeSelector": {"zone": 1}}, S + "nodeSelector.zone"),
    Case("spread-key-empty", {"topologySpread": {"topologyKey": ""}}, S + "topologySpread.topologyKey"),
    Case("spread-key-invalid", {"topologySpread": {"topologyKey": "my zone"}}, S + "topologySpread.topologyKey"),
    Case("spread-skew-zero", {"topologySpread": {"maxSkew": 0}}, S + "topologySpread.maxSkew"),
    Case(
        "spread-unsatisfiable-unknown",
        {"topologySpread": {"whenUnsatisfiable": "Never"}},
        S + "topologySpread.whenUnsatisfiable",
    ),
    Case("priority-class-space", {"priorityClassName": "high priority"}, S + "priorityClassName"),
    Case("service-account-underscore", {"serviceAccountName": "tts_sa"}, S + "serviceAccountName"),
    Case("service-account-empty", {"serviceAccountName": ""}, S + "serviceAccountName"),
    # -- model cache -----------------------------------------------------------------------------
    Case("storage-class-space", {"modelCache": {"storageClassName": "local ssd"}}, S + "modelCache.storageClassName"),
    Case("storage-class-empty", {"modelCache": {"storageClassName": ""}}, S + "modelCache.storageClassName"),
    Case("cache-size-words", {"modelCache": {"size": "big"}}, S + "modelCache.size"),
    Case("cache-size-zero", {"modelCache": {"size": "0"}}, S + "modelCache.size"),
    Case("cache-size-negative", {"modelCache": {"size": "-20Gi"}}, S + "modelCache.size"),
    # -- warmup and batching ---------------------------------------------------------------------
    Case("warmup-too-many-sentences", {"warmup": {"sentences": ["Hi."] * 17}}, S + "warmup.sentences"),
    Case("warmup-sentence-empty", {"warmup": {"sentences": [""]}}, S + "warmup.sentences[0]"),
    Case("warmup-sentence-blank", {"warmup": {"sentences": ["  \t "]}}, S + "warmup.sentences[0]"),
    Case(
        "warmup-sentence-above-max-text",
        {"maxTextChars": 10, "warmup": {"sentences": ["This sentence is too long."]}},
        S + "warmup.sentences",
    ),
    Case("warmup-timeout-short", {"warmup": {"timeoutSeconds": 29}}, S + "warmup.timeoutSeconds"),
    Case("warmup-timeout-long", {"warmup": {"timeoutSeconds": 7201}}, S + "warmup.timeoutSeconds"),
    Case("batch-zero", {"batching": {"maxBatchSize": 0}}, S + "batching.maxBatchSize"),
    Case("batch-huge", {"batching": {"maxBatchSize": 65}}, S + "batching.maxBatchSize"),
    Case(
        "queue-delay-negative",
        {"batching": {"maxQueueDelayMicroseconds": -1}},
        S + "batching.maxQueueDelayMicroseconds",
    ),
    Case("instances-zero", {"batching": {"instances": 0}}, S + "batching.instances"),
    # -- rollout and disruption ------------------------------------------------------------------
    Case("strategy-unknown", {"rollout": {"strategy": "BlueGreen"}}, S + "rollout.strategy"),
    Case("partition-negative", {"rollout": {"partition": -1}}, S + "rollout.partition"),
    Case("partition-above-int32", {"rollout": {"partition": 2**31}}, S + "rollout.partition"),
    Case("partition-with-on-delete", {"rollout": {"strategy": "OnDelete", "partition": 1}}, S + "rollout.partition"),
    Case("max-unavailable-words", {"disruption": {"maxUnavailable": "lots"}}, S + "disruption.maxUnavailable"),
    Case(
        "max-unavailable-over-100-percent", {"disruption": {"maxUnavailable": "150%"}}, S + "disruption.maxUnavailable"
    ),
    Case("max-unavailable-negative", {"disruption": {"maxUnavailable": -1}}, S + "disruption.maxUnavailable"),
    Case("drain-negative", {"disruption": {"drainSeconds": -1}}, S + "disruption.drainSeconds"),
    Case("drain-too-long", {"disruption": {"drainSeconds": 3601}}, S + "disruption.drainSeconds"),
    # -- autoscaling -----------------------------------------------------------------------------
    Case("autoscaling-enabled-string", {"autoscaling": {"enabled": "yes"}}, S + "autoscaling.enabled"),
    Case("min-above-max", scaling(minReplicas=5, maxReplicas=2), S + "autoscaling.minReplicas"),
    Case("min-negative", scaling(minReplicas=-1), S + "autoscaling.minReplicas"),
    Case("max-zero", scaling(minReplicas=0, maxReplicas=0), S + "autoscaling.maxReplicas"),
    Case("zero-without-schedule", scaling(minReplicas=0), S + "autoscaling.minReplicas"),
    Case("target-queue-zero", scaling(targetQueueLength=0), S + "autoscaling.targetQueueLength"),
    Case("polling-zero", scaling(pollingIntervalSeconds=0), S + "autoscaling.pollingIntervalSeconds"),
    Case("cooldown-negative", scaling(cooldownSeconds=-1), S + "autoscaling.cooldownSeconds"),
    Case(
        "stabilization-too-long",
        scaling(scaleDownStabilizationSeconds=3601),
        S + "autoscaling.scaleDownStabilizationSeconds",
    ),
    Case("prometheus-not-a-url", scaling(prometheusAddress="prometheus:9090"), S + "autoscaling.prometheusAddress"),
    Case(
        "prometheus-url-with-space",
        scaling(prometheusAddress="http://prom etheus:9090"),
        S + "autoscaling.prometheusAddress",
    ),
    Case("lead-margin-negative", scaling(leadTimeMarginSeconds=-1), S + "autoscaling.leadTimeMarginSeconds"),
    Case(
        "schedules-too-many",
        scaling(schedules=[window(name=f"w{i}") for i in range(17)]),
        S + "autoscaling.schedules",
    ),
    Case(
        "schedules-duplicate-name",
        scaling(schedules=[window(), window(start="0 6 * * *", end="0 9 * * *")]),
        S + "autoscaling.schedules[1]",
    ),
    Case("schedule-name-uppercase", one_window(name="Peak"), SCHED + ".name"),
    Case("schedule-name-bidi", one_window(name="peak\u202e"), SCHED + ".name"),
    Case("schedule-replicas-zero", one_window(replicas=0), SCHED + ".replicas"),
    Case("schedule-above-max", one_window(replicas=10), S + "autoscaling.schedules"),
    Case("schedule-start-equals-end", one_window(start="0 18 * * *", end="0 18 * * *"), SCHED + ".end"),
    Case(
        "schedule-ready-by-equals-end",
        one_window(start=None, readyBy="0 22 * * *", end="0 22 * * *"),
        SCHED + ".end",
    ),
    Case("schedule-start-and-ready-by", one_window(readyBy="0 19 * * *"), SCHED),
    Case("schedule-neither-start-nor-ready-by", one_window(start=None), SCHED),
    Case("cron-words", one_window(end="at six"), SCHED + ".end"),
    Case("cron-six-fields", one_window(start="0 0 18 * * *"), SCHED + ".start"),
    Case("cron-minute-61", one_window(start="61 18 * * *"), SCHED + ".start"),
    Case("cron-hour-24", one_window(end="0 24 * * *"), SCHED + ".end"),
    Case("cron-day-32", one_window(start="0 18 32 * *"), SCHED + ".start"),
    Case("cron-month-13", one_window(start="0 18 * 13 *"), SCHED + ".start"),
    Case("cron-weekday-8", one_window(end="0 22 * * 8"), SCHED + ".end"),
    Case("cron-fullwidth-digit", one_window(start="0 18 * * \uff15"), SCHED + ".start"),
    Case("ready-by-minute-99", one_window(start=None, readyBy="99 18 * * *"), SCHED + ".readyBy"),
    Case("ready-by-day-of-month", one_window(start=None, readyBy="0 19 1 * *"), SCHED + ".readyBy"),
    Case("ready-by-hour-step", one_window(start=None, readyBy="0 */2 * * *"), SCHED + ".readyBy"),
    Case("ready-by-weekday-step", one_window(start=None, readyBy="0 19 * * */2"), SCHED + ".readyBy"),
    Case("timezone-unknown", one_window(timezone="Mars/Olympus_Mons"), SCHED + ".timezone"),
    Case("timezone-empty", one_window(timezone=""), SCHED + ".timezone"),
    Case("timezone-local", one_window(timezone="Local"), SCHED + ".timezone"),
    Case("timezone-absurd-length", one_window(timezone="Europe/" + "P" * 100), SCHED + ".timezone"),
    # -- service and monitoring ------------------------------------------------------------------
    Case("service-type-external-name", {"service": {"type": "ExternalName"}}, S + "service.type"),
    Case("grpc-port-zero", {"service": {"grpcPort": 0}}, S + "service.grpcPort"),
    Case("http-port-above-65535", {"service": {"httpPort": 65536}}, S + "service.httpPort"),
    Case("scrape-interval-no-unit", {"monitoring": {"interval": "15"}}, S + "monitoring.interval"),
    Case("scrape-interval-zero", {"monitoring": {"interval": "0s"}}, S + "monitoring.interval"),
    Case("monitor-label-bad-key", {"monitoring": {"labels": {"team name": "x"}}}, S + "monitoring.labels"),
    Case("monitor-label-value-too-long", {"monitoring": {"labels": {"team": "t" * 64}}}, S + "monitoring.labels"),
    # -- autoscaling on a Redis queue ------------------------------------------------------------
    Case("redis-address-missing", redis(address=None), REDIS + ".address"),
    Case("redis-address-with-scheme", redis(address="redis://jobs:6379"), REDIS + ".address"),
    Case("redis-address-without-port", redis(address="jobs.redis.svc"), REDIS + ".address"),
    Case("redis-address-port-zero", redis(address="jobs:0"), REDIS + ".address"),
    Case("redis-address-port-above-65535", redis(address="jobs:65536"), REDIS + ".address"),
    Case("redis-address-with-credentials", redis(address="default:hunter2@jobs:6379"), REDIS + ".address"),
    Case("redis-address-newline-injection", redis(address="jobs:6379\nFLUSHALL"), REDIS + ".address"),
    Case("redis-address-absurd-length", redis(address="r" * 300 + ":6379"), REDIS + ".address"),
    Case("redis-list-and-stream", redis(stream={"name": "jobs", "consumerGroup": "tts"}), REDIS),
    Case("redis-neither-list-nor-stream", redis(listName=None), REDIS),
    Case("redis-list-name-empty", redis(listName=""), REDIS + ".listName"),
    Case("redis-list-name-with-space", redis(listName="tts jobs"), REDIS + ".listName"),
    Case(
        "redis-stream-without-consumer-group",
        redis(listName=None, stream={"name": "jobs"}),
        REDIS + ".stream.consumerGroup",
    ),
    Case("redis-target-zero", redis(targetLength=0), REDIS + ".targetLength"),
    Case("redis-target-string", redis(targetLength="5"), REDIS + ".targetLength"),
    Case("redis-activation-negative", redis(activationLength=-1), REDIS + ".activationLength"),
    Case("redis-database-negative", redis(databaseIndex=-1), REDIS + ".databaseIndex"),
    Case("redis-tls-string", redis(enableTLS="yes"), REDIS + ".enableTLS"),
    # The password only as a Secret reference: an inline one is an unknown field.
    Case("redis-password-inline", redis(password="hunter2"), REDIS + ".password"),
    Case(
        "redis-password-secret-without-key",
        redis(passwordSecretRef={"name": "redis"}),
        REDIS + ".passwordSecretRef.key",
    ),
    Case(
        "redis-password-secret-name-uppercase",
        redis(passwordSecretRef={"name": "Redis", "key": "password"}),
        REDIS + ".passwordSecretRef.name",
    ),
    Case("redis-as-string", scaling(redis="jobs:6379"), REDIS),
]


def body_of(case: Case) -> dict[str, Any]:
    body = base()
    if callable(case.patch):
        case.patch(body)
    else:
        merge(body["spec"], case.patch)
        _drop_nones(body["spec"])
    return body


def _drop_nones(node: Any) -> None:
    if isinstance(node, dict):
        for key in [k for k, v in node.items() if v is None]:
            del node[key]
        for value in node.values():
            _drop_nones(value)
    elif isinstance(node, list):
        for value in node:
            _drop_nones(value)


@pytest.fixture(scope="module")
def api(cluster: Any, crds: None) -> Iterator[kubernetes.client.CustomObjectsApi]:
    client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield kubernetes.client.CustomObjectsApi(client)
    finally:
        client.close()


def dry_run_create(api: kubernetes.client.CustomObjectsApi, body: dict[str, Any]) -> str | None:
    """The API server's refusal message, or None when it accepted the object."""
    try:
        api.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, body, dry_run="All", field_validation="Strict"
        )
    except kubernetes.client.ApiException as refusal:
        try:
            return str(json.loads(refusal.body or "").get("message"))
        except (TypeError, ValueError):
            return str(refusal.body)
    return None


def test_the_corpus_is_large_and_unique() -> None:
    assert len(CASES) >= 80
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_base_fleet_is_accepted(api: kubernetes.client.CustomObjectsApi) -> None:
    # Otherwise every refusal below could be about the base, not the case.
    assert dry_run_create(api, base()) is None


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_spec_is_refused_naming_the_field(api: kubernetes.client.CustomObjectsApi, case: Case) -> None:
    message = dry_run_create(api, body_of(case))
    assert message is not None, f"{case.id} was accepted"
    assert case.field in message, message
