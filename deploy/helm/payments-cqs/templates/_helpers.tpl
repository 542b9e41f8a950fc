{{/* Chart name, overridable. */}}
{{- define "payments.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, or release-chart. */}}
{{- define "payments.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "payments.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "payments.labels" -}}
helm.sh/chart: {{ include "payments.chart" . }}
{{ include "payments.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: payments-cqs
{{- end }}

{{/* Labels selecting every pod of this release. */}}
{{- define "payments.selectorLabels" -}}
app.kubernetes.io/name: {{ include "payments.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels selecting the pods of one process; call with (dict "root" $ "proc" $p). */}}
{{- define "payments.componentSelectorLabels" -}}
{{ include "payments.selectorLabels" .root }}
app.kubernetes.io/component: {{ .proc.name }}
{{- end }}

{{- define "payments.componentLabels" -}}
{{ include "payments.labels" .root }}
app.kubernetes.io/component: {{ .proc.name }}
payments.gyroscops.com/side: {{ .proc.side }}
{{- end }}

{{- define "payments.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "payments.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of a process's objects; call with (dict "root" $ "proc" $p). The prefix is cut
so that "<prefix>-command-worker" stays a valid 63-character Service name. */}}
{{- define "payments.componentName" -}}
{{- printf "%s-%s" (include "payments.fullname" .root | trunc 48 | trimSuffix "-") .proc.name }}
{{- end }}

{{- define "payments.secretName" -}}
{{- default (printf "%s-secrets" (include "payments.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "payments.configName" -}}
{{- printf "%s-config" (include "payments.fullname" .) }}
{{- end }}

{{- define "payments.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The eight long-running processes. name = the `payments` sub-command and the component
label; side/key = where its settings live in values (.Values.<side>.<key>); portEnv = the
setting that tells the process its port; secrets = the secret settings it receives.
*/}}
{{- define "payments.processes" -}}
- name: command-api
  side: command
  key: api
  portEnv: PAYMENTS_COMMAND_API_PORT
  secrets: [PAYMENTS_DATABASE_URL, PAYMENTS_JWT_SECRET, PAYMENTS_CONSISTENCY_TOKEN_SECRET,
            PAYMENTS_WEBHOOKS_SECRET_KEY]
- name: command-worker
  side: command
  key: worker
  portEnv: PAYMENTS_COMMAND_WORKER_METRICS_PORT
  secrets: [PAYMENTS_DATABASE_URL]
- name: relay
  side: command
  key: relay
  portEnv: PAYMENTS_RELAY_METRICS_PORT
  secrets: [PAYMENTS_DATABASE_URL]
- name: intake
  side: command
  key: intake
  portEnv: PAYMENTS_INTAKE_METRICS_PORT
  secrets: [PAYMENTS_DATABASE_URL]
- name: query-api
  side: query
  key: api
  portEnv: PAYMENTS_QUERY_API_PORT
  secrets: [PAYMENTS_MONGO_URL, PAYMENTS_REDIS_URL, PAYMENTS_JWT_SECRET, PAYMENTS_CONSISTENCY_TOKEN_SECRET]
- name: projector
  side: query
  key: projector
  portEnv: PAYMENTS_PROJECTOR_METRICS_PORT
  secrets: [PAYMENTS_MONGO_URL, PAYMENTS_REDIS_URL]
- name: query-worker
  side: query
  key: worker
  portEnv: PAYMENTS_QUERY_WORKER_METRICS_PORT
  secrets: [PAYMENTS_MONGO_URL, PAYMENTS_REDIS_URL, PAYMENTS_CONSISTENCY_TOKEN_SECRET]
- name: webhooks
  side: webhooks
  key: deliveries
  portEnv: PAYMENTS_WEBHOOKS_METRICS_PORT
  secrets: [PAYMENTS_DATABASE_URL, PAYMENTS_CONSISTENCY_TOKEN_SECRET, PAYMENTS_WEBHOOKS_SECRET_KEY]
{{- end }}

{{/* Pod-level scheduling for one process: its own value, else the chart-wide one. */}}
{{- define "payments.scheduling" -}}
{{- $nodeSelector := .cfg.nodeSelector | default .root.Values.nodeSelector }}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $tolerations := .cfg.tolerations | default .root.Values.tolerations }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $affinity := .cfg.affinity | default .root.Values.affinity }}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .root.Values.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: {{ .root.Values.topologySpread.topologyKey }}
    whenUnsatisfiable: {{ .root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "payments.componentSelectorLabels" (dict "root" .root "proc" .proc) | nindent 8 }}
{{- end }}
{{- end }}

{{/* The migration container (hook Job and optional initContainer). */}}
{{- define "payments.migrateContainer" -}}
name: migrate
image: {{ include "payments.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
args: ["migrate"]
env:
  - name: PAYMENTS_DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ .secretName }}
        key: PAYMENTS_DATABASE_URL
  - name: PAYMENTS_LOG_LEVEL
    value: {{ .root.Values.config.logLevel | quote }}
  - name: PAYMENTS_LOG_JSON
    value: {{ .root.Values.config.logJson | quote }}
resources:
  {{- toYaml .root.Values.migrations.resources | nindent 2 }}
securityContext:
  {{- toYaml .root.Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  - name: data
    mountPath: /var/lib/payments
{{- end }}
