{{- define "ferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ferry.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "ferry.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "ferry.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ferry.labels" -}}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The labels of a component's pods: the chart's (commonLabels included), the
component's and its podLabels (the schema keeps these off the chart's own keys).
Call with (dict "context" $ "component" "operator" "podLabels" .Values.operator.podLabels).
*/}}
{{- define "ferry.podLabels" -}}
{{ include "ferry.labels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- with .podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Selector labels of one component: never change them, a Deployment's and a
DaemonSet's selector is immutable. Call with (dict "context" $ "component" "operator").
*/}}
{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferry.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ferry.operator.serviceAccountName" -}}
{{- default (printf "%s-operator" (include "ferry.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "ferry.nodeHelper.serviceAccountName" -}}
{{- default (printf "%s-node-helper" (include "ferry.fullname" .)) .Values.nodeHelper.serviceAccount.name -}}
{{- end -}}

{{/*
The user name a ServiceAccount's tokens authenticate as: admission policies
match the operator's and the helpers' requests by it.
*/}}
{{- define "ferry.operator.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "ferry.operator.serviceAccountName" .) -}}
{{- end -}}

{{- define "ferry.nodeHelper.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "ferry.nodeHelper.serviceAccountName" .) -}}
{{- end -}}

{{/*
"true" when the admission policies are rendered: admissionPolicies.enabled and
an API server that serves admissionregistration.k8s.io/v1
ValidatingAdmissionPolicy (Kubernetes 1.30+). Empty otherwise: the chart then
relies on RBAC alone.
*/}}
{{- define "ferry.admissionPolicies.enabled" -}}
{{- if and .Values.admissionPolicies.enabled (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") -}}
true
{{- end -}}
{{- end -}}

{{- define "ferry.ssh.operatorSecretName" -}}
{{- default (printf "%s-operator-ssh" (include "ferry.fullname" .)) .Values.ssh.operatorSecretName -}}
{{- end -}}

{{- define "ferry.ssh.nodeHelperSecretName" -}}
{{- default (printf "%s-node-helper-ssh" (include "ferry.fullname" .)) .Values.ssh.nodeHelperSecretName -}}
{{- end -}}

{{/*
Image references: `repository@digest` when a digest is set, otherwise
`repository:tag`, the tag defaulting to the chart's appVersion.
Call with (dict "image" .Values.operator.image "appVersion" .Chart.AppVersion).
*/}}
{{- define "ferry.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "ferry.operator.image" -}}
{{- include "ferry.image" (dict "image" .Values.operator.image "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{- define "ferry.nodeHelper.image" -}}
{{- include "ferry.image" (dict "image" .Values.nodeHelper.image "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{/*
The pod and container securityContext of every pod that runs the operator image
(the operator and the hook Jobs): what the `restricted` Pod Security Standard
asks for. The image's user is 65532; fsGroup lets that user read the mounted
SSH key (Secret files are root's otherwise, and 0400 would lock it out).
*/}}
{{- define "ferry.restricted.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ferry.restricted.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Hook annotations: (dict "hook" "pre-install,pre-upgrade" "weight" "-5"). */}}
{{- define "ferry.hookAnnotations" -}}
helm.sh/hook: {{ .hook }}
helm.sh/hook-weight: {{ .weight | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end -}}
