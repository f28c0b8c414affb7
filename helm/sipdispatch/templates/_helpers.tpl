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

{{/*
Selector labels: what a Service or a Deployment selects on. They never change during the life of
a release (a Deployment's selector is immutable), so nothing version-like goes here.
*/}}
{{- define "sipdispatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sipdispatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of each workload: the operator's and the proxy's pods share name and instance,
so the component tells them apart.
*/}}
{{- define "sipdispatch.operatorSelectorLabels" -}}
{{ include "sipdispatch.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "sipdispatch.proxySelectorLabels" -}}
{{ include "sipdispatch.selectorLabels" . }}
app.kubernetes.io/component: proxy
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
The operator reads DispatcherSets, EndpointSlices, Services (their grants), DispatcherReports
and its own tables; writes tables (ConfigMaps), DispatcherSet status, and Events. One rule set,
bound cluster-wide or in each watched namespace.
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
# Services only for their grant annotation (a gateway in another namespace).
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, update]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/*
Object names. The full name is at most 54 characters, so every suffix below (at most 9
characters: "-operator") keeps Service and Deployment names within 63.
*/}}
{{- define "sipdispatch.operatorName" -}}
{{- printf "%s-operator" (include "sipdispatch.fullname" .) }}
{{- end }}

{{/*
The operator's Lease (leader election: only its holder writes), in the release namespace.
*/}}
{{- define "sipdispatch.operatorLeaseName" -}}
{{- include "sipdispatch.operatorName" . }}
{{- end }}

{{- define "sipdispatch.proxyName" -}}
{{- printf "%s-proxy" (include "sipdispatch.fullname" .) }}
{{- end }}

{{/*
The SIP Service keeps the bare full name: it is the address users dial
("<release>.<namespace>.svc"), and the default Record-Route address.
*/}}
{{- define "sipdispatch.sipServiceName" -}}
{{- include "sipdispatch.fullname" . }}
{{- end }}

{{- define "sipdispatch.metricsServiceName" -}}
{{- printf "%s-metrics" (include "sipdispatch.fullname" .) }}
{{- end }}

{{/*
The Secret holding the route keys (and the control API token): the user's own, or the one the
operator makes and rotates (the chart never renders it: see operator-deployment.yaml).
*/}}
{{- define "sipdispatch.secretName" -}}
{{- default (printf "%s-secret" (include "sipdispatch.fullname" .)) .Values.proxy.secret.existingSecret }}
{{- end }}

{{/*
Whether the operator keeps the proxies' Secret: yes unless it is the user's own. Without an
operator in this release nobody would make it, so the user's own is required then.
*/}}
{{- define "sipdispatch.operatorKeepsSecret" -}}
{{- if not .Values.proxy.secret.existingSecret }}
{{- if not .Values.operator.enabled }}
{{- fail "proxy.secret.existingSecret: required when operator.enabled is false (the operator of this release makes the route keys' Secret; without it, create one: see docs/install.md)" }}
{{- end }}
{{- true }}
{{- end }}
{{- end }}

{{/*
Image reference: a digest wins over the tag; the tag defaults to the chart's appVersion.
*/}}
{{- define "sipdispatch.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
What the proxy writes in Record-Route: the address users dial. By default the SIP Service's
cluster DNS name and port, which is right for callers and gateways inside the cluster; set
proxy.service.advertise for callers outside it.
*/}}
{{- define "sipdispatch.advertise" -}}
{{- if .Values.proxy.service.advertise }}
{{- .Values.proxy.service.advertise }}
{{- else }}
{{- printf "%s.%s.svc.%s:%d" (include "sipdispatch.sipServiceName" .) .Release.Namespace .Values.clusterDomain (int .Values.proxy.service.port) }}
{{- end }}
{{- end }}
