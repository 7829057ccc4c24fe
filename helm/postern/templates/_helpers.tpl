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

{{/* A podSelector's body: this release's pods of the given components.
postern.componentSelector (dict "root" $ "components" LIST) */}}
{{- define "postern.componentSelector" -}}
matchLabels:
  app.kubernetes.io/name: {{ include "postern.name" .root }}
  app.kubernetes.io/instance: {{ .root.Release.Name }}
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values: {{ toJson .components }}
{{- end -}}

{{/*
Fails unless the cluster serves an API the chart is about to use: postern.requireApi (dict
"root" $ "api" "autoscaling/v2" "what" VALUE). helm install and upgrade ask the API server;
helm template and lint know every stable API, so rendering never fails here.
*/}}
{{- define "postern.requireApi" -}}
{{- if not (.root.Capabilities.APIVersions.Has .api) -}}
{{- fail (printf "%s needs the API %s, which this cluster does not serve (Kubernetes %s or newer)" .what .api (get (dict "autoscaling/v2" "1.23" "policy/v1" "1.21" "networking.k8s.io/v1" "1.7") .api)) -}}
{{- end -}}
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

{{/* Every node of the bundled cluster, by its own name (in the certificate): the services
reconnect to a survivor when one goes. */}}
{{- define "postern.natsUrl" -}}
{{- if .Values.nats.external.url -}}
{{- .Values.nats.external.url -}}
{{- else if .Values.nats.bundled.enabled -}}
{{- $full := include "postern.fullname" . -}}
{{- $scheme := ternary "tls" "nats" .Values.nats.tls.enabled -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.nats.bundled.replicas) -}}
{{- $urls = append $urls (printf "%s://%s-nats-%d.%s-nats-headless:4222" $scheme $full $i $full) -}}
{{- end -}}
{{- join "," $urls -}}
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
"hostnameEnv" VARIABLE "drainTimeout" SECONDS "env" LIST "idle" BOOL): tls mounts the
certificate; the pod logs in to NATS as the bus user named like its command (only that
user's password is mounted); env adds variables (a list of name/value dicts); idle: a pod
without a service (the mailctl pod: no health port, no probes); hostnameEnv is
the variable that carries .Values.hostname to a front end (SMTP_HOSTNAME, POP3_HOSTNAME,
...); drainTimeout (front ends, already checked) becomes DRAIN_TIMEOUT, and the grace period
is drainTimeout + 5 seconds, or the component's terminationGracePeriodSeconds when that is
longer: Kubernetes sends SIGKILL when the grace period ends, drained or not.
*/}}
{{- /*
Checksums for the pods' annotations (a change rolls the pods) of what shapes each Secret rather
than of the Secret as rendered: a generated password, key or certificate is made once and kept
(lookup), but a rendering at install time, when lookup finds nothing, would hash other random
values than those stored, and the first `helm upgrade`, even with the same values, would then
restart every pod, the bundled NATS servers too.
*/ -}}
{{- define "postern.checksumSecret" -}}
{{- list (include "postern.natsUrl" .) .Values.postgresql | toJson | sha256sum -}}
{{- end -}}

{{- define "postern.checksumNats" -}}
{{- list .Values.nats (include "postern.natsUsers" .) (include "postern.natsAuthorization" .) | toJson | sha256sum -}}
{{- end -}}

{{- define "postern.checksumTls" -}}
{{- list .Values.tls .Values.hostname | toJson | sha256sum -}}
{{- end -}}

{{- define "postern.pod" -}}
{{- $root := .root -}}
{{- $v := .values -}}
metadata:
  labels:
    {{- include "postern.selectorLabels" (dict "root" $root "component" .component) | nindent 4 }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    checksum/secret: {{ include "postern.checksumSecret" $root }}
    checksum/nats: {{ include "postern.checksumNats" $root }}
    {{- if and .tls (not $root.Values.tls.existingSecret) }}
    checksum/tls: {{ include "postern.checksumTls" $root }}
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
  terminationGracePeriodSeconds: {{ max (add .drainTimeout (int $root.Values.preStopDelay) 5) (int ($v.terminationGracePeriodSeconds | default 0)) }}
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
      args: [{{ ternary "idle" .command (.idle | default false) | quote }}]
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
        {{- include "postern.natsEnv" (dict "root" $root "user" .command) | nindent 8 }}
        {{- range .env }}
        - name: {{ .name }}
          value: {{ .value | quote }}
        {{- end }}
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
      {{- if not .idle }}
      ports:
        {{- range .ports }}
        - name: {{ .name }}
          containerPort: {{ .port }}
          protocol: TCP
        {{- end }}
        - name: health
          containerPort: {{ $root.Values.healthPort }}
          protocol: TCP
      startupProbe:
        httpGet:
          path: /healthz
          port: health
        {{- toYaml $root.Values.probes.startup | nindent 8 }}
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
      {{- end }}
      {{- if and (hasKey . "drainTimeout") (gt (int $root.Values.preStopDelay) 0) }}
      lifecycle:
        preStop:
          exec:
            command: ["sleep", {{ $root.Values.preStopDelay | quote }}]
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      resources:
        {{- toYaml $v.resources | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- include "postern.natsVolumeMounts" (dict "root" $root) | nindent 8 }}
        {{- if .tls }}
        - name: tls
          mountPath: /etc/postern/tls
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- include "postern.natsVolumes" (dict "root" $root "user" .command) | nindent 4 }}
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

{{/*
The bus (NATS). The users and their permissions come from files/nats-permissions.txt, the
one table deploy/nats-auth.sh reads too: "USER publish|subscribe SUBJECT...", "USER
responses", "USER like OTHER"; every user also subscribes to its own inbox _INBOX.<user>.>.
*/}}
{{- define "postern.natsUsers" -}}
{{- $users := list -}}
{{- range $line := splitList "\n" (.Files.Get "files/nats-permissions.txt") -}}
{{- $l := trim $line -}}
{{- if and $l (not (hasPrefix "#" $l)) -}}
{{- $u := first (regexSplit "\\s+" $l -1) -}}
{{- if not (has $u $users) -}}{{- $users = append $users $u -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- join " " $users -}}
{{- end -}}

{{/* A list of subjects in nats-server's syntax (toJson would write ">" as \u003e). */}}
{{- define "postern.natsList" -}}
{{- $q := list -}}
{{- range . -}}{{- $q = append $q (quote .) -}}{{- end -}}
[{{ join ", " $q }}]
{{- end -}}

{{/* The authorization block of nats-server: passwords as $POSTERN_NATS_PW_<USER>. */}}
{{- define "postern.natsAuthorization" -}}
{{- $pub := dict -}}
{{- $sub := dict -}}
{{- $resp := dict -}}
{{- $users := list -}}
{{- range $line := splitList "\n" (.Files.Get "files/nats-permissions.txt") -}}
{{- $l := trim $line -}}
{{- if and $l (not (hasPrefix "#" $l)) -}}
{{- $f := regexSplit "\\s+" $l -1 -}}
{{- $u := index $f 0 -}}
{{- $rule := index $f 1 | default "" -}}
{{- $subjects := rest (rest $f) -}}
{{- if not (has $u $users) -}}{{- $users = append $users $u -}}{{- end -}}
{{- if eq $rule "publish" -}}
{{- $_ := set $pub $u (concat (get $pub $u | default list) $subjects) -}}
{{- else if eq $rule "subscribe" -}}
{{- $_ := set $sub $u (concat (get $sub $u | default list) $subjects) -}}
{{- else if eq $rule "responses" -}}
{{- $_ := set $resp $u true -}}
{{- else if eq $rule "like" -}}
{{- $other := first $subjects -}}
{{- $_ := set $pub $u (get $pub $other | default list) -}}
{{- $_ := set $sub $u (get $sub $other | default list) -}}
{{- if hasKey $resp $other -}}{{- $_ := set $resp $u true -}}{{- end -}}
{{- else -}}
{{- fail (printf "files/nats-permissions.txt: unknown rule %q" $rule) -}}
{{- end -}}
{{- end -}}
{{- end -}}
# From files/nats-permissions.txt (the chart's copy of the one table): edit it, not this.
authorization {
  users = [
{{- range $u := $users }}
    {
      user: {{ $u | quote }}
      password: $POSTERN_NATS_PW_{{ upper $u }}
      permissions: {
        {{- if get $pub $u }}
        publish: { allow: {{ include "postern.natsList" (get $pub $u) }} }
        {{- else }}
        publish: { deny: [">"] }
        {{- end }}
        subscribe: { allow: {{ include "postern.natsList" (append (get $sub $u | default list) (printf "_INBOX.%s.>" $u)) }} }
        {{- if hasKey $resp $u }}
        allow_responses: true
        {{- end }}
      }
    }
{{- end }}
  ]
}
{{- end -}}

{{- define "postern.natsAuthSecretName" -}}
{{- .Values.nats.auth.existingSecret | default (printf "%s-nats-auth" (include "postern.fullname" .)) -}}
{{- end -}}

{{- define "postern.natsTlsSecretName" -}}
{{- .Values.nats.tls.existingSecret | default (printf "%s-nats-tls" (include "postern.fullname" .)) -}}
{{- end -}}

{{/* Where the services find the CA of the bus's certificate: "secret", "configmap" or "". */}}
{{- define "postern.natsCaSource" -}}
{{- if .Values.nats.external.url -}}
{{- if .Values.nats.external.caCert -}}configmap{{- end -}}
{{- else if and .Values.nats.bundled.enabled .Values.nats.tls.enabled -}}secret{{- end -}}
{{- end -}}

{{/* The credentials of bus user .user in a Postern container: env entries. */}}
{{- define "postern.natsEnv" -}}
- name: NATS_USER
  value: {{ .user | quote }}
- name: NATS_PASSWORD_FILE
  value: /etc/postern/nats/password
{{- if include "postern.natsCaSource" .root }}
- name: NATS_TLS_CA
  value: /etc/postern/nats-ca/ca.crt
{{- end }}
{{- end -}}

{{- define "postern.natsVolumeMounts" -}}
- name: nats-auth
  mountPath: /etc/postern/nats
  readOnly: true
{{- if include "postern.natsCaSource" .root }}
- name: nats-ca
  mountPath: /etc/postern/nats-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* Only the pod's own password, and the CA. */}}
{{- define "postern.natsVolumes" -}}
- name: nats-auth
  secret:
    secretName: {{ include "postern.natsAuthSecretName" .root }}
    defaultMode: 0440
    items:
      - key: {{ .user }}
        path: password
{{- $ca := include "postern.natsCaSource" .root }}
{{- if eq $ca "secret" }}
- name: nats-ca
  secret:
    secretName: {{ include "postern.natsTlsSecretName" .root }}
    items:
      - key: ca.crt
        path: ca.crt
{{- else if eq $ca "configmap" }}
- name: nats-ca
  configMap:
    name: {{ include "postern.fullname" .root }}-nats-config
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end -}}
