{{/* Name of every object: the release name, or `<release>-atoll` when the release name lacks "atoll". */}}
{{- define "atoll.fullname" -}}
{{- if contains "atoll" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-atoll" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "atoll.selectorLabels" -}}
app.kubernetes.io/name: atoll
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "atoll.labels" -}}
{{ include "atoll.selectorLabels" . }}
app.kubernetes.io/part-of: atoll
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The kubernetes.io/tls Secret holding the gRPC API's certificate. */}}
{{- define "atoll.grpcTlsSecret" -}}
{{- .Values.grpc.tls.secretName | default (printf "%s-grpc-tls" (include "atoll.fullname" .)) -}}
{{- end -}}

{{- define "atoll.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/*
Rules for Databases and their children. Cluster-wide in a ClusterRole, or in
a Role in `watchNamespace` when atoll watches one namespace. Keep in step with
deploy/rbac.yaml (the deploy test compares them).
*/}}
{{- define "atoll.namespacedRules" -}}
# The controller's primary resource: watch every Database.
- apiGroups: [atoll.dev]
  resources: [databases]
  verbs: [get, list, watch]
# Rollouts assign a Database to a plugin version with one annotation
# (atoll.dev/plugin-digest), a merge patch of metadata; the spec is never
# written.
- apiGroups: [atoll.dev]
  resources: [databases]
  verbs: [patch]
# Status (conditions, partitions, plugin) is written by server-side apply to
# the status subresource; the spec is the user's and is never written.
- apiGroups: [atoll.dev]
  resources: [databases/status]
  verbs: [patch]
# Children carry a controller ownerReference with blockOwnerDeletion=true;
# where the OwnerReferencesPermissionEnforcement admission plugin is on
# (OpenShift, hardened clusters) that needs update on the owner's finalizers.
- apiGroups: [atoll.dev]
  resources: [databases/finalizers]
  verbs: [update]
# One Partition record per partition: applied (create on first apply),
# observed, and pruned when the partition count falls.
- apiGroups: [atoll.dev]
  resources: [partitions]
  verbs: [get, list, watch, create, patch, delete]
# Partition readiness and endpoints.
- apiGroups: [atoll.dev]
  resources: [partitions/status]
  verbs: [patch]
# Membership groups and primitives of the gRPC API (Atomix-compatible) are
# stored as these records; a member's record is deleted when its stream ends.
- apiGroups: [atoll.dev]
  resources: [members, primitives]
  verbs: [get, list, watch, create, patch, delete]
{{- end -}}

{{- define "atoll.storagePluginRules" -}}
# One cluster-scoped StoragePlugin per plugin atoll knows, kept up to date:
# the only cluster-scoped objects atoll writes.
- apiGroups: [atoll.dev]
  resources: [storageplugins]
  verbs: [get, list, watch, create, patch]
- apiGroups: [atoll.dev]
  resources: [storageplugins/status]
  verbs: [get, patch]
{{- end -}}

{{- define "atoll.childRules" -}}
# What plugins render by default (the output policy's default allowed kinds,
# exactly what the built-in plugins render), in the Databases' namespaces:
# applied with server-side apply (patch, plus create when the object is new),
# observed through watches, pruned when no longer rendered. atoll only ever
# touches objects it owns, but RBAC cannot say "only owned".
# ConfigMaps labelled atoll.dev/plugin are also read as plugin sources.
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [get, list, watch, create, patch, delete]
# Secrets a pod template refers to (e.g. a password from the Database's
# spec.pod.env) are read one by one, by name, for the config checksum that
# rolls the pods when they change: get only, never list or watch, so atoll
# cannot enumerate Secrets. Plugins may not render Secrets by default
# (`--allow-kind=v1/Secret`, Helm value policy.allowSecrets, adds both the
# kind and the rule); ServiceAccounts and PersistentVolumeClaims likewise
# (policy.allowServiceAccounts, policy.allowPersistentVolumeClaims). The
# host itself never reads claims: StatefulSets' claims are deleted by
# Kubernetes (persistentVolumeClaimRetentionPolicy), and only claims a
# plugin renders directly are atoll's to observe and prune.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- $optIn := list }}
{{- if .Values.policy.allowSecrets }}{{ $optIn = append $optIn "secrets" }}{{ end }}
{{- if .Values.policy.allowServiceAccounts }}{{ $optIn = append $optIn "serviceaccounts" }}{{ end }}
{{- if .Values.policy.allowPersistentVolumeClaims }}{{ $optIn = append $optIn "persistentvolumeclaims" }}{{ end }}
{{- with $optIn }}
# Opt-in kinds plugins may render (values policy.allow*, which also pass
# --allow-kind): applied, observed and pruned like the default kinds.
- apiGroups: [""]
  resources: [{{ join ", " . }}]
  verbs: [get, list, watch, create, patch, delete]
{{- end }}
- apiGroups: [apps]
  resources: [statefulsets, deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
# The partition-group Service's EndpointSlice (DNS SRV discovery of every
# partition), which the host itself keeps for each Database: applied,
# observed through a watch, pruned with the Database.
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch, create, patch, delete]
# Events on Databases (applied, pruned, refused...): created, then patched
# to count repeats. kube-rs records through events.k8s.io; the same events
# are also served by the core API, which other event libraries write to.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/*
Checks of gRPC callers: cluster-scoped, so always in the ClusterRole, also
when atoll watches one namespace. See deploy/rbac.yaml.
*/}}
{{- define "atoll.reviewRules" -}}
# The gRPC API acts only for callers Kubernetes authorizes. A caller's bearer
# token is checked by the API server (TokenReview, audience `atoll`), not
# parsed by atoll; each call is then asked of the API server's RBAC
# (SubjectAccessReview: may this user get/list/create/delete these atoll.dev
# resources in this namespace?). Both are questions, cluster-scoped and
# create-only: the API server answers and stores nothing. They let atoll
# learn who a token belongs to and what a user may do, never act as that
# user (the same two rules as the built-in ClusterRole system:auth-delegator).
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
- apiGroups: [authorization.k8s.io]
  resources: [subjectaccessreviews]
  verbs: [create]
{{- end -}}
