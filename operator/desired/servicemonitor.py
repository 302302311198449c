"""The Prometheus Operator ServiceMonitor for the fleet's metrics port (when monitoring is on).

It selects the headless Service, the only one with the metrics port: the client Service may be a
LoadBalancer and carries only what clients use. Prometheus scrapes each pod's endpoint, warming
pods included (the headless Service publishes not-ready addresses), which is when cold-start
metrics matter."""

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
    selector = {**naming.selector_labels(owner), naming.LABEL_SERVICE_ROLE: service.HEADLESS_ROLE}
    meta["labels"] = {**monitoring.labels, **meta["labels"]}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": selector},
            "endpoints": [
                {"port": contract.METRICS_PORT_NAME, "path": "/metrics", "interval": monitoring.interval},
            ],
            "namespaceSelector": {"matchNames": [owner.namespace]},
        },
    }
