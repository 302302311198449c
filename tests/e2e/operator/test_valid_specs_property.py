"""Property: every spec the schema documents as valid is accepted by the real API server, and so
is every child the operator renders for it (StatefulSet, Services, ConfigMap, PDB, NetworkPolicy,
KEDA ScaledObject and TriggerAuthentication, ServiceMonitor, against the real KEDA and Prometheus
Operator CRDs).

Hypothesis draws the specs (at least 500), the API server answers in batches: one server-side
dry-run apply of all TTSDeployments of a batch, then one of all their children, built from the
objects as the API server returned them (defaults filled in), as the operator sees them.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttsfleet.operator import desired, schedules
from ttsfleet.operator.naming import MAX_NAME_LENGTH, Owner
from ttsfleet.operator.spec import API_VERSION, KIND, parse_spec

EXAMPLES = 500
BATCH = 100
MANAGER = "property-test"

LOWER = "abcdefghijklmnopqrstuvwxyz"
ALNUM = LOWER + "0123456789"


def word(first: str, middle: str, last: str, max_size: int) -> st.SearchStrategy[str]:
    """first + middle* + last: text strategies are much cheaper to draw than from_regex."""
    return st.builds(
        lambda a, b, c: a + b + c,
        st.sampled_from(first),
        st.text(middle, max_size=max_size),
        st.one_of(st.just(""), st.sampled_from(last)),
    ).map(lambda w: w if w[-1] in last else w[0])


dns_label = word(LOWER, ALNUM + "-", ALNUM, 14)
dns_subdomain = st.lists(dns_label, min_size=1, max_size=3).map(".".join)
label_name = word(ALNUM + LOWER.upper(), ALNUM + LOWER.upper() + "-_.", ALNUM + LOWER.upper(), 20)
label_key = st.one_of(label_name, st.tuples(dns_subdomain, label_name).map("/".join))
label_value = st.one_of(st.just(""), label_name)
labels = st.dictionaries(label_key, label_value, max_size=4)
hex40 = st.text("0123456789abcdef", min_size=40, max_size=40)
# Any printable unicode (control characters cannot travel in the YAML of a server-side apply).
printable = st.characters(blacklist_categories=("Cc", "Cs"))


def quantity(low: int, high: int, units: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.builds(lambda n, u: f"{n}{u}", st.integers(low, high), st.sampled_from(units))


image = st.builds(
    lambda registry, path, ref: f"{registry}{path}{ref}",
    st.sampled_from(["", "registry.local:5000/", "ghcr.io/", "REGISTRY.example.com/"]),
    st.lists(
        word(ALNUM, ALNUM + "._-", ALNUM, 10).filter(
            lambda w: (
                ".." not in w
                and "._" not in w
                and "_." not in w
                and ".-" not in w
                and "-." not in w
                and "_-" not in w
                and "-_" not in w
                and "___" not in w
            )
        ),
        min_size=1,
        max_size=3,
    ).map("/".join),
    st.one_of(
        word(ALNUM + "_", ALNUM + "_.-", ALNUM, 20).map(lambda tag: ":" + tag),
        hex40.map(lambda h: f"@sha256:{h}{h[:24]}"),
        st.just(""),
    ),
)


@st.composite
def model(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["hf", "https", "file", "path"]))
    body: dict[str, Any]
    if kind == "hf":
        body = {"source": f"hf://{draw(dns_label)}/{draw(dns_label)}", "revision": draw(hex40)}
    else:
        source = {
            "https": f"https://{draw(dns_subdomain)}/{draw(dns_label)}",
            "file": f"file:///models/{draw(dns_label)}",
            "path": f"/models/{draw(dns_label)}",
        }[kind]
        body = {"source": source, "revision": draw(word(ALNUM, ALNUM + "._-", ALNUM, 30))}
    if draw(st.booleans()):
        body["name"] = draw(word(ALNUM, ALNUM + "_-", ALNUM, 30))
    if draw(st.booleans()):
        body["sha256"] = draw(hex40) + draw(st.text("0123456789abcdef", min_size=24, max_size=24))
    if draw(st.booleans()):
        body["approximateSize"] = draw(quantity(1, 10, ("Gi", "G", "Mi")))
    if draw(st.booleans()):
        body["secretRef"] = draw(dns_label)
    return body


@st.composite
def voices(draw: st.DrawFn) -> list[dict[str, Any]]:
    ids = draw(st.lists(dns_label, min_size=1, max_size=4, unique=True))
    out = []
    for voice_id in ids:
        if draw(st.booleans()):
            out.append({"id": voice_id, "seed": draw(st.integers(0, 2**31 - 1))})
        else:
            out.append({"id": voice_id, "embedding": draw(st.text(printable, min_size=1, max_size=50))})
    return out


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    cpu_milli = draw(st.integers(100, 16_000))
    memory_mi = draw(st.integers(64, 65_536))
    body: dict[str, Any] = {
        "gpu": draw(st.integers(0, 8)),
        "cpu": draw(st.sampled_from([f"{cpu_milli}m", str(cpu_milli // 1000 or 1)])),
        "memory": f"{memory_mi}Mi",
    }
    if draw(st.booleans()):
        body["cpuLimit"] = f"{cpu_milli + draw(st.integers(0, 8000)) + 1000}m"
    if draw(st.booleans()):
        body["memoryLimit"] = f"{memory_mi + draw(st.integers(0, 4096))}Mi"
    return body


@st.composite
def toleration(draw: st.DrawFn) -> dict[str, Any]:
    effect = draw(st.sampled_from(["", "NoSchedule", "PreferNoSchedule", "NoExecute"]))
    body: dict[str, Any] = {"key": draw(label_key)}
    if draw(st.booleans()):
        body["operator"] = "Exists"
    else:
        body.update(operator="Equal", value=draw(label_value))
    if effect:
        body["effect"] = effect
    if effect == "NoExecute" and draw(st.booleans()):
        body["tolerationSeconds"] = draw(st.integers(0, 86400))
    return body


cron_minute = st.integers(0, 59).map(str)
cron_hour = st.integers(0, 23).map(str)
cron_weekdays = st.sampled_from(["*", "1-5", "MON-FRI", "0,6", "SUN", "1", "sat"])
cron = st.builds(
    lambda m, h, dom, mon, dow: f"{m} {h} {dom} {mon} {dow}",
    st.one_of(cron_minute, st.just("*/15"), st.just("0,30")),
    st.one_of(cron_hour, st.just("8-18"), st.just("*/2")),
    st.sampled_from(["*", "1", "1-15", "?", "*/7"]),
    st.sampled_from(["*", "1-6", "JAN", "dec", "*/3"]),
    cron_weekdays,
)
timezone = st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Lord_Howe"])


# Redis keys and consumer groups: any printable text without whitespace (spec.REDIS_KEY).
redis_key = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), min_size=1, max_size=30)
redis_host = st.one_of(
    dns_subdomain,
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda o: ".".join(map(str, o))),
    st.sampled_from(["[::1]", "[fd00::6379]"]),
)


@st.composite
def redis(draw: st.DrawFn) -> dict[str, Any]:
    """A redis trigger (spec.autoscaling.redis): a list or a stream, optional TLS, user, password."""
    body: dict[str, Any] = {
        "address": f"{draw(redis_host)}:{draw(st.integers(1, 65535))}",
        "targetLength": draw(st.integers(1, 1_000_000)),
        "activationLength": draw(st.integers(0, 1_000_000)),
        "databaseIndex": draw(st.integers(0, 65535)),
        "enableTLS": draw(st.booleans()),
    }
    if draw(st.booleans()):
        body["listName"] = draw(redis_key)
    else:
        body["stream"] = {"name": draw(redis_key), "consumerGroup": draw(redis_key)}
    if draw(st.booleans()):
        body["username"] = draw(redis_key)
    if draw(st.booleans()):
        body["passwordSecretRef"] = {"name": draw(dns_subdomain), "key": draw(word(ALNUM, ALNUM + "-._", ALNUM, 10))}
    return body


@st.composite
def autoscaling(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(st.integers(0, 20))
    high = draw(st.integers(max(1, low), 1000))
    names = draw(st.lists(dns_label, max_size=4, unique=True))
    windows = []
    for name in names:
        window: dict[str, Any] = {"name": name, "replicas": draw(st.integers(1, high)), "timezone": draw(timezone)}
        end = draw(cron)
        if draw(st.booleans()):
            start = draw(cron)
            window["start"] = start if start != end else ("0 1 * * *" if end != "0 1 * * *" else "0 2 * * *")
        else:
            minute, hour = draw(cron_minute), draw(cron_hour)
            window["readyBy"] = f"{minute} {hour} * {draw(st.sampled_from(['*', '1-6']))} {draw(cron_weekdays)}"
            if window["readyBy"] == end:
                end = f"{(int(minute) + 1) % 60} {hour} * * *"
        window["end"] = end
        windows.append(window)
    queue = draw(st.one_of(st.none(), redis()))
    # Scale to zero is valid only with a schedule or a redis queue to wake the fleet (AutoscalingSpec.RULES).
    low = low if low or windows or queue else 1
    extra = {"redis": queue} if queue else {}
    return {
        **extra,
        "enabled": draw(st.booleans()),
        "minReplicas": low,
        "maxReplicas": high,
        "targetQueueLength": draw(st.integers(1, 100)),
        "pollingIntervalSeconds": draw(st.integers(1, 3600)),
        "cooldownSeconds": draw(st.integers(0, 86400)),
        "scaleDownStabilizationSeconds": draw(st.integers(0, 3600)),
        "prometheusAddress": draw(st.sampled_from(["http://prometheus.monitoring.svc:9090", "https://prom.local"])),
        "leadTimeMarginSeconds": draw(st.integers(0, 3600)),
        "schedules": windows,
    }


@st.composite
def fleet_body(draw: st.DrawFn) -> dict[str, Any]:
    fleet_voices = draw(voices())
    max_text = draw(st.integers(1, 100_000))
    sentence = st.text(printable, min_size=1, max_size=min(max_text, 80)).filter(
        lambda s: not s.isspace() and s.strip()
    )
    strategy = draw(st.sampled_from(["RollingUpdate", "OnDelete"]))
    spec: dict[str, Any] = {
        "image": draw(image),
        "model": draw(model()),
        "replicas": draw(st.integers(0, 1000)),
        "imagePullPolicy": draw(st.sampled_from(["Always", "IfNotPresent", "Never"])),
        "voices": fleet_voices,
        "defaultVoice": draw(st.sampled_from([v["id"] for v in fleet_voices])),
        "maxTextChars": max_text,
        "resources": draw(resources()),
        "tolerations": draw(st.lists(toleration(), max_size=3)),
        "nodeSelector": draw(labels),
        "topologySpread": {
            "enabled": draw(st.booleans()),
            "topologyKey": draw(st.one_of(st.just("topology.kubernetes.io/zone"), label_key)),
            "maxSkew": draw(st.integers(1, 100)),
            "whenUnsatisfiable": draw(st.sampled_from(["DoNotSchedule", "ScheduleAnyway"])),
        },
        "modelCache": {
            "storageClassName": draw(dns_subdomain),
            "size": draw(quantity(20, 500, ("Gi", "G"))),
            "keepOnScaleDown": draw(st.booleans()),
            "keepOnDelete": draw(st.booleans()),
        },
        "warmup": {"sentences": draw(st.lists(sentence, max_size=3)), "timeoutSeconds": draw(st.integers(30, 7200))},
        "batching": {
            "maxBatchSize": draw(st.integers(1, 64)),
            "maxQueueDelayMicroseconds": draw(st.integers(0, 1_000_000)),
            "instances": draw(st.integers(1, 8)),
        },
        "rollout": {
            "strategy": strategy,
            "partition": draw(st.integers(0, 1000)) if strategy == "RollingUpdate" else 0,
        },
        "disruption": {
            "maxUnavailable": draw(st.one_of(st.integers(0, 10), st.integers(0, 100).map(lambda p: f"{p}%"))),
            "drainSeconds": draw(st.integers(0, 3600)),
        },
        "autoscaling": draw(autoscaling()),
        "service": {"type": draw(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]))},
        "monitoring": {
            "serviceMonitor": draw(st.booleans()),
            "interval": draw(st.builds(lambda n, u: f"{n}{u}", st.integers(1, 600), st.sampled_from(["ms", "s", "m"]))),
            "labels": draw(labels),
        },
    }
    for optional, strategy_ in (("priorityClassName", dns_subdomain), ("serviceAccountName", dns_subdomain)):
        if draw(st.booleans()):
            spec[optional] = draw(strategy_)
    if draw(st.booleans()):
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": draw(label_key), "operator": "Exists"}]},
                    ]
                }
            }
        }
    name = draw(word(LOWER, ALNUM + "-", ALNUM, MAX_NAME_LENGTH - 2))
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}


def draw_fleets() -> list[dict[str, Any]]:
    drawn: list[dict[str, Any]] = []

    # Hypothesis explores the space; the API server is asked afterwards, in batches, because one
    # request per example would take minutes.
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(fleet_body())
    def collect(body: dict[str, Any]) -> None:
        drawn.append(body)

    collect()
    return drawn


def apply_dry_run(cluster: Any, namespace: str, objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    result = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        f"--field-manager={MANAGER}",
        "-n",
        namespace,
        "-o",
        "json",
        "-f",
        "-",
        # JSON, not YAML: drawn text holds control characters, and kubectl's YAML 1.1 would read
        # an unquoted y or on as a boolean.
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
        check=False,
        timeout=300,
    )
    if result.returncode != 0:
        return [], result.stderr
    out = json.loads(result.stdout)
    return list(out.get("items", [out])), ""


def children_of(admitted: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    owner = Owner(admitted["metadata"]["name"], namespace, str(uuid.uuid4()))
    spec = parse_spec(admitted["spec"])
    starts = {name: start for name, (start, _) in schedules.derived_starts(spec.autoscaling, spec.warmup, None).items()}
    return desired.build_all(owner, spec, starts)


@pytest.mark.timeout(1200)
def test_every_generated_valid_spec_and_its_children_are_accepted(cluster: Any, namespace: str, crds: None) -> None:
    fleets = draw_fleets()
    assert len(fleets) >= EXAMPLES
    # Names must be unique within a batch: suffix the drawn ones with their index.
    for index, body in enumerate(fleets):
        suffix = f"-{index}"
        body["metadata"]["name"] = body["metadata"]["name"][: MAX_NAME_LENGTH - len(suffix)].rstrip("-") + suffix
    kinds: set[str] = set()
    for start in range(0, len(fleets), BATCH):
        batch = fleets[start : start + BATCH]
        admitted, refusal = apply_dry_run(cluster, namespace, batch)
        assert not refusal, f"valid specs refused:\n{refusal}\n\nspecs:\n{yaml.safe_dump_all(batch)[:20000]}"
        assert len(admitted) == len(batch)
        children = [child for body in admitted for child in children_of(body, namespace)]
        kinds |= {child["kind"] for child in children}
        accepted, refusal = apply_dry_run(cluster, namespace, children)
        assert not refusal, f"children of valid specs refused:\n{refusal}"
        assert len(accepted) == len(children)
    # The generator reached every kind of child, the optional ones included.
    optional = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"}
    assert {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget", *optional} <= kinds
