"""The local cluster's real node runs real containers, from images built offline, the way
ttsfleet's pods will run: under the restricted Pod Security profile, with probes, logs, exec,
memory limits, Services, local volumes that hold files, and the API server reachable from pods.
That `down` leaves nothing behind is checked by `down` itself, at the end of every session."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from ttsfleet.devcluster import hostnet, images, realnode
from ttsfleet.devcluster.cluster import ClusterHandle
from ttsfleet.devcluster.waiting import wait_for

UID = 65532
# A small HTTP server in the operator image's own Python: / answers the pod's name, /write
# appends to /data/log when a volume is mounted there.
SERVER = """
import http.server, os, sys
name = os.environ["POD_NAME"]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {name}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print(f"serving {name} on 8080", flush=True)
http.server.HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""


@pytest.fixture(scope="module")
def real(cluster: ClusterHandle) -> ClusterHandle:
    if not cluster.real_nodes:
        pytest.skip(f"this cluster has no real node: {hostnet.unavailable_reason() or 'held by another cluster'}")
    if "operator" not in cluster.images:
        pytest.fail("the operator image was not imported; build it with `ttsfleet-cluster images` (make test does)")
    return cluster


@pytest.fixture
def restricted_namespace(real: ClusterHandle, namespace: str) -> str:
    # The profile ttsfleet's pods must meet: admission refuses anything less.
    real.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    return namespace


def _pod(
    real: ClusterHandle,
    name: str,
    script: str,
    *,
    memory: str = "128Mi",
    probes: bool = False,
    volume_claim: str | None = None,
    restart: str = "Never",
    image: str = "operator",
    uid: int = UID,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": real.images[image],
        "imagePullPolicy": "IfNotPresent",
        # A script runs in the image's Python; none runs the image's own entry point.
        **({"command": ["/usr/bin/python3", "-c", script]} if script else {"args": ["--help"]}),
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "resources": {"limits": {"memory": memory, "cpu": "500m"}, "requests": {"memory": "32Mi", "cpu": "10m"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if probes:
        probe = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 2}
        container["readinessProbe"] = probe
        container["livenessProbe"] = {**probe, "failureThreshold": 3}
        container["ports"] = [{"containerPort": 8080, "name": "http"}]
    spec: dict[str, Any] = {
        "restartPolicy": restart,
        "nodeSelector": realnode.REAL_NODE_SELECTOR,
        "tolerations": [realnode.REAL_NODE_TOLERATION],
        "securityContext": {
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "terminationGracePeriodSeconds": 2,
    }
    if volume_claim:
        container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": volume_claim}}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}}, "spec": spec}


def _apply(real: ClusterHandle, namespace: str, *objects: dict[str, Any]) -> None:
    real.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def _get(real: ClusterHandle, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(real.kubectl("get", *args, "-o", "json").stdout)
    return result


def _describe(real: ClusterHandle, namespace: str) -> str:
    pods = real.kubectl("get", "pods,pvc", "-n", namespace, "-o", "wide", check=False).stdout
    events = real.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout
    return f"{pods}\n{events[-3000:]}"


def _wait_ready(real: ClusterHandle, namespace: str, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        pod = _get(real, "pod", name, "-n", namespace)
        conditions = pod["status"].get("conditions", [])
        return pod if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None

    return wait_for(ready, what=f"pod {name} Ready", timeout=120, describe=lambda: _describe(real, namespace))


def _wait_terminated(real: ClusterHandle, namespace: str, name: str) -> dict[str, Any]:
    def terminated() -> dict[str, Any] | None:
        statuses = _get(real, "pod", name, "-n", namespace)["status"].get("containerStatuses", [])
        for status in statuses:
            done = status["state"].get("terminated") or status.get("lastState", {}).get("terminated")
            if done:
                return dict(done)
        return None

    return wait_for(
        terminated, what=f"pod {name} to terminate", timeout=120, describe=lambda: _describe(real, namespace)
    )


def _http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_restricted_pod_from_the_local_image_runs_answers_probes_and_gives_logs_and_exec(
    real: ClusterHandle, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    _apply(real, ns, _pod(real, "web", SERVER, probes=True))

    pod = _wait_ready(real, ns, "web")

    assert pod["spec"]["nodeName"] in real.real_nodes
    assert "serving web on 8080" in real.kubectl("logs", "-n", ns, "web").stdout
    uid = real.kubectl("exec", "-n", ns, "web", "--", "/usr/bin/python3", "-c", "import os; print(os.getuid())")
    assert uid.stdout.strip() == str(UID)
    write = real.kubectl("exec", "-n", ns, "web", "--", "/usr/bin/touch", "/written", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    # Reachable on its pod IP from the host, through the node's bridge.
    assert _http_get(f"http://{pod['status']['podIP']}:8080/") == "hello from web"


@pytest.mark.parametrize(("image", "uid"), [("operator", UID), ("worker", images.WORKER_UID)])
def test_image_entry_point_starts_as_its_user_under_the_restricted_profile(
    real: ClusterHandle, restricted_namespace: str, image: str, uid: int
) -> None:
    if image not in real.images:
        pytest.skip(f"the {image} image is not built (`ttsfleet-cluster images --only {image}`)")
    _apply(real, restricted_namespace, _pod(real, image, "", image=image, uid=uid, memory="1Gi"))

    terminated = _wait_terminated(real, restricted_namespace, image)

    logs = real.kubectl("logs", "-n", restricted_namespace, image).stdout
    assert terminated["exitCode"] == 0, logs
    assert logs.startswith(f"usage: ttsfleet-{image}")


def test_memory_limit_is_enforced(real: ClusterHandle, namespace: str) -> None:
    hog = "x = []\nwhile True:\n    x.append(bytearray(16 * 1024 * 1024))"
    _apply(real, namespace, _pod(real, "hog", hog, memory="64Mi"))

    terminated = _wait_terminated(real, namespace, "hog")

    assert terminated["reason"] == "OOMKilled"


def test_cluster_ip_service_reaches_the_pod_from_another_pod_and_from_the_host(
    real: ClusterHandle, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    _apply(real, ns, _pod(real, "web", SERVER, probes=True), service)
    _wait_ready(real, ns, "web")
    cluster_ip = _get(real, "service", "web", "-n", ns)["spec"]["clusterIP"]

    from_host = wait_for(
        lambda: _http_get(f"http://{cluster_ip}/"),
        what=f"Service web at {cluster_ip} from the host",
        timeout=60,
    )
    assert from_host == "hello from web"

    client = f"import urllib.request; print(urllib.request.urlopen('http://{cluster_ip}/', timeout=10).read().decode())"
    _apply(real, ns, _pod(real, "client", client))
    assert _wait_terminated(real, ns, "client")["exitCode"] == 0
    assert real.kubectl("logs", "-n", ns, "client").stdout.strip() == "hello from web"


def test_local_volume_on_the_real_node_holds_files_across_pod_restarts(
    real: ClusterHandle, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "cache"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "local-ssd",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    append = "import os; open('/data/log', 'a').write(os.environ['POD_NAME'] + '\\n'); print(open('/data/log').read())"
    _apply(real, ns, claim, _pod(real, "writer-1", append, volume_claim="cache"))
    assert _wait_terminated(real, ns, "writer-1")["exitCode"] == 0

    volume_name = _get(real, "pvc", "cache", "-n", ns)["spec"]["volumeName"]
    volume = _get(real, "pv", volume_name)
    assert volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == [
        real.real_nodes[0]
    ]
    on_disk = Path(volume["spec"]["local"]["path"]) / "log"
    assert on_disk.read_text() == "writer-1\n"

    real.kubectl("delete", "pod", "writer-1", "-n", ns)
    _apply(real, ns, _pod(real, "writer-2", append, volume_claim="cache"))
    assert _wait_terminated(real, ns, "writer-2")["exitCode"] == 0

    assert real.kubectl("logs", "-n", ns, "writer-2").stdout.split() == ["writer-1", "writer-2"]
    assert on_disk.read_text() == "writer-1\nwriter-2\n"

    # Released, the volume returns to the pool empty, as a wiped disk would.
    real.kubectl("delete", "pod", "writer-2", "-n", ns)
    real.kubectl("delete", "pvc", "cache", "-n", ns)
    wait_for(
        lambda: _get(real, "pv", volume_name)["status"]["phase"] == "Available",
        what=f"volume {volume_name} Available again",
        timeout=60,
        describe=lambda: real.kubectl("get", "pv", volume_name, "-o", "yaml", check=False).stdout,
    )
    assert list(on_disk.parent.iterdir()) == []


def test_pod_reads_from_the_api_server_with_its_service_account_token(
    real: ClusterHandle, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    real.kubectl("create", "configmap", "greeting", "-n", ns, "--from-literal=text=hi from the API")
    real.kubectl("create", "role", "read-greeting", "-n", ns, "--verb=get", "--resource=configmaps")
    real.kubectl(
        "create", "rolebinding", "read-greeting", "-n", ns, "--role=read-greeting", f"--serviceaccount={ns}:default"
    )
    reader = f"""
import json, os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
request = urllib.request.Request(
    f"https://{{host}}:{{port}}/api/v1/namespaces/{ns}/configmaps/greeting",
    headers={{"Authorization": "Bearer " + open(sa + "/token").read()}},
)
context = ssl.create_default_context(cafile=sa + "/ca.crt")
print(json.load(urllib.request.urlopen(request, context=context, timeout=10))["data"]["text"])
"""
    _apply(real, ns, _pod(real, "reader", reader))

    terminated = _wait_terminated(real, ns, "reader")

    logs = real.kubectl("logs", "-n", ns, "reader").stdout
    assert terminated["exitCode"] == 0, logs
    assert logs.strip() == "hi from the API"


def test_pods_cannot_reach_anything_off_the_machine(real: ClusterHandle, namespace: str) -> None:
    # The machine's own uplink address stands for "anything else": pods have no route to it,
    # and the firewall drops it even when routed through the node.
    probe = """
import socket
s = socket.socket()
s.settimeout(3)
try:
    s.connect(("192.0.2.1", 53))
    print("connected")
except OSError as error:
    print("refused", type(error).__name__)
"""
    _apply(real, namespace, _pod(real, "escape", probe))
    _wait_terminated(real, namespace, "escape")
    assert real.kubectl("logs", "-n", namespace, "escape").stdout.startswith("refused")


def test_the_check_down_makes_sees_every_kind_of_trace_a_running_node_leaves(real: ClusterHandle) -> None:
    """`down` fails when any trace is left (the cluster fixture runs it at the end of every
    session, so each e2e run checks the clean-up); this proves that check is not blind."""
    layout = realnode.RealNodeLayout(real.workdir)

    traces = hostnet.leftovers(layout.root, {"net/ipv4/ip_forward": "not what it is now"})

    kinds = {trace.split()[0] for trace in traces}
    assert {"process", "interface", "iptables", "cgroup", "mount", "sysctl", "directory"} <= kinds, traces
    assert any("KUBE-SERVICES" in trace for trace in traces), "kube-proxy's chains are traces too"
