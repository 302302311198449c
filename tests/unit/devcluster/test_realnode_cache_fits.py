"""A fleet's default model cache binds to the real node's volumes: with 10Gi volumes and a 20Gi
default cache every example fleet stayed Pending on the real node ("didn't find available
persistent volumes to bind")."""

from __future__ import annotations

from pathlib import Path

from kubernetes.utils import parse_quantity

from ttsfleet.devcluster import realnode
from ttsfleet.operator.spec import ModelCacheSpec


def test_real_node_volumes_hold_the_default_model_cache() -> None:
    (volume,) = realnode.local_volumes(realnode.RealNodeLayout(Path("/w"), volumes=1))

    capacity = parse_quantity(volume["spec"]["capacity"]["storage"])

    assert capacity >= parse_quantity(ModelCacheSpec().size)
