{{/* Names and labels. */}}
{{- define "berth.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 53 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 53 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "berth.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "berth.labels" -}}
{{ include "berth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "berth.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Whether to render the PodMonitor: forced on/off, or "auto" when the CRD is served. */}}
{{- define "berth.podMonitor" -}}
{{- $want := .Values.metrics.podMonitor.enabled -}}
{{- if and .Values.metrics.proxy.enabled (or (eq (toString $want) "true") (and (eq (toString $want) "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PodMonitor"))) -}}
true
{{- end -}}
{{- end -}}

{{/* One TOML value: string, number, boolean, array or inline table. */}}
{{- define "berth.tomlValue" -}}
{{- if kindIs "string" . -}}
{{- toJson . -}}
{{- else if kindIs "slice" . -}}
[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ include "berth.tomlValue" $v }}{{ end }}]
{{- else if kindIs "map" . -}}
{{- $m := . -}}
{ {{- range $i, $k := keys $m | sortAlpha }}{{ if $i }},{{ end }} {{ toJson $k }} = {{ include "berth.tomlValue" (index $m $k) }}{{ end }} }
{{- else if kindIs "float64" . -}}
{{- if eq (floor .) . }}{{ int64 . }}{{ else }}{{ . }}{{ end -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/* berth.toml from .Values.config: top-level keys, then tables, then their sub-tables. */}}
{{- define "berth.toml" -}}
{{- $c := .Values.config -}}
{{- range $k := keys $c | sortAlpha }}{{ $v := index $c $k }}{{ if not (kindIs "map" $v) }}
{{ $k }} = {{ include "berth.tomlValue" $v }}
{{- end }}{{ end }}
{{- range $k := keys $c | sortAlpha }}{{ $t := index $c $k }}{{ if kindIs "map" $t }}

[{{ $k }}]
{{- range $k2 := keys $t | sortAlpha }}{{ $v := index $t $k2 }}{{ if not (kindIs "map" $v) }}
{{ $k2 }} = {{ include "berth.tomlValue" $v }}
{{- end }}{{ end }}
{{- range $k2 := keys $t | sortAlpha }}{{ $sub := index $t $k2 }}{{ if kindIs "map" $sub }}

[{{ $k }}.{{ $k2 }}]
{{- range $k3 := keys $sub | sortAlpha }}
{{ toJson $k3 }} = {{ include "berth.tomlValue" (index $sub $k3) }}
{{- end }}
{{- end }}{{ end }}
{{- end }}{{ end }}
{{ end -}}

{{/* The installer container's environment, shared by both DaemonSets. */}}
{{- define "berth.installerEnv" -}}
- name: HOST_ROOT
  value: /host
- name: BERTH_PAYLOAD
  value: /opt/berth/bin
- name: BERTH_CHART_DIR
  value: /berth-chart
- name: BERTH_SOCKET
  value: {{ .Values.config.socket | quote }}
- name: BERTH_SYSTEMCTL
  value: nsenter
- name: BERTH_READY_TIMEOUT
  value: {{ .Values.readyTimeoutSeconds | quote }}
- name: KUBELET_CONFIG
  value: {{ .Values.kubelet.configFile | quote }}
- name: KUBELET_FLAGS_FILE
  value: {{ .Values.kubelet.flagsFile | quote }}
- name: KUBELET_SERVICE
  value: {{ .Values.kubelet.service | quote }}
{{- end -}}

{{/* Runs one installer command, then idles until the pod is deleted. */}}
{{- define "berth.installerCommand" -}}
- /bin/bash
- -c
- |
  /bin/bash /berth-chart/berth-install.sh {{ . }} || exit 1
  trap 'exit 0' TERM INT
  sleep infinity & wait
{{- end -}}
