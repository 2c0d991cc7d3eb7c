{{/* Names ------------------------------------------------------------------------------- */}}

{{- define "xecm-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "xecm-bridge.fullname" -}}
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

{{- define "xecm-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "xecm-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "xecm-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "xecm-bridge.labels" -}}
helm.sh/chart: {{ include "xecm-bridge.chart" . }}
{{ include "xecm-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Name of a role's workload: the release name itself for `all`, suffixed in split mode. */}}
{{- define "xecm-bridge.roleName" -}}
{{- if eq .role "all" -}}
{{- include "xecm-bridge.fullname" .root -}}
{{- else -}}
{{- printf "%s-%s" (include "xecm-bridge.fullname" .root | trunc 56 | trimSuffix "-") .role -}}
{{- end -}}
{{- end -}}

{{- define "xecm-bridge.roleSelectorLabels" -}}
{{ include "xecm-bridge.selectorLabels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "xecm-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "xecm-bridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "xecm-bridge.secretName" -}}
{{- default (include "xecm-bridge.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "xecm-bridge.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Topology ---------------------------------------------------------------------------- */}}

{{- define "xecm-bridge.postgres" -}}
{{- if eq .Values.store.backend "postgres" -}}true{{- end -}}
{{- end -}}

{{/* The roles of the chosen mode, as a JSON list (templates read it with fromJsonArray). */}}
{{- define "xecm-bridge.roles" -}}
{{- if eq .Values.mode "split" -}}["api","worker"]{{- else -}}["all"]{{- end -}}
{{- end -}}

{{/* Most pods a role can run: its replica count, or the autoscaler's maximum. */}}
{{- define "xecm-bridge.maxPods" -}}
{{- $r := index .root.Values.roles .role -}}
{{- if $r.autoscaling.enabled -}}{{ $r.autoscaling.maxReplicas }}{{- else -}}{{ $r.replicaCount }}{{- end -}}
{{- end -}}

{{/* Refuses value combinations that render fine but cannot work. Included by every template
     that renders a workload, so `helm template` and `helm install` both stop early. */}}
{{- define "xecm-bridge.validate" -}}
{{- $v := .Values -}}
{{- $pg := include "xecm-bridge.postgres" . -}}
{{- if not $pg -}}
  {{- if eq $v.mode "split" -}}
    {{- fail "mode=split runs several pods, and embedded SQLite is for a single replica only: set store.backend=postgres and a PostgreSQL URL (secrets.postgresUrl, or XECM_BRIDGE__STORE__URL in secrets.existingSecret)" -}}
  {{- end -}}
  {{- if gt (int (include "xecm-bridge.maxPods" (dict "root" . "role" "all"))) 1 -}}
    {{- fail "embedded SQLite is for a single replica only: set roles.all.replicaCount (and autoscaling.maxReplicas) to 1, or use store.backend=postgres with a PostgreSQL URL (secrets.postgresUrl, or XECM_BRIDGE__STORE__URL in secrets.existingSecret)" -}}
  {{- end -}}
  {{- if $v.secrets.postgresUrl -}}
    {{- fail "secrets.postgresUrl is set but store.backend is sqlite: set store.backend=postgres" -}}
  {{- end -}}
{{- else -}}
  {{- if and (not $v.secrets.existingSecret) (not $v.secrets.postgresUrl) -}}
    {{- fail "store.backend=postgres needs a PostgreSQL URL: set secrets.postgresUrl, or XECM_BRIDGE__STORE__URL in secrets.existingSecret" -}}
  {{- end -}}
{{- end -}}
{{- range $role := include "xecm-bridge.roles" . | fromJsonArray -}}
  {{- $a := (index $v.roles $role).autoscaling -}}
  {{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) -}}
    {{- fail (printf "roles.%s.autoscaling.minReplicas must not exceed maxReplicas" $role) -}}
  {{- end -}}
  {{- if and $a.enabled $a.backlog.enabled (eq $role "api") -}}
    {{- fail "roles.api.autoscaling.backlog: API pods do no queued work; scale the worker role on the backlog" -}}
  {{- end -}}
{{- end -}}
{{- $_ := required "config.allportal.base_url is required (e.g. https://pim.example.com)" $v.config.allportal.base_url -}}
{{- $_ := required "config.opentext.base_url is required (e.g. https://otcs.example.com/otcs/cs)" $v.config.opentext.base_url -}}
{{- if and (ne (default "otcs" $v.config.opentext.auth) "oauth2") (not $v.config.opentext.username) -}}
  {{- fail "config.opentext.username is required for auth otcs and otds" -}}
{{- end -}}
{{- if not $v.secrets.existingSecret -}}
  {{- if not $v.secrets.allportalWebhookSecrets -}}
    {{- fail "secrets.allportalWebhookSecrets needs at least one secret (or set secrets.existingSecret)" -}}
  {{- end -}}
  {{- if not $v.secrets.opentextWebhookSecrets -}}
    {{- fail "secrets.opentextWebhookSecrets needs at least one secret (or set secrets.existingSecret)" -}}
  {{- end -}}
  {{- $_ := required "secrets.allportalApiKey is required (or set secrets.existingSecret)" $v.secrets.allportalApiKey -}}
  {{- if eq (default "otcs" $v.config.opentext.auth) "oauth2" -}}
    {{- $_ := required "secrets.opentextClientSecret is required for config.opentext.auth=oauth2" $v.secrets.opentextClientSecret -}}
  {{- else -}}
    {{- $_ := required "secrets.opentextPassword is required (or set secrets.existingSecret)" $v.secrets.opentextPassword -}}
  {{- end -}}
{{- end -}}
{{- if $v.networkPolicy.enabled -}}
  {{- if not $v.networkPolicy.egress.allportal.to -}}
    {{- fail "networkPolicy.egress.allportal.to is empty, which Kubernetes reads as 'any destination': list the peers (ipBlock) that reach 4ALLPORTAL" -}}
  {{- end -}}
  {{- if not $v.networkPolicy.egress.opentext.to -}}
    {{- fail "networkPolicy.egress.opentext.to is empty, which Kubernetes reads as 'any destination': list the peers (ipBlock) that reach OpenText" -}}
  {{- end -}}
  {{- if and $pg (not $v.networkPolicy.egress.database.to) -}}
    {{- fail "networkPolicy.egress.database.to is empty, which Kubernetes reads as 'any destination': list the peers that reach PostgreSQL" -}}
  {{- end -}}
{{- end -}}
{{- if and $v.ingress.enabled (not $v.ingress.hosts) -}}
  {{- fail "ingress.enabled needs at least one entry in ingress.hosts" -}}
{{- end -}}
{{- end -}}

{{/* Configuration file ------------------------------------------------------------------ */}}

{{/* The effective configuration: .Values.config plus what the chart decides (store.url for
     SQLite, store.migrate_on_start). Empty `flows` is left out so that the binary's defaults
     apply. */}}
{{- define "xecm-bridge.configToml" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- if not $cfg.flows -}}
{{- $_ := unset $cfg "flows" -}}
{{- end -}}
{{- $store := default (dict) $cfg.store -}}
{{- /* Migrations run once per release (the Job, or the SQLite init container), not in every pod. */ -}}
{{- $_ := set $store "migrate_on_start" false -}}
{{- if not (include "xecm-bridge.postgres" .) -}}
{{- $_ := set $store "url" "sqlite:///data/bridge.db" -}}
{{- end -}}
{{- $_ := set $cfg "store" $store -}}
{{- range $upstream, $tls := .Values.upstreamTls -}}
{{- $section := default (dict) (get $cfg $upstream) -}}
{{- $dir := printf "/etc/xecm-bridge-tls/%s" $upstream -}}
{{- if $tls.ca -}}
{{- $_ := set $section "ca_file" (printf "%s/ca/ca.pem" $dir) -}}
{{- end -}}
{{- if $tls.clientCertSecret -}}
{{- $_ := set $section "client_cert_file" (printf "%s/client/tls.crt" $dir) -}}
{{- $_ := set $section "client_key_file" (printf "%s/client/tls.key" $dir) -}}
{{- end -}}
{{- $_ := set $cfg $upstream $section -}}
{{- end -}}
# Rendered by the xecm-bridge chart from .Values.config. Secrets come from the environment.
{{ include "xecm-bridge.toml.table" (dict "path" "" "table" $cfg) | trim }}
{{- end -}}

{{/* A TOML writer. Helm's toToml turns every YAML number into a float (1048576 -> 1.048576e+06),
     which integer settings reject, so whole numbers are written as integers here. */}}
{{- define "xecm-bridge.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "xecm-bridge.toml.value" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}{{ toJson $v }}
{{- else if kindIs "bool" $v -}}{{ $v }}
{{- else if kindIs "float64" $v -}}
{{- if eq (floor $v) $v -}}{{ int64 $v }}{{- else -}}{{ $v }}{{- end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) -}}{{ $v }}
{{- else if kindIs "slice" $v -}}
[{{- range $i, $e := $v -}}{{- if $i -}}, {{ end -}}{{ include "xecm-bridge.toml.value" $e }}{{- end -}}]
{{- else if kindIs "map" $v -}}
{ {{- $first := true -}}
{{- range $k, $e := $v -}}
{{- if not (kindIs "invalid" $e) -}}
{{- if not $first -}},{{- end -}}
{{- $first = false }} {{ include "xecm-bridge.toml.key" $k }} = {{ include "xecm-bridge.toml.value" $e }}
{{- end -}}
{{- end }} }
{{- else -}}
{{- fail (printf "config: cannot write %v (%s) as TOML" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/* Scalars and arrays first, then one [table] per nested map; null leaves a key unset. A table
     that holds only tables gets no header of its own ([a.b] implies [a]). */}}
{{- define "xecm-bridge.toml.table" -}}
{{- $path := .path -}}
{{- range $k, $v := .table -}}
{{- if not (or (kindIs "map" $v) (kindIs "invalid" $v)) }}
{{ include "xecm-bridge.toml.key" $k }} = {{ include "xecm-bridge.toml.value" $v }}
{{- end -}}
{{- end -}}
{{- range $k, $v := .table -}}
{{- if kindIs "map" $v -}}
{{- $sub := include "xecm-bridge.toml.key" $k -}}
{{- if $path -}}{{- $sub = printf "%s.%s" $path $sub -}}{{- end -}}
{{- $onlyTables := gt (len $v) 0 -}}
{{- range $e := $v -}}{{- if not (kindIs "map" $e) -}}{{- $onlyTables = false -}}{{- end -}}{{- end -}}
{{- if not $onlyTables }}

[{{ $sub }}]
{{- end -}}
{{- include "xecm-bridge.toml.table" (dict "path" $sub "table" $v) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Secret data: XECM_BRIDGE__… keys read through envFrom. Values are written as quoted
     strings (JSON syntax, which the configuration loader parses), so that a token made of
     digits stays a string; the source secrets as a JSON array. */}}
{{- define "xecm-bridge.secretData" -}}
{{- $s := .Values.secrets -}}
{{- $d := dict
  "XECM_BRIDGE__SOURCES__ALLPORTAL__SECRETS" (toJson $s.allportalWebhookSecrets)
  "XECM_BRIDGE__SOURCES__OPENTEXT__SECRETS" (toJson $s.opentextWebhookSecrets)
  "XECM_BRIDGE__ALLPORTAL__API_KEY" (toJson $s.allportalApiKey) -}}
{{- with $s.adminToken }}{{ $_ := set $d "XECM_BRIDGE__ADMIN__TOKEN" (toJson .) }}{{ end -}}
{{- with $s.opentextPassword }}{{ $_ := set $d "XECM_BRIDGE__OPENTEXT__PASSWORD" (toJson .) }}{{ end -}}
{{- with $s.opentextClientSecret }}{{ $_ := set $d "XECM_BRIDGE__OPENTEXT__CLIENT_SECRET" (toJson .) }}{{ end -}}
{{- with $s.postgresUrl }}{{ $_ := set $d "XECM_BRIDGE__STORE__URL" (toJson .) }}{{ end -}}
{{- range $k, $v := $d }}
{{ $k }}: {{ b64enc $v }}
{{- end -}}
{{- end -}}

{{/* Pod pieces shared by the Deployments and the migration Job -------------------------- */}}

{{- define "xecm-bridge.env" -}}
- name: XECM_BRIDGE__SERVER__LISTEN
  value: {{ printf "0.0.0.0:%d" (int .Values.containerPort) | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "xecm-bridge.envFrom" -}}
- secretRef:
    name: {{ include "xecm-bridge.secretName" . }}
{{- end -}}

{{- define "xecm-bridge.dataVolume" -}}
{{- $p := .Values.store.sqlite.persistence -}}
- name: data
{{- if and (not (include "xecm-bridge.postgres" .)) $p.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-data" (include "xecm-bridge.fullname" .)) $p.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{/* Upstream TLS material (values upstreamTls): volumes and their read-only mounts, in every
     pod that loads the configuration (it checks that the files exist). */}}
{{- define "xecm-bridge.tlsVolumes" -}}
{{- range $upstream, $tls := .Values.upstreamTls }}
{{- with $tls.ca }}
- name: tls-{{ $upstream }}-ca
{{- if .secretName }}
  secret:
    secretName: {{ .secretName }}
{{- else }}
  configMap:
    name: {{ .configMapName }}
{{- end }}
    items:
      - key: {{ .key }}
        path: ca.pem
{{- end }}
{{- with $tls.clientCertSecret }}
- name: tls-{{ $upstream }}-client
  secret:
    secretName: {{ . }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}
{{- end -}}

{{- define "xecm-bridge.tlsMounts" -}}
{{- range $upstream, $tls := .Values.upstreamTls }}
{{- if $tls.ca }}
- name: tls-{{ $upstream }}-ca
  mountPath: /etc/xecm-bridge-tls/{{ $upstream }}/ca
  readOnly: true
{{- end }}
{{- if $tls.clientCertSecret }}
- name: tls-{{ $upstream }}-client
  mountPath: /etc/xecm-bridge-tls/{{ $upstream }}/client
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}
