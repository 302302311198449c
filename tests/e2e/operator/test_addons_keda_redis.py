"""Scaling on a Redis queue of pending jobs through the real KEDA v2.18.0 and a real redis-server.

Jobs pushed into a Redis list (or a Stream read by a consumer group) in front of the fleet →
KEDA's redis trigger (the operator's ScaledObject) → KEDA activates the fleet from zero, and its
HPA reads the queue length from KEDA's metrics adapter → ``/scale`` on the TTSDeployment → the
operator → the StatefulSet → pods Ready (kwok nodes) → the queue drains → back down. The password
of a locked Redis reaches KEDA only as a Secret reference (a TriggerAuthentication the operator
owns); it appears in no object, event or log of the operator's. No hand-made HPA anywhere.

Redis runs on loopback (devcluster/addons_redis.py), next to KEDA's out-of-cluster operator.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fleet_helpers import apply, condition, fleet, get, wait_for
from operator_process import OperatorProcess, watching

from ttsfleet.devcluster import addons_redis
from ttsfleet.devcluster.addons_cluster import running
from ttsfleet.devcluster.cluster import ClusterHandle, default_workdir, free_port
from ttsfleet.operator.spec import API_VERSION, KIND

NAMESPACE = "keda-redis"
SCALE_TIMEOUT = 180
# The first run builds KEDA from source (5-10 min on an idle machine) inside the module fixture.
pytestmark = pytest.mark.timeout(3600)


@pytest.fixture(scope="module")
def keda_cluster() -> Iterator[ClusterHandle]:
    if os.environ.get("TTSFLEET_TEST_KUBECONFIG") or os.environ.get("TTSFLEET_CLUSTER_BACKEND") == "kind":
        pytest.skip("needs a local cluster with the KEDA add-on")
    started = time.monotonic()
    with running(default_workdir(f"e2e-keda-redis-{os.getpid()}"), ("keda",), real_nodes=0) as (handle, _):
        print(f"\ncluster with keda up in {time.monotonic() - started:.1f}s")
        yield handle


@pytest.fixture(scope="module")
def keda_operator(keda_cluster: ClusterHandle) -> Iterator[OperatorProcess]:
    with watching(keda_cluster, NAMESPACE) as operator:
        yield operator


@pytest.fixture(scope="module")
def open_redis(keda_cluster: ClusterHandle) -> Iterator[addons_redis.RedisServer]:
    with addons_redis.running(keda_cluster.workdir / "redis-open", free_port()) as redis:
        yield redis


@pytest.fixture(scope="module")
def locked_redis(keda_cluster: ClusterHandle) -> Iterator[addons_redis.RedisServer]:
    password = addons_redis.new_password()
    with addons_redis.running(keda_cluster.workdir / "redis-locked", free_port(), password=password) as redis:
        yield redis


def queued(name: str, redis: dict[str, Any], *, min_replicas: int, **spec: Any) -> dict[str, Any]:
    return fleet(
        name,
        autoscaling={
            "enabled": True,
            "minReplicas": min_replicas,
            "maxReplicas": 3,
            "pollingIntervalSeconds": 5,
            "cooldownSeconds": 10,
            "scaleDownStabilizationSeconds": 0,
            "redis": {"targetLength": 2, **redis},
        },
        **spec,
    )


def at(cluster: ClusterHandle, name: str, replicas: int) -> dict[str, Any] | None:
    """spec, StatefulSet and Ready pods all at ``replicas``."""
    obj = get(cluster, NAMESPACE, "ttsd", name) or {}
    sts = get(cluster, NAMESPACE, "sts", name) or {}
    done = (
        obj.get("spec", {}).get("replicas") == replicas
        and sts.get("spec", {}).get("replicas") == replicas
        and ((sts.get("status") or {}).get("readyReplicas") or 0) == replicas
        and ((obj.get("status") or {}).get("readyReplicas") or 0) == replicas
    )
    return obj if done else None


def keda_hpa(cluster: ClusterHandle, name: str) -> dict[str, Any]:
    """The HPA KEDA made from the operator's ScaledObject, targeting the TTSDeployment."""
    hpa = wait_for("the HPA made by KEDA", lambda: get(cluster, NAMESPACE, "hpa", f"keda-hpa-{name}"), 60)
    assert [(o["kind"], o["name"]) for o in hpa["metadata"].get("ownerReferences") or []] == [("ScaledObject", name)]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": API_VERSION, "kind": KIND, "name": name}
    return hpa


def spec_replicas(cluster: ClusterHandle, name: str) -> int:
    return int(((get(cluster, NAMESPACE, "ttsd", name) or {}).get("spec") or {}).get("replicas", -1))


def keda_ready(cluster: ClusterHandle, name: str) -> dict[str, Any] | None:
    scaled = get(cluster, NAMESPACE, "scaledobject", name)
    return scaled if condition(scaled, "Ready").get("status") == "True" else None


def test_jobs_in_a_list_wake_the_fleet_from_zero_and_a_drained_list_scales_it_back_to_zero(
    keda_cluster: ClusterHandle, keda_operator: OperatorProcess, open_redis: addons_redis.RedisServer
) -> None:
    cluster, redis, name, key = keda_cluster, open_redis, "jobs", "tts-jobs"
    apply(cluster, NAMESPACE, queued(name, {"address": redis.address, "listName": key}, min_replicas=0))
    keda_hpa(cluster, name)
    wait_for("KEDA's ScaledObject Ready (it reached Redis)", lambda: keda_ready(cluster, name), 60)
    # An empty queue: KEDA takes the fleet to zero once the cooldown has passed.
    wait_for("the idle fleet at 0 replicas", lambda: at(cluster, name, 0), SCALE_TIMEOUT)
    autoscaling = condition(get(cluster, NAMESPACE, "ttsd", name), "Autoscaling")
    assert (autoscaling.get("status"), autoscaling.get("reason")) == ("True", "ScaledObjectApplied"), autoscaling

    pushed = time.monotonic()
    assert redis.cli("RPUSH", key, *(f"job-{i}" for i in range(5))) == "5"
    wait_for("KEDA to wake the fleet (spec.replicas > 0)", lambda: spec_replicas(cluster, name) > 0, SCALE_TIMEOUT)
    woke = time.monotonic() - pushed
    # 5 jobs / 2 per replica -> 3 (= maxReplicas), through KEDA's HPA.
    wait_for("the fleet at 3 Ready replicas (5 jobs, 2 per replica)", lambda: at(cluster, name, 3), SCALE_TIMEOUT)
    up = time.monotonic() - pushed
    scaled = get(cluster, NAMESPACE, "scaledobject", name) or {}
    assert condition(scaled, "Active").get("status") == "True", scaled.get("status")

    drained = time.monotonic()
    assert redis.cli("DEL", key) == "1"
    wait_for("the drained fleet back at 0 replicas", lambda: at(cluster, name, 0), SCALE_TIMEOUT)
    down = time.monotonic() - drained
    print(
        f"\nredis list: push 5 jobs -> fleet woken from 0 in {woke:.1f}s, 3 Ready in {up:.1f}s; "
        f"drain -> 0 replicas in {down:.1f}s (pollingInterval 5 s, cooldown 10 s, HPA sync 15 s)"
    )


def test_a_password_protected_redis_is_reached_through_the_secret_and_the_password_shows_nowhere(
    keda_cluster: ClusterHandle, keda_operator: OperatorProcess, locked_redis: addons_redis.RedisServer
) -> None:
    cluster, redis, name, key = keda_cluster, locked_redis, "locked", "tts-locked-jobs"
    password = redis.password
    assert password is not None
    # The server really refuses a client without the password.
    assert "NOAUTH" in addons_redis.RedisServer(redis.port, None, redis.process, redis.cli_path).cli(
        "LLEN", key, check=False
    )
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "jobs-redis"},
        "stringData": {"redis-password": password},
    }
    ref = {"name": "jobs-redis", "key": "redis-password"}
    doc = queued(name, {"address": redis.address, "listName": key, "passwordSecretRef": ref}, min_replicas=1)
    apply(cluster, NAMESPACE, secret, doc)
    keda_hpa(cluster, name)
    wait_for("KEDA's ScaledObject Ready (it authenticated to Redis)", lambda: keda_ready(cluster, name), 60)
    wait_for("the fleet Ready at minReplicas 1", lambda: at(cluster, name, 1), SCALE_TIMEOUT)

    pushed = time.monotonic()
    assert redis.cli("RPUSH", key, *(f"job-{i}" for i in range(4))) == "4"
    wait_for("the fleet at 2 Ready replicas (4 jobs, 2 per replica)", lambda: at(cluster, name, 2), SCALE_TIMEOUT)
    up = time.monotonic() - pushed

    auth = get(cluster, NAMESPACE, "triggerauthentication", f"{name}-redis") or {}
    assert auth["spec"] == {"secretTargetRef": [{"parameter": "password", **ref}]}
    assert [o["name"] for o in auth["metadata"]["ownerReferences"]] == [name]
    everything = {
        "ScaledObject": get(cluster, NAMESPACE, "scaledobject", name),
        "TriggerAuthentication": auth,
        "TTSDeployment": get(cluster, NAMESPACE, "ttsd", name),
        "HPA": get(cluster, NAMESPACE, "hpa", f"keda-hpa-{name}"),
        "Events": get(cluster, NAMESPACE, "events"),
    }
    for what, obj in everything.items():
        assert password not in json.dumps(obj), f"the Redis password appears in the {what}"
    assert password not in keda_operator.log_path.read_text(errors="replace"), "the password is in the operator log"

    drained = time.monotonic()
    assert redis.cli("DEL", key) == "1"
    wait_for("the drained fleet back at minReplicas 1", lambda: at(cluster, name, 1), SCALE_TIMEOUT)
    print(
        f"\npassword-protected redis list: push 4 jobs -> 2 Ready in {up:.1f}s; "
        f"drain -> 1 replica in {time.monotonic() - drained:.1f}s"
    )


def test_pending_entries_of_a_stream_consumer_group_scale_the_fleet(
    keda_cluster: ClusterHandle, keda_operator: OperatorProcess, open_redis: addons_redis.RedisServer
) -> None:
    """Jobs a reader has taken (XREADGROUP) but not acknowledged count; acknowledged ones do not."""
    cluster, redis, name, stream, group = keda_cluster, open_redis, "stream", "tts-stream", "tts"
    redis.cli("XGROUP", "CREATE", stream, group, "$", "MKSTREAM")
    doc = queued(name, {"address": redis.address, "stream": {"name": stream, "consumerGroup": group}}, min_replicas=1)
    apply(cluster, NAMESPACE, doc)
    keda_hpa(cluster, name)
    wait_for("KEDA's ScaledObject Ready (it reached Redis)", lambda: keda_ready(cluster, name), 60)
    wait_for("the fleet Ready at minReplicas 1", lambda: at(cluster, name, 1), SCALE_TIMEOUT)

    pushed = time.monotonic()
    ids = [redis.cli("XADD", stream, "*", "text", f"sentence {i}") for i in range(4)]
    redis.cli("XREADGROUP", "GROUP", group, "reader-0", "COUNT", "10", "STREAMS", stream, ">")
    assert redis.cli("XPENDING", stream, group).splitlines()[0] == "4"
    wait_for("the fleet at 2 Ready replicas (4 pending entries, 2 per replica)", lambda: at(cluster, name, 2), 180)
    up = time.monotonic() - pushed

    acked = time.monotonic()
    assert redis.cli("XACK", stream, group, *ids) == "4"
    wait_for("the fleet back at minReplicas 1 once every entry is acknowledged", lambda: at(cluster, name, 1), 180)
    print(
        f"\nredis stream: 4 entries pending in the group -> 2 Ready in {up:.1f}s; "
        f"all acknowledged -> 1 replica in {time.monotonic() - acked:.1f}s"
    )


def test_a_wrong_password_shows_on_the_fleet_as_keda_reports_it_and_the_password_nowhere(
    keda_cluster: ClusterHandle, keda_operator: OperatorProcess, locked_redis: addons_redis.RedisServer
) -> None:
    cluster, name = keda_cluster, "refused"
    wrong = addons_redis.new_password()
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "stale-redis"}, "stringData": {"pw": wrong}}
    ref = {"name": "stale-redis", "key": "pw"}
    apply(
        cluster,
        NAMESPACE,
        secret,
        queued(name, {"address": locked_redis.address, "listName": "q", "passwordSecretRef": ref}, min_replicas=1),
    )

    def refused() -> dict[str, Any] | None:
        autoscaling = condition(get(cluster, NAMESPACE, "ttsd", name), "Autoscaling")
        return autoscaling if autoscaling.get("reason") == "ScaledObjectNotReady" else None

    autoscaling = wait_for("the fleet's Autoscaling condition to carry KEDA's refusal", refused, 120)
    assert autoscaling["status"] == "False"
    print(f"\nwrong Redis password: Autoscaling=False ScaledObjectNotReady: {autoscaling['message']}")
    events = get(cluster, NAMESPACE, "events") or {}
    for what, obj in {
        "condition": autoscaling,
        "Events": events,
        "fleet": get(cluster, NAMESPACE, "ttsd", name),
    }.items():
        assert wrong not in json.dumps(obj), f"the Secret's password appears in the {what}"
    assert wrong not in keda_operator.log_path.read_text(errors="replace")
