"""The real node's configuration keeps pods on this machine and off the simulated GPU nodes."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from ttsfleet.devcluster import realnode
from ttsfleet.devcluster.cluster import POD_CIDR, SERVICE_CIDR


def test_pods_get_routes_only_to_pods_services_and_the_node() -> None:
    config = realnode.cni_config(realnode.RealNodeLayout(Path("/w")), SERVICE_CIDR)
    bridge = config["plugins"][0]

    routes = [route["dst"] for route in bridge["ipam"]["routes"]]

    assert bridge["isDefaultGateway"] is False and bridge["ipMasq"] is False
    assert "0.0.0.0/0" not in routes
    assert routes == [SERVICE_CIDR, f"{realnode.NODE_IP}/32"]


def test_pod_subnet_and_node_address_belong_to_the_cluster() -> None:
    pods = ipaddress.ip_network(realnode.POD_SUBNET)
    assert pods.subnet_of(ipaddress.ip_network(POD_CIDR))  # type: ignore[arg-type]
    assert ipaddress.ip_address(realnode.POD_GATEWAY) in pods
    assert ipaddress.ip_address(realnode.NODE_IP).is_private
    assert ipaddress.ip_address(realnode.NODE_IP) not in pods


def test_kubelet_taints_its_node_and_talks_to_its_own_containerd() -> None:
    layout = realnode.RealNodeLayout(Path("/w"))
    config = realnode.kubelet_config(
        layout, ca_file=Path("ca"), tls_cert=Path("c"), tls_key=Path("k"), port=1, healthz_port=2
    )

    assert config["registerWithTaints"] == [
        {"key": realnode.REAL_NODE_TAINT_KEY, "value": "true", "effect": "NoSchedule"}
    ]
    assert config["containerRuntimeEndpoint"] == f"unix://{layout.containerd_socket}"
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert realnode.node_labels(layout)[realnode.NODE_KIND_LABEL] == "real"


def test_real_node_volumes_are_real_directories_pinned_to_the_node() -> None:
    layout = realnode.RealNodeLayout(Path("/w"), volumes=2)

    volumes = realnode.local_volumes(layout)

    assert [v["spec"]["local"]["path"] for v in volumes] == [str(layout.disk(0)), str(layout.disk(1))]
    terms = volumes[0]["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == [layout.name]
    assert volumes[0]["metadata"]["annotations"][realnode.WIPE_ANNOTATION] == "true"


def test_containerd_config_pins_the_sandbox_image_and_restricts_oom_score() -> None:
    layout = realnode.RealNodeLayout(Path("/w"))

    text = realnode.containerd_config(layout, "localhost/ttsfleet-pause:abc")

    assert 'sandbox = "localhost/ttsfleet-pause:abc"' in text
    assert "restrict_oom_score_adj = true" in text
    assert f'address = "{layout.containerd_socket}"' in text
