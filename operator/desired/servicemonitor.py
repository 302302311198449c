"""The Prometheus Operator ServiceMonitor for the fleet's metrics port (when monitoring is on)."""

from __future__ import annotations

from typing import Any

from ttsfleet import contract
from ttsfleet.operator import naming
from ttsfleet.operator.desired import service
from ttsfleet.operator.naming import Owner
from ttsfleet.operator.spec import TTSDeploymentSpec


def build(owner: Owner, spec: TTSDeploymentSpec) -> dict[str, Any] | None:
    monitoring = spec.monitoring
    if not monitoring.service_monitor:
        return None
    meta = naming.metadata(owner, owner.name)
    selector = {**naming.selector_labels(owner), naming.LABEL_SERVICE_ROLE: service.CLIENT_ROLE}
    meta["labels"] = {**monitoring.labels, **meta["labels"]}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            # Only the client Service: the headless one selects the same pods and would double-count.
            "selector": {"matchLabels": selector},
            "endpoints": [
                {"port": contract.METRICS_PORT_NAME, "path": "/metrics", "interval": monitoring.interval},
            ],
            "namespaceSelector": {"matchNames": [owner.namespace]},
        },
    }
