"""The API kinds the operator reads and writes, and where they live on the API server."""

from __future__ import annotations

from dataclasses import dataclass

from ttsfleet.operator import spec


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    def base_path(self) -> str:
        return f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        parts = [self.base_path()]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        if sub:
            parts.append(sub)
        return "/".join(parts)


TTSDEPLOYMENT = Kind(spec.API_VERSION, spec.KIND, spec.PLURAL)
STATEFULSET = Kind("apps/v1", "StatefulSet", "statefulsets")
SERVICE = Kind("v1", "Service", "services")
CONFIGMAP = Kind("v1", "ConfigMap", "configmaps")
POD = Kind("v1", "Pod", "pods")
EVENT = Kind("v1", "Event", "events")
PDB = Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
SCALEDOBJECT = Kind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects")
TRIGGERAUTHENTICATION = Kind("keda.sh/v1alpha1", "TriggerAuthentication", "triggerauthentications")
SERVICEMONITOR = Kind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors")
NETWORKPOLICY = Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
CLUSTER_PEERING = Kind("kopf.dev/v1", "ClusterKopfPeering", "clusterkopfpeerings", namespaced=False)
PEERING = Kind("kopf.dev/v1", "KopfPeering", "kopfpeerings")

# Every kind the operator creates for a fleet, so that pruning can find stale children.
CHILD_KINDS: tuple[Kind, ...] = (
    STATEFULSET,
    SERVICE,
    CONFIGMAP,
    PDB,
    NETWORKPOLICY,
    TRIGGERAUTHENTICATION,
    SCALEDOBJECT,
    SERVICEMONITOR,
)
# Kinds that come from optional add-ons (KEDA, Prometheus Operator) and may not be installed.
OPTIONAL_KINDS: frozenset[Kind] = frozenset({SCALEDOBJECT, TRIGGERAUTHENTICATION, SERVICEMONITOR})
# The children of those kinds (kopf watches them), in CHILD_KINDS' order.
OPTIONAL_CHILD_KINDS: tuple[Kind, ...] = tuple(kind for kind in CHILD_KINDS if kind in OPTIONAL_KINDS)


def kind_of(obj: dict[str, object]) -> Kind:
    for candidate in (*CHILD_KINDS, TTSDEPLOYMENT, POD, EVENT, CLUSTER_PEERING, PEERING):
        if candidate.api_version == obj.get("apiVersion") and candidate.kind == obj.get("kind"):
            return candidate
    raise KeyError(f"unknown kind {obj.get('apiVersion')}/{obj.get('kind')}")
