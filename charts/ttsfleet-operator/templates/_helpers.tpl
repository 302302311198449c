{{/* Release-scoped names: cluster-scoped objects carry the namespace so two releases never collide. */}}
{{- define "ttsfleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ttsfleet.clusterName" -}}
{{- printf "%s-%s" (include "ttsfleet.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ttsfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ttsfleet.labels" -}}
{{ include "ttsfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: ttsfleet
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ttsfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ttsfleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* ClusterKopfPeering is cluster-scoped: the default name carries the release namespace. */}}
{{- define "ttsfleet.peeringName" -}}
{{- default (include "ttsfleet.clusterName" .) .Values.peering.name -}}
{{- end -}}

{{/* A digest, when given, pins the image: the tag is then only for people reading the manifest. */}}
{{- define "ttsfleet.image" -}}
{{- $ref := printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $ref .Values.image.digest -}}
{{- else -}}
{{- $ref -}}
{{- end -}}
{{- end -}}

{{/* Whether the release serves every namespace (ClusterRole) or a list of them (Roles). */}}
{{- define "ttsfleet.clusterwide" -}}
{{- if not .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/* The operator's command line; tests/e2e/chart runs the operator locally with exactly these. */}}
{{- define "ttsfleet.operatorArgs" -}}
- --log-level={{ .Values.logLevel }}
- --log-format={{ .Values.logFormat }}
- --resync-seconds={{ .Values.resyncSeconds }}
- --workers={{ .Values.workers }}
- --liveness=http://0.0.0.0:{{ .Values.health.port }}/healthz
- --metrics-port={{ .Values.metrics.port }}
{{- if .Values.watchNamespaces }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
{{- if .Values.peering.enabled }}
- --peering={{ include "ttsfleet.peeringName" . }}
{{- end }}
{{- end -}}
