{{/*
What the operator really does, one rule per resource so that each can be proven necessary
(tests/e2e/chart removes rules one at a time and watches the lifecycle fail).
Children are written with server-side apply: PATCH, plus create for the first apply. Writes go
only to the kinds the operator owns (a fleet's children, its status, its peering object, Events).
*/}}
{{- define "ttsfleet.namespacedRules" -}}
# Fleets: the reconciler GETs the fresh object, kopf and the resync list and watch.
- apiGroups: ["tts.ttsfleet.io"]
  resources: ["ttsdeployments"]
  verbs: ["get", "list", "watch"]
# Status is written once per change, with server-side apply.
- apiGroups: ["tts.ttsfleet.io"]
  resources: ["ttsdeployments/status"]
  verbs: ["patch"]
# Children carry blockOwnerDeletion; where the OwnerReferencesPermissionEnforcement admission
# plugin runs (OpenShift), setting it needs update on the owner's finalizers.
- apiGroups: ["tts.ttsfleet.io"]
  resources: ["ttsdeployments/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Who may connect to a fleet's pods.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Optional add-ons: harmless where KEDA or the Prometheus Operator is not installed.
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# A redis trigger's password reference (the Secret itself is read by KEDA, not by the operator).
- apiGroups: ["keda.sh"]
  resources: ["triggerauthentications"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Pods are only observed: readiness, cold-start samples, stuck containers. No rule on Secrets at
# all: a missing model Secret shows as the kubelet's CreateContainerConfigError on the pods.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# One Event per condition flip, and kopf's own warnings.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{- define "ttsfleet.peeringRules" -}}
{{- if .Values.peering.enabled }}
{{- $kind := ternary "clusterkopfpeerings" "kopfpeerings" (eq (include "ttsfleet.clusterwide" .) "true") }}
# kopf peering: watch the peers and write this replica's keep-alive into the one peering object;
# the resync reads it to stay quiet on a standby replica.
- apiGroups: ["kopf.dev"]
  resources: [{{ $kind | quote }}]
  verbs: ["list", "watch"]
- apiGroups: ["kopf.dev"]
  resources: [{{ $kind | quote }}]
  resourceNames: [{{ include "ttsfleet.peeringName" . | quote }}]
  verbs: ["get", "patch"]
{{- end }}
{{- end -}}

{{- define "ttsfleet.clusterRules" -}}
# kopf rescans resources when CRDs come and go (KEDA or the Prometheus Operator installed later).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if ne (include "ttsfleet.clusterwide" .) "true" }}
# kopf lists namespaces to know which of the served ones exist.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end -}}
