{{/* The release's full name, at most 63 characters. */}}
{{- define "kaa-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kaa-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kaa-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kaa-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: kaa-rs
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "kaa-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kaa-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kaa-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "kaa-operator.dataPlaneImage" -}}
{{- printf "%s:%s" .Values.dataPlane.image.repository (default .Chart.AppVersion .Values.dataPlane.image.tag) -}}
{{- end -}}

{{- define "kaa-operator.leaseName" -}}
{{- default (include "kaa-operator.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}
