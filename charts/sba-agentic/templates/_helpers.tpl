{{/* Names ------------------------------------------------------------------------------ */}}
{{- define "sba.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sba.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sba.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: common (no name/instance), then per component. The API's name label is what tenant
     NetworkPolicies select (SBA_GATEWAY_POD_LABELS). */}}
{{- define "sba.labels" -}}
helm.sh/chart: {{ include "sba.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sba-agentic
{{- end -}}

{{- define "sba.api.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sba.name" . }}-api
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sba.api.labels" -}}
{{ include "sba.labels" . }}
{{ include "sba.api.selectorLabels" . }}
app.kubernetes.io/component: api
{{- end -}}

{{- define "sba.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sba.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sba.operator.labels" -}}
{{ include "sba.labels" . }}
{{ include "sba.operator.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "sba.labels.component" -}}
{{ include "sba.labels" .root }}
app.kubernetes.io/name: {{ include "sba.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* "k=v,k2=v2" of the API's selector labels, for the operator's tenant NetworkPolicies. */}}
{{- define "sba.api.podLabelsCsv" -}}
{{- $pairs := list -}}
{{- range $k, $v := (include "sba.api.selectorLabels" . | fromYaml) -}}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* Identities -------------------------------------------------------------------------- */}}
{{- define "sba.api.serviceAccountName" -}}
{{- default (printf "%s-api" (include "sba.fullname" .)) .Values.api.serviceAccount.name -}}
{{- end -}}

{{- define "sba.operator.serviceAccountName" -}}
{{- default (printf "%s-operator" (include "sba.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "sba.api.username" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "sba.api.serviceAccountName" . }}
{{- end -}}

{{- define "sba.operator.username" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "sba.operator.serviceAccountName" . }}
{{- end -}}

{{/* Objects --------------------------------------------------------------------------- */}}
{{- define "sba.secretName" -}}
{{- default (include "sba.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "sba.api.serviceName" -}}
{{- printf "%s-api" (include "sba.fullname" .) -}}
{{- end -}}

{{- define "sba.peeringName" -}}
{{- default (include "sba.fullname" .) .Values.operator.peering.name -}}
{{- end -}}

{{/* image: repository[:tag][@digest] of {repository, tag, digest}, tag defaulting to appVersion. */}}
{{- define "sba.imageRef" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "sba.image" -}}
{{- include "sba.imageRef" (dict "root" . "image" .Values.image) -}}
{{- end -}}

{{/* Env from the Secret: name, key, optional. */}}
{{- define "sba.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "sba.secretName" .root }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* The read-only root filesystem's writable /tmp. */}}
{{- define "sba.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ . }}
{{- end -}}
