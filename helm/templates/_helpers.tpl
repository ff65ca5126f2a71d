{{/* Names: <release>-<chart> unless the release name already holds the chart name; 63 chars max (DNS). */}}
{{- define "airflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "airflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" $ "component" "scheduler"). */}}
{{- define "airflow.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "airflow.image" -}}
{{- printf "%s:%s" .Values.images.airflow.repository (toString .Values.images.airflow.tag) -}}
{{- end -}}

{{- define "airflow.secretName" -}}
{{- include "airflow.fullname" . -}}
{{- end -}}

{{- define "airflow.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "airflow.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "airflow.apiServer.fullname" -}}
{{- printf "%s-api-server" (include "airflow.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret and key that hold the metadata connection (external secret, or the chart's own). */}}
{{- define "airflow.metadataSecretName" -}}
{{- default (include "airflow.secretName" .) .Values.data.metadataSecretName -}}
{{- end -}}

{{/* SQLAlchemy URL of the metadata database; fails the render when there is none. */}}
{{- define "airflow.metadataConnection" -}}
{{- if .Values.data.metadataConnection -}}
{{- .Values.data.metadataConnection -}}
{{- else if .Values.postgresql.enabled -}}
{{- $pg := .Values.postgresql -}}
{{- printf "postgresql+psycopg2://%s:%s@%s:%v/%s" (urlquery $pg.auth.username) (urlquery $pg.auth.password) (include "airflow.postgresql.fullname" .) $pg.port $pg.auth.database -}}
{{- else -}}
{{- fail "no metadata database: set data.metadataConnection or data.metadataSecretName, or enable postgresql" -}}
{{- end -}}
{{- end -}}

{{/* Environment every Airflow container shares. */}}
{{- define "airflow.env" -}}
{{- /* Only secrets come from the environment: every other setting is in airflow.cfg (the ConfigMap). */}}
- name: AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
  valueFrom:
    secretKeyRef:
      name: {{ include "airflow.metadataSecretName" . }}
      key: connection
- name: AIRFLOW__CORE__FERNET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "airflow.secretName" . }}
      key: fernet-key
- name: AIRFLOW__API__SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "airflow.secretName" . }}
      key: api-secret-key
- name: AIRFLOW__API_AUTH__JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "airflow.secretName" . }}
      key: jwt-secret
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "airflow.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "airflow.configName" -}}
{{- printf "%s-config" (include "airflow.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* airflow.cfg (and airflow_local_settings.py, when given) as single files over the image's AIRFLOW_HOME. */}}
{{- define "airflow.configMounts" -}}
- name: config
  mountPath: {{ printf "%s/airflow.cfg" .Values.airflowHome }}
  subPath: airflow.cfg
  readOnly: true
{{- if .Values.airflowLocalSettings }}
- name: config
  mountPath: {{ printf "%s/config/airflow_local_settings.py" .Values.airflowHome }}
  subPath: airflow_local_settings.py
  readOnly: true
{{- end }}
{{- end -}}

{{- define "airflow.configVolume" -}}
- name: config
  configMap:
    name: {{ include "airflow.configName" . }}
{{- end -}}

{{/* Pod annotations that roll the pods when their configuration changes. */}}
{{- define "airflow.checksums" -}}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end -}}

{{/* Init container: wait until `airflow db migrate` (the migration job) has run; it exits non-zero after
the timeout and the kubelet starts it again (with back-off) until the migrations are there. */}}
{{- define "airflow.waitForMigrations" -}}
{{- if .Values.waitForMigrations.enabled }}
initContainers:
  - name: wait-for-airflow-migrations
    image: {{ include "airflow.image" . }}
    imagePullPolicy: {{ .Values.images.airflow.pullPolicy }}
    args: ["airflow", "db", "check-migrations", {{ printf "--migration-wait-timeout=%v" .Values.waitForMigrations.timeoutSeconds | quote }}]
    env:
      {{- include "airflow.env" . | nindent 6 }}
    volumeMounts:
      {{- include "airflow.configMounts" . | nindent 6 }}
    securityContext:
      {{- include "airflow.containerSecurityContext" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* Timing fields of a probe from values (the handler is fixed by the template). */}}
{{- define "airflow.probeTiming" -}}
initialDelaySeconds: {{ .initialDelaySeconds }}
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
{{- end -}}

{{/*
Exec probe of a job-running component: (dict "jobType" "SchedulerJob" "probe" .Values.scheduler.livenessProbe).
Through the image's entrypoint (its contract: group 0, a passwd entry for any uid), without its database wait
(CONNECTION_CHECK_MAX_COUNT=0: a probe must answer within its timeout).
*/}}
{{- define "airflow.jobCheckProbe" -}}
exec:
  command:
    - sh
    - -c
    - {{ printf "CONNECTION_CHECK_MAX_COUNT=0 AIRFLOW__LOGGING__LOGGING_LEVEL=ERROR exec /entrypoint airflow jobs check --job-type %s --local" .jobType | quote }}
{{ include "airflow.probeTiming" .probe }}
{{- end -}}

{{/* The log groomer next to a component that writes logs: (dict "root" $ "component" "scheduler" "groomer" .Values.scheduler.logGroomerSidecar) */}}
{{- define "airflow.logGroomer" -}}
{{- $root := .root -}}
{{- $groomer := .groomer -}}
- name: {{ printf "%s-log-groomer" .component }}
  image: {{ include "airflow.image" $root }}
  imagePullPolicy: {{ $root.Values.images.airflow.pullPolicy }}
  args: ["bash", "/clean-logs"]
  env:
    - name: AIRFLOW_HOME
      value: {{ $root.Values.airflowHome | quote }}
    - name: AIRFLOW__LOG_RETENTION_DAYS
      value: {{ $groomer.retentionDays | quote }}
    {{- if $groomer.retentionMinutes }}
    - name: AIRFLOW__LOG_RETENTION_MINUTES
      value: {{ $groomer.retentionMinutes | quote }}
    {{- end }}
    - name: AIRFLOW__LOG_CLEANUP_FREQUENCY_MINUTES
      value: {{ $groomer.frequencyMinutes | quote }}
    {{- if $groomer.maxSizeBytes }}
    - name: AIRFLOW__LOG_MAX_SIZE_BYTES
      value: {{ $groomer.maxSizeBytes | int64 | quote }}
    {{- end }}
    {{- if $groomer.maxSizePercent }}
    - name: AIRFLOW__LOG_MAX_SIZE_PERCENT
      value: {{ $groomer.maxSizePercent | quote }}
    {{- end }}
  volumeMounts:
    - name: logs
      mountPath: {{ printf "%s/logs" $root.Values.airflowHome }}
  securityContext:
    {{- include "airflow.containerSecurityContext" $root | nindent 4 }}
  {{- with $groomer.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/*
A Deployment of one job-running Airflow component (scheduler, dag-processor, triggerer):
(dict "root" $ "component" "scheduler" "values" .Values.scheduler "args" (list "scheduler") "jobType" "SchedulerJob")
*/}}
{{- define "airflow.jobDeployment" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ printf "%s-%s" (include "airflow.fullname" $root) .component | trunc 63 | trimSuffix "-" }}
  labels:
    {{- include "airflow.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  replicas: {{ .values.replicas }}
  selector:
    matchLabels:
      {{- include "airflow.selectorLabels" (dict "root" $root "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "airflow.selectorLabels" (dict "root" $root "component" .component) | nindent 8 }}
      annotations:
        {{- include "airflow.checksums" $root | nindent 8 }}
    spec:
      serviceAccountName: {{ include "airflow.fullname" $root }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- include "airflow.waitForMigrations" $root | nindent 6 }}
      containers:
        - name: {{ .component }}
          image: {{ include "airflow.image" $root }}
          imagePullPolicy: {{ $root.Values.images.airflow.pullPolicy }}
          args: {{ toJson .args }}
          env:
            {{- include "airflow.env" $root | nindent 12 }}
          volumeMounts:
            {{- include "airflow.configMounts" $root | nindent 12 }}
            - name: logs
              mountPath: {{ printf "%s/logs" $root.Values.airflowHome }}
          securityContext:
            {{- include "airflow.containerSecurityContext" $root | nindent 12 }}
          {{- with .values.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .values.startupProbe }}
          startupProbe:
            {{- include "airflow.jobCheckProbe" (dict "jobType" $.jobType "probe" .) | nindent 12 }}
          {{- end }}
          livenessProbe:
            {{- include "airflow.jobCheckProbe" (dict "jobType" .jobType "probe" .values.livenessProbe) | nindent 12 }}
        {{- if .values.logGroomerSidecar.enabled }}
        {{- include "airflow.logGroomer" (dict "root" $root "component" .component "groomer" .values.logGroomerSidecar) | nindent 8 }}
        {{- end }}
      volumes:
        {{- include "airflow.configVolume" $root | nindent 8 }}
        # The component's logs, shared with its log groomer; gone with the pod.
        - name: logs
          emptyDir: {}
{{- end -}}
