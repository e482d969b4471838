{{/* Chart name, truncated to the 63 characters a label value may have. */}}
{{- define "pingone-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the prefix of every resource name. The release name alone when it already contains
the chart name.
*/}}
{{- define "pingone-operator.fullname" -}}
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

{{/* chart-version label value. */}}
{{- define "pingone-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object: the chart's own, and commonLabels. The chart's win where both name a key,
so that commonLabels can never change what the Service and PodDisruptionBudget select.
*/}}
{{- define "pingone-operator.labels" -}}
{{- $labels := include "pingone-operator.selectorLabels" . | fromYaml }}
{{- $_ := set $labels "helm.sh/chart" (include "pingone-operator.chart" .) }}
{{- $_ := set $labels "app.kubernetes.io/version" ((default .Chart.AppVersion .Values.image.tag) | trunc 63 | trimSuffix "-") }}
{{- $_ := set $labels "app.kubernetes.io/component" "operator" }}
{{- $_ := set $labels "app.kubernetes.io/part-of" "pingone-operator" }}
{{- $_ := set $labels "app.kubernetes.io/managed-by" .Release.Service }}
{{- toYaml (merge $labels (deepCopy (default (dict) .Values.commonLabels))) }}
{{- end }}

{{/* Labels of the operator pods: the labels of every object, and podLabels. */}}
{{- define "pingone-operator.podLabels" -}}
{{- toYaml (merge (include "pingone-operator.labels" . | fromYaml) (deepCopy (default (dict) .Values.podLabels))) }}
{{- end }}

{{/* The operator image: repository@digest when image.digest is set, else repository:tag. */}}
{{- define "pingone-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Whether the cluster serves ValidatingAdmissionPolicy and its binding (admissionregistration.k8s.io/v1,
Kubernetes >= 1.30 unless a distribution turns it off). Asked of the API server's discovery, not
read off the Kubernetes version. `helm template` knows only what --api-versions lists.
*/}}
{{- define "pingone-operator.admissionPolicyAPI" -}}
{{- if and (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding") }}true{{ end }}
{{- end }}

{{/* Labels that select the operator pods; never change them in an upgrade. */}}
{{- define "pingone-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pingone-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "pingone-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pingone-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the leader election Lease. */}}
{{- define "pingone-operator.leaseName" -}}
{{- default (include "pingone-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* Where the extra CA bundle is mounted. */}}
{{- define "pingone-operator.extraCADir" -}}
/etc/pingone-operator/extra-ca
{{- end }}

{{/*
The operator's permissions: the same rules as deploy/base/clusterrole.yaml (a test compares
them). Used by the ClusterRole, or by a Role per watched namespace with rbac.namespaced.
*/}}
{{- define "pingone-operator.rules" -}}
# Connections: watched, and their status written (server-side apply is a PATCH).
- apiGroups: ["pingone.tokenops.dev"]
  resources: ["pingoneconnections"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["pingone.tokenops.dev"]
  resources: ["pingoneconnections/status"]
  verbs: ["patch"]
# Secrets: watched metadata-only, the credentials and token Secrets read one at a time, the
# token Secret created and updated with server-side apply. No delete: garbage collection removes
# token Secrets through their owner reference.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Events about connections.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
Namespaces whose workloads spec.rolloutRestartTargets may restart: rolloutRestart.namespaces, or
watchNamespaces when that is empty.
*/}}
{{- define "pingone-operator.rolloutRestartNamespaces" -}}
{{- default .Values.watchNamespaces .Values.rolloutRestart.namespaces | toJson }}
{{- end }}

{{/*
The matchConditions expression of the admission policies: the username of the operator's
ServiceAccount (the chart's, in the release namespace, unless guardRails names another), written
as in deploy/guard-rails.
*/}}
{{- define "pingone-operator.guardRailsUser" -}}
{{- $namespace := default .Release.Namespace .Values.guardRails.serviceAccountNamespace }}
{{- $serviceAccount := default (include "pingone-operator.serviceAccountName" .) .Values.guardRails.serviceAccountName }}
{{- printf "request.userInfo.username == 'system:serviceaccount:' + '%s' + ':' + '%s'" $namespace $serviceAccount }}
{{- end }}

{{/* Fails rendering on values that contradict each other. */}}
{{- define "pingone-operator.validate" -}}
{{- if and .Values.rbac.namespaced (empty .Values.watchNamespaces) }}
{{- fail "rbac.namespaced=true grants permissions only in watchNamespaces: set watchNamespaces (the operator cannot watch all namespaces with namespaced RBAC)" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled=true needs metrics.service.enabled=true" }}
{{- end }}
{{- if and .Values.rolloutRestart.enabled (empty (include "pingone-operator.rolloutRestartNamespaces" . | fromJsonArray)) }}
{{- fail "rolloutRestart.enabled=true grants patch on workloads only in listed namespaces: set rolloutRestart.namespaces (or watchNamespaces)" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true (replicas would reconcile the same connections at once)" }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the key of the inputs digest (in the release namespace). */}}
{{- define "pingone-operator.digestKeySecretName" -}}
{{- printf "%s-digest-key" (include "pingone-operator.fullname" .) }}
{{- end }}

{{/*
Default probes; the probe values are merged over them. /healthz answers as soon as the server
listens and fails only once a watch has been failing for --watch-failure-threshold (2m), so the
startup probe only holds the liveness probe off until the process serves at all. /readyz: a
standby is ready once it knows its role, the leader once its watches have listed everything.
*/}}
{{- define "pingone-operator.startupProbe" -}}
httpGet:
  path: /healthz
  port: http
periodSeconds: 2
failureThreshold: 30
{{- end }}

{{- define "pingone-operator.livenessProbe" -}}
httpGet:
  path: /healthz
  port: http
periodSeconds: 20
{{- end }}

{{- define "pingone-operator.readinessProbe" -}}
httpGet:
  path: /readyz
  port: http
periodSeconds: 10
{{- end }}
