"""The pure builders: desired children from a spec."""

from __future__ import annotations

from typing import Any

from fixtures_operator import OWNER, minimal_spec

from ttsfleet import contract, modelsource
from ttsfleet.operator import desired, naming
from ttsfleet.operator.desired import configmap, pdb, scaledobject, service, servicemonitor, statefulset
from ttsfleet.operator.spec import parse_spec


def sts(**overrides: Any) -> dict[str, Any]:
    return statefulset.build(OWNER, parse_spec(minimal_spec(**overrides)), config_hash="abc")


def worker(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]["containers"][0]


def test_every_child_is_owned_and_labelled() -> None:
    children = desired.build_all(OWNER, parse_spec(minimal_spec(replicas=3)))
    assert {c["kind"] for c in children} == {
        "ConfigMap",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == OWNER.namespace
        assert meta["ownerReferences"] == [naming.owner_reference(OWNER)]
        assert meta["labels"][naming.LABEL_MANAGED_BY] == naming.FIELD_MANAGER
        assert meta["labels"][naming.LABEL_DEPLOYMENT] == OWNER.name


def test_builders_are_deterministic() -> None:
    spec = parse_spec(minimal_spec(replicas=2))
    assert desired.build_all(OWNER, spec) == desired.build_all(OWNER, spec)


def test_statefulset_basics() -> None:
    obj = sts(replicas=3)
    assert obj["spec"]["replicas"] == 3
    assert obj["spec"]["serviceName"] == naming.headless_service_name(OWNER)
    assert obj["spec"]["selector"]["matchLabels"] == naming.selector_labels(OWNER)
    template = obj["spec"]["template"]
    assert naming.selector_labels(OWNER).items() <= template["metadata"]["labels"].items()
    assert template["metadata"]["annotations"][naming.ANNOTATION_CONFIG_HASH] == "abc"


def test_cache_claim_template_and_retention() -> None:
    obj = sts(modelCache={"storageClassName": "fast", "size": "50Gi", "keepOnScaleDown": False})
    (claim,) = obj["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == naming.CACHE_VOLUME
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert obj["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenScaled": "Delete",
        "whenDeleted": "Delete",
    }
    assert sts()["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    mounts = {m["mountPath"] for m in worker(obj)["volumeMounts"]}
    assert contract.MODEL_CACHE_MOUNT in mounts
    assert contract.SERVING_CONFIG_MOUNT in mounts


def test_init_container_fetches_the_model_with_the_secret() -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    obj = sts(
        model={
            "source": "hf://org/private",
            "revision": commit,
            "sha256": "a" * 64,
            "secretRef": "creds",
            "secretKey": "hf-token",
            "name": "tts",
        }
    )
    (init,) = obj["spec"]["template"]["spec"]["initContainers"]
    assert init["command"] == statefulset.FETCH_COMMAND
    model_dir = f"{contract.MODEL_CACHE_MOUNT}/tts"
    assert init["args"] == ["--source", "hf://org/private", "--revision", commit, "--cache", model_dir]
    env = {e["name"]: e for e in init["env"]}
    assert env[contract.ENV_MODEL_CACHE]["value"] == model_dir
    assert env[contract.ENV_MODEL_SHA256]["value"] == "a" * 64
    # Only the named key, by reference: the token is in neither the pod spec nor the arguments,
    # and the Secret's other keys never reach the container.
    assert env[modelsource.ENV_MODEL_TOKEN] == {
        "name": modelsource.ENV_MODEL_TOKEN,
        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "hf-token"}},
    }
    assert "envFrom" not in init
    # The server reads the cache the fetcher filled.
    args = worker(obj)["args"]
    assert args[args.index("--model-cache") + 1] == model_dir
    assert args[args.index("--serving-config") + 1] == contract.SERVING_CONFIG_MOUNT
    plain = sts()["spec"]["template"]["spec"]["initContainers"][0]
    assert {e["name"] for e in plain["env"]} == {contract.ENV_MODEL_CACHE}
    assert "envFrom" not in plain and "--allow-insecure-http" not in plain["args"]


def test_secret_key_defaults_to_token_and_no_container_sees_the_secret_otherwise() -> None:
    obj = sts(model={"source": "https://models.example/chattts", "revision": "v1", "secretRef": "creds"})
    pod = obj["spec"]["template"]["spec"]
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for c in [*pod["initContainers"], *pod["containers"]]
        for e in c.get("env", [])
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    ]
    assert refs == [{"name": "creds", "key": "token"}]  # the fetcher's, only
    assert not any("envFrom" in c for c in [*pod["initContainers"], *pod["containers"]])
    assert not any(v.get("secret") for v in pod["volumes"])


def test_plain_http_source_is_passed_on_only_when_the_spec_allows_it() -> None:
    allowed = sts(model={"source": "http://models.ns.svc/chattts", "revision": "v1", "allowInsecureHTTP": True})
    (init,) = allowed["spec"]["template"]["spec"]["initContainers"]
    assert init["args"][-1] == "--allow-insecure-http"
    assert init["args"][:2] == ["--source", "http://models.ns.svc/chattts"]


def test_probes_gate_on_model_readiness_and_spare_loading_pods() -> None:
    container = worker(sts(model={"source": "hf://a/b", "name": "voicey"}, warmup={"timeoutSeconds": 600}))
    ready = contract.model_ready_path("voicey")
    assert container["readinessProbe"]["httpGet"]["path"] == ready
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == ready
    # Startup probe covers the whole warmup budget; liveness only starts after it succeeds.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert container["livenessProbe"]["httpGet"]["path"] == contract.liveness_path("voicey")


def test_drain_time_fits_in_the_grace_period() -> None:
    obj = sts(disruption={"drainSeconds": 200})
    pod = obj["spec"]["template"]["spec"]
    pre_stop = worker(obj)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + 200
    env = {e["name"]: e.get("value") for e in worker(obj)["env"]}
    assert env[contract.ENV_SERVING_CONFIG] == f"{contract.SERVING_CONFIG_MOUNT}/{contract.SERVING_JSON_FILE}"
    # The worker learns its drain deadline (Triton's exit timeout) from the serving config.
    served = configmap.serving_config(parse_spec(minimal_spec(disruption={"drainSeconds": 200})))
    assert served.drain_timeout_seconds == 200


def test_security_context_is_hardened() -> None:
    pod = sts()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"] + pod["initContainers"]:
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}


def test_gpu_request_and_toleration() -> None:
    pod = sts(resources={"gpu": 2, "cpu": 8, "memory": "32Gi"})["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == "2"
    assert resources["limits"]["nvidia.com/gpu"] == "2"
    assert resources["requests"]["cpu"] == "8"
    assert resources["limits"]["memory"] == "32Gi"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    cpu_only = sts(resources={"gpu": 0})["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in cpu_only["containers"][0]["resources"]["requests"]
    assert "tolerations" not in cpu_only


def test_scheduling_pass_through_and_zone_spread() -> None:
    pod = sts(
        nodeSelector={"pool": "gpu"},
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "tts", "effect": "NoSchedule"}],
        affinity={"nodeAffinity": {}},
        priorityClassName="high",
    )["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["affinity"] == {"nodeAffinity": {}}
    assert pod["priorityClassName"] == "high"
    assert pod["tolerations"][0]["key"] == "dedicated"
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread["labelSelector"] == {"matchLabels": naming.selector_labels(OWNER)}
    no_spread = sts(topologySpread={"enabled": False})["spec"]["template"]["spec"]
    assert "topologySpreadConstraints" not in no_spread


def test_update_strategy_from_rollout() -> None:
    assert sts(rollout={"partition": 2})["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"partition": 2},
    }
    assert sts(rollout={"strategy": "OnDelete"})["spec"]["updateStrategy"] == {"type": "OnDelete"}


def test_services() -> None:
    spec = parse_spec(minimal_spec(service={"grpcPort": 9001, "type": "LoadBalancer"}))
    headless = service.build_headless(OWNER, spec)
    client = service.build_client(OWNER, spec)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["metadata"]["name"] != client["metadata"]["name"]
    assert client["spec"]["type"] == "LoadBalancer"
    ports = {p["name"]: p for p in client["spec"]["ports"]}
    assert set(ports) == {"grpc"}
    assert ports["grpc"]["port"] == 9001
    assert ports["grpc"]["targetPort"] == "grpc"
    assert ports["grpc"]["appProtocol"] == service.GRPC_APP_PROTOCOL
    assert client["spec"]["selector"] == naming.selector_labels(OWNER)


def test_configmap_renders_the_serving_config_from_the_spec() -> None:
    spec = parse_spec(
        minimal_spec(
            voices=[{"id": "a", "seed": 1}, {"id": "b", "embedding": "xyz"}],
            defaultVoice="b",
            batching={"maxBatchSize": 16, "maxQueueDelayMicroseconds": 100, "instances": 2},
            warmup={"sentences": ["one", "two"], "timeoutSeconds": 300},
        )
    )
    cm = configmap.build(OWNER, spec)
    served = contract.ServingConfig.from_json(cm["data"][contract.SERVING_JSON_FILE])
    assert served.voice_ids() == ["a", "b"]
    assert served.default_voice == "b"
    assert served.max_batch_size == 16
    assert served.instance_count == 2
    assert served.gpu is True
    assert served.warmup_sentences == ("one", "two")
    assert served == configmap.serving_config(spec)
    pbtxt = cm["data"][contract.TRITON_CONFIG_FILE]
    assert "max_batch_size: 16" in pbtxt
    assert "KIND_GPU" in pbtxt


def test_config_change_changes_the_pod_template() -> None:
    a = desired.build_all(OWNER, parse_spec(minimal_spec()))
    b = desired.build_all(OWNER, parse_spec(minimal_spec(batching={"maxBatchSize": 4})))
    ann = naming.ANNOTATION_CONFIG_HASH
    sts_a = next(c for c in a if c["kind"] == "StatefulSet")
    sts_b = next(c for c in b if c["kind"] == "StatefulSet")
    assert (
        sts_a["spec"]["template"]["metadata"]["annotations"][ann]
        != sts_b["spec"]["template"]["metadata"]["annotations"][ann]
    )


def test_pdb_only_when_more_than_one_replica_can_exist() -> None:
    assert pdb.build(OWNER, parse_spec(minimal_spec(replicas=1))) is None
    budget = pdb.build(OWNER, parse_spec(minimal_spec(replicas=2, disruption={"maxUnavailable": "25%"})))
    assert budget is not None
    assert budget["spec"]["maxUnavailable"] == "25%"
    assert budget["spec"]["selector"] == {"matchLabels": naming.selector_labels(OWNER)}
    scaled = parse_spec(minimal_spec(replicas=1, autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 3}))
    assert pdb.build(OWNER, scaled) is not None


def test_scaledobject_targets_the_fleet_scale_subresource() -> None:
    assert scaledobject.build(OWNER, parse_spec(minimal_spec()), {}) is None
    spec = parse_spec(
        minimal_spec(
            autoscaling={
                "enabled": True,
                "minReplicas": 2,
                "maxReplicas": 8,
                "targetQueueLength": 3,
                "cooldownSeconds": 120,
                "scaleDownStabilizationSeconds": 400,
                "schedules": [
                    {
                        "name": "am",
                        "start": "0 8 * * 1-5",
                        "end": "0 12 * * 1-5",
                        "replicas": 5,
                        "timezone": "Europe/Paris",
                    },
                    {"name": "pm", "readyBy": "0 19 * * *", "end": "0 23 * * *", "replicas": 6},
                ],
            },
            replicas=2,
        )
    )
    obj = scaledobject.build(OWNER, spec, {"pm": "45 18 * * *"})
    assert obj is not None
    body = obj["spec"]
    assert body["scaleTargetRef"] == {
        "apiVersion": "tts.ttsfleet.io/v1alpha1",
        "kind": "TTSDeployment",
        "name": "fleet",
    }
    assert (body["minReplicaCount"], body["maxReplicaCount"], body["cooldownPeriod"]) == (2, 8, 120)
    behavior = body["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 400
    prom, am, pm = body["triggers"]
    assert prom["type"] == "prometheus"
    assert contract.METRIC_QUEUE_LENGTH in prom["metadata"]["query"]
    assert prom["metadata"]["threshold"] == "3"
    assert am["metadata"] == {
        "timezone": "Europe/Paris",
        "start": "0 8 * * 1-5",
        "end": "0 12 * * 1-5",
        "desiredReplicas": "5",
    }
    assert pm["metadata"]["start"] == "45 18 * * *"
    assert pm["metadata"]["timezone"] == "UTC"


def test_servicemonitor_only_when_asked() -> None:
    assert servicemonitor.build(OWNER, parse_spec(minimal_spec())) is None
    obj = servicemonitor.build(
        OWNER, parse_spec(minimal_spec(monitoring={"serviceMonitor": True, "labels": {"release": "prom"}}))
    )
    assert obj is not None
    assert obj["metadata"]["labels"]["release"] == "prom"
    assert obj["spec"]["endpoints"][0]["port"] == contract.METRICS_PORT_NAME
    assert obj["spec"]["selector"]["matchLabels"][naming.LABEL_SERVICE_ROLE] == service.HEADLESS_ROLE


def _scaled(**autoscaling: Any) -> Any:
    return parse_spec(minimal_spec(replicas=2, autoscaling={"enabled": True, "minReplicas": 1, **autoscaling}))


def test_scaledobject_absent_when_autoscaling_is_off() -> None:
    assert scaledobject.build(OWNER, parse_spec(minimal_spec(autoscaling={"enabled": False})), {}) is None
    assert not [c for c in desired.build_all(OWNER, parse_spec(minimal_spec())) if c["kind"] == "ScaledObject"]


def test_scaledobject_polling_and_queue_trigger() -> None:
    obj = scaledobject.build(OWNER, _scaled(pollingIntervalSeconds=7, targetQueueLength=6), {})
    assert obj is not None
    assert obj["spec"]["pollingInterval"] == 7
    (queue,) = obj["spec"]["triggers"]  # no schedules: the queue trigger alone
    assert queue["metricType"] == "AverageValue"
    assert queue["metadata"]["threshold"] == "6"
    assert f'namespace="{OWNER.namespace}"' in queue["metadata"]["query"]
    assert queue["metadata"]["serverAddress"].startswith("http://")


def test_one_cron_trigger_per_schedule_in_its_own_timezone() -> None:
    spec = _scaled(
        maxReplicas=9,
        schedules=[
            {"name": "tokyo", "timezone": "Asia/Tokyo", "start": "0 9 * * *", "end": "0 17 * * *", "replicas": 3},
            # Overlapping windows each get their trigger; KEDA's HPA takes the highest.
            {"name": "paris", "timezone": "Europe/Paris", "start": "0 8 * * *", "end": "0 20 * * *", "replicas": 5},
            {
                "name": "nyc",
                "timezone": "America/New_York",
                "readyBy": "30 7 * * 1-5",
                "end": "0 10 * * 1-5",
                "replicas": 9,
            },
        ],
    )
    obj = scaledobject.build(OWNER, spec, {"nyc": "20 7 * * 1-5"})
    assert obj is not None
    crons = {t["name"]: t["metadata"] for t in obj["spec"]["triggers"] if t["type"] == "cron"}
    assert list(crons) == ["schedule-tokyo", "schedule-paris", "schedule-nyc"]
    assert {name: m["timezone"] for name, m in crons.items()} == {
        "schedule-tokyo": "Asia/Tokyo",
        "schedule-paris": "Europe/Paris",
        "schedule-nyc": "America/New_York",
    }
    assert crons["schedule-nyc"] == {
        "timezone": "America/New_York",
        "start": "20 7 * * 1-5",
        "end": "0 10 * * 1-5",
        "desiredReplicas": "9",
    }
    # A readyBy schedule whose start is not derived yet gets no trigger rather than a wrong one.
    without = scaledobject.build(OWNER, spec, {})
    assert without is not None
    assert "schedule-nyc" not in {t["name"] for t in without["spec"]["triggers"]}


def test_pdb_absent_when_the_autoscaler_cannot_exceed_one() -> None:
    single = parse_spec(minimal_spec(replicas=1, autoscaling={"enabled": True, "minReplicas": 0, "maxReplicas": 1}))
    assert pdb.build(OWNER, single) is None
    budget = pdb.build(OWNER, parse_spec(minimal_spec(replicas=3)))
    assert budget is not None
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_servicemonitor_scrapes_only_the_headless_service_in_its_namespace() -> None:
    obj = servicemonitor.build(OWNER, parse_spec(minimal_spec(monitoring={"serviceMonitor": True, "interval": "30s"})))
    assert obj is not None
    assert obj["spec"]["namespaceSelector"] == {"matchNames": [OWNER.namespace]}
    assert obj["spec"]["endpoints"] == [{"port": contract.METRICS_PORT_NAME, "path": "/metrics", "interval": "30s"}]
    assert naming.is_owned_by(obj, OWNER)
