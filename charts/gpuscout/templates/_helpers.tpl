{{/*
Chart name, overridable with nameOverride. Truncated to 63 characters: Kubernetes names and
label values (DNS-1123 labels) may not be longer.
*/}}
{{- define "gpuscout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Release-aware full name: "<release>-<chart>", or the release name alone when it already contains
the chart name. Truncated to 63 characters (DNS-1123 label limit).
*/}}
{{- define "gpuscout.fullname" -}}
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

{{/*
Namespace of every namespaced object: namespaceOverride, else the release namespace.
*/}}
{{- define "gpuscout.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Chart label value: "<name>-<version>", "+" replaced because label values may not contain it.
*/}}
{{- define "gpuscout.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: name and instance only, because a DaemonSet's selector is immutable.
*/}}
{{- define "gpuscout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpuscout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels of every object.
*/}}
{{- define "gpuscout.labels" -}}
helm.sh/chart: {{ include "gpuscout.chart" . }}
{{ include "gpuscout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: gpu-agent
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Name of the agent's ServiceAccount.
*/}}
{{- define "gpuscout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gpuscout.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: registry/repository:tag, or @digest when a digest is given.
*/}}
{{- define "gpuscout.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s/%s:%s@%s" .Values.image.registry .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s/%s:%s" .Values.image.registry .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Label key prefixes the agent may add, change or remove on its own Node: its own prefix plus the
compat profiles that are switched on. Rendered as a CEL list literal for the admission policy.
*/}}
{{- define "gpuscout.allowedLabelPrefixes" -}}
{{- $p := list (printf "%s/" .Values.labels.prefix) }}
{{- if .Values.labels.compat.nvidiaGfd }}
{{- $p = concat $p (list "nvidia.com/gpu." "nvidia.com/cuda." "nvidia.com/mig.") }}
{{- end }}
{{- if .Values.labels.compat.amdLabeller }}
{{- $p = concat $p (list "amd.com/gpu.") }}
{{- end }}
{{- if .Values.labels.compat.intelNfd }}
{{- $p = concat $p (list "intel.feature.node.kubernetes.io/gpu" "gpu.intel.com/device-id." "gpu.intel.com/device.count" "gpu.intel.com/product" "gpu.intel.com/family") }}
{{- end }}
{{- $q := list }}
{{- range $p }}
{{- $q = append $q (printf "'%s'" .) }}
{{- end }}
{{- printf "[%s]" (join ", " $q) }}
{{- end }}

{{/*
The `release` label kube-prometheus-stack selects Prometheus Operator objects by, plus the
object's additional labels.
*/}}
{{- define "gpuscout.monitoringLabels" -}}
{{- $l := dict }}
{{- with .root.Values.monitoring.release }}
{{- $_ := set $l "release" . }}
{{- end }}
{{- $l = merge $l (.extra | default dict) }}
{{- with $l }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
True ("true") when Prometheus Operator objects may be rendered: the API is served, or the check
is switched off.
*/}}
{{- define "gpuscout.monitoringAPI" -}}
{{- if or (not .Values.monitoring.crdCheck) (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}true{{ end }}
{{- end }}

{{/*
Relabelings shared by ServiceMonitor and PodMonitor: the node name as `node` (the alert rules
and dashboards aggregate by it, so a pod restart does not split a node's series) and the fixed
job name the rules select.
*/}}
{{- define "gpuscout.relabelings" -}}
- action: replace
  sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: node
- action: replace
  targetLabel: job
  replacement: {{ .Values.monitoring.jobName | quote }}
{{- end }}

{{/*
Scheme, TLS and bearer-token settings of a monitor endpoint, from metrics.tls and metrics.auth.
Call with (dict "root" $ "kind" "ServiceMonitor"|"PodMonitor"). Renders nothing for plain,
open /metrics. The TLS and authorization fields are the Prometheus Operator's (SafeTLSConfig,
SafeAuthorization); bearerTokenFile exists on ServiceMonitor endpoints only.
*/}}
{{- define "gpuscout.scrapeSecurity" -}}
{{- $v := .root.Values }}
{{- if $v.metrics.tls.secretName }}
scheme: https
tlsConfig:
  {{- if $v.monitoring.scrapeTls.caSecret.name }}
  ca:
    secret:
      name: {{ $v.monitoring.scrapeTls.caSecret.name }}
      key: {{ $v.monitoring.scrapeTls.caSecret.key }}
  insecureSkipVerify: false
  {{- else }}
  insecureSkipVerify: {{ $v.monitoring.scrapeTls.insecureSkipVerify }}
  {{- end }}
  {{- with $v.monitoring.scrapeTls.serverName }}
  serverName: {{ . }}
  {{- end }}
{{- end }}
{{- if eq $v.metrics.auth "kubernetes" }}
{{- if $v.monitoring.scrapeAuth.tokenSecret.name }}
authorization:
  type: Bearer
  credentials:
    name: {{ $v.monitoring.scrapeAuth.tokenSecret.name }}
    key: {{ $v.monitoring.scrapeAuth.tokenSecret.key }}
{{- else if eq .kind "ServiceMonitor" }}
bearerTokenFile: {{ $v.monitoring.scrapeAuth.bearerTokenFile }}
{{- else }}
{{- fail "monitoring.podMonitor with metrics.auth=kubernetes needs monitoring.scrapeAuth.tokenSecret.name (PodMonitor has no bearerTokenFile)" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Directory the TLS Secret is mounted at.
*/}}
{{- define "gpuscout.tlsDir" -}}
/etc/gpuscout/tls
{{- end }}

{{/*
The label matchers the alert rules and the dashboards select the agent's series by, without
braces: job="<monitoring.selector.job or monitoring.jobName>", plus namespace="<...>" when
monitoring.selector.namespace is set. It replaces the placeholder `job="gpuscout"` of the rules
file and of the dashboards, so both always select the same series.
*/}}
{{- define "gpuscout.seriesSelector" -}}
{{- $s := .Values.monitoring.selector }}
{{- $m := printf "job=%q" (default .Values.monitoring.jobName $s.job) }}
{{- with $s.namespace }}
{{- $m = printf "%s, namespace=%q" $m . }}
{{- end }}
{{- $m }}
{{- end }}

{{/*
Host paths mounted read-only under /host in tier privileged: files/host-paths.yaml, written by
`gpuscout host-paths` from the agent's own table (agent/src/hostpaths.rs); the Talos-only ones
only with hostPaths.talosExtensionsFile. Rendered as YAML {mounts: [...]}.
*/}}
{{- define "gpuscout.hostMounts" -}}
{{- $all := (.Files.Get "files/host-paths.yaml" | fromYaml).mounts }}
{{- if not $all }}
{{- fail "files/host-paths.yaml is missing or empty: run `gpuscout host-paths > charts/gpuscout/files/host-paths.yaml`" }}
{{- end }}
{{- $out := list }}
{{- range $all }}
{{- if or (not .talosOnly) $.Values.hostPaths.talosExtensionsFile }}
{{- $out = append $out . }}
{{- end }}
{{- end }}
{{- toYaml (dict "mounts" $out) }}
{{- end }}

{{/*
The pod securityContext: non-root (uid 65532) unless labels.mode=nfd-file, which writes the
host's root-owned features.d directory; podSecurityContext is merged over it.
*/}}
{{- define "gpuscout.podSecurityContext" -}}
{{- $privileged := eq .Values.security.tier "privileged" }}
{{- /* uid 0 also for the kubelet's root-owned PodResources socket and other users' /proc
       entries (podResources, processMetrics; docs/POD-ATTRIBUTION.md). */}}
{{- $root := or (eq .Values.labels.mode "nfd-file") (and $privileged (or .Values.podResources.enabled .Values.processMetrics.enabled)) }}
{{- $sc := dict "runAsUser" (ternary 0 65532 $root) "runAsGroup" (ternary 0 65532 $root) "runAsNonRoot" (not $root) "seccompProfile" (dict "type" .Values.security.seccompProfile) }}
{{- toYaml (mustMergeOverwrite $sc (deepCopy .Values.podSecurityContext)) }}
{{- end }}

{{/*
The agent container's securityContext: read-only root filesystem, no privilege escalation, every
capability dropped (or privileged with security.privilegedContainer); containerSecurityContext is
merged over it.
*/}}
{{- define "gpuscout.containerSecurityContext" -}}
{{- $sc := dict "readOnlyRootFilesystem" true }}
{{- if .Values.security.privilegedContainer }}
{{- $_ := set $sc "privileged" true }}
{{- else }}
{{- $_ := set $sc "privileged" false }}
{{- $_ := set $sc "allowPrivilegeEscalation" false }}
{{- $_ := set $sc "capabilities" (dict "drop" (list "ALL")) }}
{{- if and (eq .Values.security.tier "privileged") .Values.processMetrics.enabled .Values.processMetrics.capabilities }}
{{- /* reading other processes' /proc/<pid>/fd and fdinfo (processMetrics) */}}
{{- $_ := set $sc.capabilities "add" .Values.processMetrics.capabilities }}
{{- end }}
{{- end }}
{{- toYaml (mustMergeOverwrite $sc (deepCopy .Values.containerSecurityContext)) }}
{{- end }}

{{/*
Metric relabelings of both monitors for the series that name a workload
(gpuscout_process_gpu_*, gpuscout_gpu_allocation_info; docs/POD-ATTRIBUTION.md). Their own
`namespace`, `pod` and `container` labels clash with the target labels the operator adds (the
agent's pod), so Prometheus renames them `exported_*`; these rules put the workload's values back,
an empty one (host processes: namespace="", container="") included, and drop the `exported_*`
copies. Every other series keeps the agent's target labels.
*/}}
{{- define "gpuscout.workloadRelabelings" -}}
{{- range $l := list "namespace" "pod" "container" }}
- action: replace
  sourceLabels: [__name__, exported_{{ $l }}]
  regex: "gpuscout_(process_gpu_.+|gpu_allocation_info);(.*)"
  targetLabel: {{ $l }}
  replacement: "$2"
{{- end }}
- action: labeldrop
  regex: "exported_(namespace|pod|container)"
{{- end }}
