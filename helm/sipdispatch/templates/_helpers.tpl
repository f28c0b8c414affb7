{{/*
Chart name, at most 63 characters: Kubernetes names and label values are limited to 63.
*/}}
{{- define "sipdispatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, with the chart name unless the release name contains it.
Truncated to 54 so that suffixes such as "-operator" still fit in 63 characters.
*/}}
{{- define "sipdispatch.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Labels on every object. helm.sh/chart changes with every chart version: never use it in selectors.
*/}}
{{- define "sipdispatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sipdispatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sipdispatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sipdispatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sipdispatch.operatorServiceAccount" -}}
{{- default (printf "%s-operator" (include "sipdispatch.fullname" .)) .Values.operator.serviceAccount.name }}
{{- end }}

{{- define "sipdispatch.proxyServiceAccount" -}}
{{- default (printf "%s-proxy" (include "sipdispatch.fullname" .)) .Values.proxy.serviceAccount.name }}
{{- end }}

{{/*
The rendered table the proxy reads: "<proxy name>-table" (see sipdispatch.operator.k8s).
*/}}
{{- define "sipdispatch.tableName" -}}
{{- printf "%s-table" .Values.proxy.name }}
{{- end }}

{{/*
The operator reads DispatcherSets, EndpointSlices, DispatcherReports and its own tables;
writes tables (ConfigMaps), DispatcherSet status, and Events. One rule set, bound
cluster-wide or in each watched namespace.
*/}}
{{- define "sipdispatch.operatorRules" -}}
- apiGroups: [sipdispatch.io]
  resources: [dispatchersets, dispatcherreports]
  verbs: [get, list, watch]
- apiGroups: [sipdispatch.io]
  resources: [dispatchersets/status]
  verbs: [get, patch, update]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, update]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
