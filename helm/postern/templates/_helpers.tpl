{{/* Names and labels. */}}
{{- define "postern.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "postern.fullname" -}}
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

{{/* postern.labels (dict "root" $ "component" "smtpd") */}}
{{- define "postern.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: postern
{{ include "postern.selectorLabels" . }}
{{- end -}}

{{- define "postern.selectorLabels" -}}
app.kubernetes.io/name: {{ include "postern.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "postern.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString .Values.image.tag) -}}
{{- end -}}

{{/* Where the services find PostgreSQL and NATS. */}}
{{- define "postern.externalDatabase" -}}
{{- if or .Values.postgresql.external.url .Values.postgresql.external.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "postern.bundledDatabase" -}}
{{- if and (not (include "postern.externalDatabase" .)) .Values.postgresql.bundled.enabled -}}true{{- end -}}
{{- end -}}

{{- define "postern.bundledNats" -}}
{{- if and (not .Values.nats.external.url) .Values.nats.bundled.enabled -}}true{{- end -}}
{{- end -}}

{{- define "postern.natsUrl" -}}
{{- if .Values.nats.external.url -}}
{{- .Values.nats.external.url -}}
{{- else if .Values.nats.bundled.enabled -}}
{{- printf "nats://%s-nats:4222" (include "postern.fullname" .) -}}
{{- else -}}
{{- fail "NATS: set nats.external.url, or nats.bundled.enabled=true" -}}
{{- end -}}
{{- end -}}

{{/*
The DATABASE_URL variable of a container. postern.databaseEnv (dict "root" $ "secret" NAME):
NAME is the Secret holding DATABASE_URL when postgresql.external.url is used.
*/}}
{{- define "postern.databaseEnv" -}}
{{- $root := .root -}}
{{- $ext := $root.Values.postgresql.external -}}
{{- if $ext.existingSecret -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $ext.existingSecret }}
      key: {{ $ext.existingSecretKey | default "DATABASE_URL" }}
{{- else if $ext.url -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: DATABASE_URL
{{- else if $root.Values.postgresql.bundled.enabled -}}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "postern.fullname" $root }}-postgresql
      key: password
- name: DATABASE_URL
  value: {{ printf "postgresql://postern:$(POSTGRES_PASSWORD)@%s-postgresql:5432/postern" (include "postern.fullname" $root) | quote }}
{{- else -}}
{{- fail "PostgreSQL: set postgresql.external.url (or .existingSecret), or postgresql.bundled.enabled=true" -}}
{{- end -}}
{{- end -}}

{{- define "postern.tlsSecretName" -}}
{{- .Values.tls.existingSecret | default (printf "%s-tls" (include "postern.fullname" .)) -}}
{{- end -}}

{{/*
A Postern pod template: postern.pod (dict "root" $ "component" NAME "command" SERVICE
"values" COMPONENT-VALUES "ports" LIST-OF-(dict name env port) "tls" BOOL
"hostnameEnv" VARIABLE "drainTimeout" SECONDS): tls mounts the certificate; hostnameEnv is
the variable that carries .Values.hostname to a front end (SMTP_HOSTNAME, POP3_HOSTNAME,
...); drainTimeout (front ends, already checked) becomes DRAIN_TIMEOUT, and the grace period
is drainTimeout + 5 seconds, or the component's terminationGracePeriodSeconds when that is
longer: Kubernetes sends SIGKILL when the grace period ends, drained or not.
*/}}
{{- define "postern.pod" -}}
{{- $root := .root -}}
{{- $v := .values -}}
metadata:
  labels:
    {{- include "postern.selectorLabels" (dict "root" $root "component" .component) | nindent 4 }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
    {{- if and .tls (not $root.Values.tls.existingSecret) }}
    checksum/tls: {{ include (print $root.Template.BasePath "/tls-secret.yaml") $root | sha256sum }}
    {{- end }}
    {{- if $root.Values.metrics.podAnnotations }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $root.Values.healthPort | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with $root.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "postern.fullname" $root }}
  automountServiceAccountToken: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- if hasKey . "drainTimeout" }}
  terminationGracePeriodSeconds: {{ max (add .drainTimeout 5) (int ($v.terminationGracePeriodSeconds | default 0)) }}
  {{- else }}
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds | default 30 }}
  {{- end }}
  {{- if include "postern.bundledDatabase" $root }}
  # The bundled PostgreSQL is created with the release, after the pre-install hooks: the
  # schema is applied here (idempotent, locked; it waits for the server).
  initContainers:
    - name: migrate
      image: {{ include "postern.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args: ["migrate"]
      env:
        {{- include "postern.databaseEnv" (dict "root" $root "secret" "") | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      resources:
        {{- toYaml $root.Values.migrate.resources | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ include "postern.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args: [{{ .command | quote }}]
      envFrom:
        - configMapRef:
            name: {{ include "postern.fullname" $root }}
      env:
        {{- include "postern.databaseEnv" (dict "root" $root "secret" (include "postern.fullname" $root)) | nindent 8 }}
        - name: NATS_URL
          valueFrom:
            secretKeyRef:
              name: {{ include "postern.fullname" $root }}
              key: NATS_URL
        {{- range .ports }}
        - name: {{ .env }}
          value: {{ .port | quote }}
        {{- end }}
        {{- if .tls }}
        - name: TLS_CERT
          value: /etc/postern/tls/tls.crt
        - name: TLS_KEY
          value: /etc/postern/tls/tls.key
        {{- end }}
        {{- if and .hostnameEnv $root.Values.hostname }}
        - name: {{ .hostnameEnv }}
          value: {{ $root.Values.hostname | quote }}
        {{- end }}
        {{- if hasKey . "drainTimeout" }}
        - name: DRAIN_TIMEOUT
          value: {{ .drainTimeout | quote }}
        {{- end }}
      ports:
        {{- range .ports }}
        - name: {{ .name }}
          containerPort: {{ .port }}
          protocol: TCP
        {{- end }}
        - name: health
          containerPort: {{ $root.Values.healthPort }}
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /healthz
          port: health
        {{- toYaml $root.Values.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: health
        {{- toYaml $root.Values.probes.readiness | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      resources:
        {{- toYaml $v.resources | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if .tls }}
        - name: tls
          mountPath: /etc/postern/tls
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if .tls }}
    - name: tls
      secret:
        secretName: {{ include "postern.tlsSecretName" $root }}
        defaultMode: 0440
        items:
          - key: tls.crt
            path: tls.crt
          - key: tls.key
            path: tls.key
    {{- end }}
  {{- with $root.Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
