"""The simulated machines and their local-SSD volumes have the shape the operator relies on."""

from __future__ import annotations

from ttsfleet.devcluster import addons


def test_nodes_spread_over_zones_and_offer_gpus() -> None:
    plan = addons.NodePlan()
    nodes = [addons.node(plan, index) for index in range(len(plan.node_names()))]
    assert {n["metadata"]["labels"][addons.ZONE_LABEL] for n in nodes} == set(plan.zones)
    assert all(n["status"]["allocatable"][addons.GPU_RESOURCE] == "4" for n in nodes)
    assert all(n["metadata"]["annotations"][addons.KWOK_NODE_ANNOTATION] == "fake" for n in nodes)


def test_local_ssd_class_waits_for_the_consumer_and_has_no_provisioner() -> None:
    storage_class = addons.storage_class()
    assert storage_class["volumeBindingMode"] == "WaitForFirstConsumer"
    assert storage_class["provisioner"] == "kubernetes.io/no-provisioner"


def test_every_node_gets_its_own_pinned_volumes() -> None:
    plan = addons.NodePlan(volumes_per_node=2)
    volumes = [o for o in addons.all_objects(plan) if o["kind"] == "PersistentVolume"]
    assert len(volumes) == 2 * len(plan.node_names())
    for volume in volumes:
        term = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
        assert term["values"] == [volume["metadata"]["labels"][addons.HOSTNAME_LABEL]]
    assert len({v["metadata"]["name"] for v in volumes}) == len(volumes)
