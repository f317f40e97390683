{{/*
Names, labels, and the decisions more than one template depends on (the effective config, which
Secret holds the credentials, whether a claim is made). Templates ask these helpers instead of
repeating the rules, so the Deployment and the objects it refers to cannot disagree.
*/}}

{{- define "goalkeeper.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "goalkeeper.fullname" -}}
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

{{- define "goalkeeper.selectorLabels" -}}
app.kubernetes.io/name: {{ include "goalkeeper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "goalkeeper.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "goalkeeper.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
goalkeeper/environment: {{ .Values.config.environment | quote }}
{{- end }}

{{- define "goalkeeper.serviceAccountName" -}}
{{- default (include "goalkeeper.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "goalkeeper.privileged" -}}
{{- if not (has .Values.securityProfile (list "privileged" "restricted")) }}
{{- fail (printf "securityProfile must be privileged or restricted, not %q" (toString .Values.securityProfile)) }}
{{- end }}
{{- if eq .Values.securityProfile "privileged" }}true{{ end }}
{{- end }}

{{/*
The config.yaml the daemon reads: the values' `config`, with what the profile dictates. A
restricted pod cannot open raw sockets, so it must never be asked for SYN or UDP scans. A
privileged pod runs nmap as a non-root user whose raw sockets come from a file capability: nmap
only tries them with --privileged (it checks for root, not for capabilities), and the scanner
refuses SYN/UDP scans as non-root without it. Without allowed_networks `goalkeeper run` exits
2: refuse at install rather than crash-loop.
*/}}
{{- define "goalkeeper.config" -}}
{{- if not .Values.config.scan.allowed_networks }}
{{- fail "config.scan.allowed_networks is empty: list the cloud's public ranges (CIDRs). The daemon scans nothing outside them and refuses to start without them." }}
{{- end }}
{{- $config := deepCopy .Values.config }}
{{- if not (include "goalkeeper.privileged" .) }}
{{- $_ := set $config.scan "privileged" false }}
{{- else if and $config.scan.privileged (not (regexMatch `(^|\s)--privileged(\s|$)` (toString $config.scan.nmap_arguments))) }}
{{- $_ := set $config.scan "nmap_arguments" (printf "%s --privileged" $config.scan.nmap_arguments | trim) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* The Secret holding the GOALKEEPER_ secrets: the operator's, or the one this chart makes. */}}
{{- define "goalkeeper.secretName" -}}
{{- default (printf "%s-secrets" (include "goalkeeper.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{/*
Environment variable, values key, Secret key of every secret the daemon reads, and whether the
config needs it: a needed key is not `optional`, so a Secret without it stops the pod at start
(CreateContainerConfigError naming the key) instead of a daemon that quietly does less. When
the chart makes the Secret itself, secret.yaml refuses to leave out a needed key with a `why`.
*/}}
{{- define "goalkeeper.secretKeys" -}}
{{- $c := .Values.config }}
{{- $fleio := $c.inventory.fleio }}
{{- $fleioOff := and (not (kindIs "invalid" $fleio.enabled)) (not $fleio.enabled) }}
{{- $fleioOn := and (eq (toString $c.inventory.source) "openstack") (not $fleioOff) (or $fleio.url $fleio.enabled) }}
{{- $statePath := and (not .Values.persistence.enabled) (hasPrefix "sqlite" (toString $c.state.url)) }}
- {env: GOALKEEPER_INVENTORY__FLEIO__TOKEN, value: fleioToken, key: fleio-token, needed: {{ not (empty $fleioOn) }}, why: "config.inventory.fleio is on"}
- {env: GOALKEEPER_NOTIFY__EMAIL__PASSWORD, value: smtpPassword, key: smtp-password, needed: {{ not (empty $c.notify.email.username) }}, why: "config.notify.email.username is set"}
- {env: GOALKEEPER_NOTIFY__TELEGRAM__TOKEN, value: telegramToken, key: telegram-token, needed: {{ not (empty $c.notify.telegram.enabled) }}, why: "config.notify.telegram.enabled is true"}
- {env: GOALKEEPER_HTTP__ADMIN_TOKEN, value: adminToken, key: admin-token, needed: false, why: ""}
{{- /* why "": goalkeeper.claimName already refuses this case with its own reason. */}}
- {env: GOALKEEPER_STATE__URL, value: stateUrl, key: state-url, needed: {{ not (empty $statePath) }}, why: ""}
{{- end }}

{{- define "goalkeeper.cloudsSecretName" -}}
{{- if .Values.openstack.existingSecret }}
{{- .Values.openstack.existingSecret }}
{{- else if .Values.openstack.cloudsYaml }}
{{- printf "%s-openstack" (include "goalkeeper.fullname" .) }}
{{- end }}
{{- end }}

{{/*
A claim is made for SQLite only. Without one the state would sit on an emptyDir and vanish with
the pod, losing the outbox: refuse that unless the state lives elsewhere (PostgreSQL).
*/}}
{{- define "goalkeeper.claimName" -}}
{{- if .Values.persistence.enabled }}
{{- default (printf "%s-state" (include "goalkeeper.fullname" .)) .Values.persistence.existingClaim }}
{{- else if and (hasPrefix "sqlite" (toString .Values.config.state.url)) (not .Values.secrets.values.stateUrl) (not .Values.secrets.existingSecret) }}
{{- fail "persistence.enabled is false but the state is SQLite: its history and outbox would be lost with the pod. Enable persistence, or set a PostgreSQL URL (secrets.values.stateUrl, or state-url in secrets.existingSecret)." }}
{{- end }}
{{- end }}
