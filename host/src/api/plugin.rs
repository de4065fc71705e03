//! The `StoragePlugin` resource: the versions of a plugin users declare
//! (spec, written by people or GitOps tools) and what atoll observes and
//! does with them (status, written only by atoll).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation atoll writes on a Database to say which version of its plugin
/// (`sha256:<hex>` digest) renders it. Written by rollouts only; a Database
/// without it renders with its plugin's default version. Users pin with
/// `spec.storage.digest` or `spec.storage.version` instead.
pub const ANNOTATION_PLUGIN_DIGEST: &str = "atoll.dev/plugin-digest";

/// Default per-step gate deadline of a rollout, in seconds.
pub const DEFAULT_GATE_DEADLINE_SECONDS: u32 = 600;

/// A storage plugin (cluster-scoped). `spec` declares the versions to serve
/// and how a new one reaches Databases; atoll writes only `status`: each
/// loaded version with how many Databases use it, and rollout progress.
/// An empty spec (the record atoll creates for every plugin it loads)
/// declares nothing: the built-in and labelled ConfigMaps decide.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "atoll.dev",
    version = "v1alpha1",
    kind = "StoragePlugin",
    shortname = "sp",
    status = "StoragePluginStatus",
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Serving","type":"string","jsonPath":".status.serving"}"#,
    printcolumn = r#"{"name":"Rollout","type":"string","jsonPath":".status.rollout.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.rollout.progress"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".status.source"}"#,
    printcolumn = r#"{"name":"Databases","type":"integer","jsonPath":".status.databases"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.digest","priority":1}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.rollout.message","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StoragePluginSpec {
    /// The versions to serve, each from a source. Every listed version is
    /// loaded and can render Databases; which one each Database uses is
    /// decided by `target`, the rollout and pinning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<PluginVersionSpec>,
    /// Name of the version every unpinned Database should end up on; when
    /// it changes atoll rolls it out following `rollout`. Absent: the first
    /// version listed. Rolling back is setting it to the previous version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// How a new target reaches Databases. Absent: all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPolicy>,
}

/// One version of a plugin and where its component comes from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginVersionSpec {
    /// A name for this version, unique in the list (e.g. `v0.1.1`); what
    /// `target` refers to.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Where the component comes from: exactly one of `builtin`,
    /// `configMap` or `oci`.
    pub source: VersionSource,
}

/// Where a version's component comes from: set exactly one field.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionSource {
    /// The plugin of this name embedded in the atoll binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinSource>,
    /// A ConfigMap holding `plugin.wasm` (or gzip-compressed
    /// `plugin.wasm.gz`) in `binaryData`; it needs no label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// An OCI artifact (a wasm component) in a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciSource>,
}

/// `source.builtin: {}`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct BuiltinSource {}

/// `source.configMap`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    /// Namespace of the ConfigMap. Absent: the namespace atoll watches for
    /// plugin ConfigMaps (`--plugin-configmaps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the ConfigMap.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// `source.oci`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OciSource {
    /// `registry/repository:tag` or `registry/repository@sha256:<hex>`; a
    /// digest reference is verified.
    #[schemars(length(min = 1))]
    pub reference: String,
    /// A `kubernetes.io/dockerconfigjson` Secret (in atoll's namespace)
    /// with credentials for the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret: Option<String>,
    /// Largest component accepted, in bytes (default 64 MiB, as for a
    /// ConfigMap's decoded component).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// How a new target version reaches Databases: an optional canary step,
/// then waves; after each step a health gate.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPolicy {
    /// The first step: a few Databases, by count or label selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStep>,
    /// The following steps. `percent` is cumulative (a share of every
    /// Database that can move, reached at the end of the wave); `count`
    /// moves that many more. Whatever the waves leave is moved in a final
    /// step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<Wave>,
    /// How long each step's Databases have to be `Ready` (for the
    /// generation the new version rendered) and not `Degraded` (default
    /// 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub gate_deadline_seconds: Option<u32>,
    /// Whether the Databases of a failed step go back to the previous
    /// version when the rollout halts.
    #[serde(default)]
    pub rollback_on_failure: bool,
}

/// The canary step: `count` Databases (by name order), or those matching
/// `selector` (set one).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A wave: `count` more Databases, or up to `percent` of all that can move
/// (set one).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub percent: Option<u32>,
}

/// What atoll observes of a plugin (written by atoll only).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoragePluginStatus {
    /// One line describing the plugin, from its metadata.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Source of the default version: `built-in`,
    /// `configmap/<namespace>/<name>` or `oci/<reference>`.
    #[serde(default)]
    pub source: String,
    /// Version of the default version (what Databases not moved by a
    /// rollout nor pinned render with).
    #[serde(default)]
    pub version: String,
    /// `sha256:<hex>` of the default version's component.
    #[serde(default)]
    pub digest: String,
    /// `Loaded` or `Failed` (the latest load failed).
    #[serde(default)]
    pub state: String,
    /// Why the last load failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// How many Databases use this plugin (any version).
    #[serde(default)]
    pub databases: u32,
    /// Every loaded (or failed) version, with how many Databases it renders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionStatus>,
    /// `version=databases` of each loaded version, for `kubectl get`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serving: String,
    /// What the latest hot reload of this plugin would change, measured by
    /// rendering every Database that uses it with the old and the new version
    /// before the swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_render: Option<ShadowRender>,
    /// The latest rollout (written with field manager `atoll-rollout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// One version of a plugin as atoll holds it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    /// The name in `spec.versions`, if the version is declared there.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The plugin's own version (from its metadata).
    #[serde(default)]
    pub version: String,
    /// `sha256:<hex>` of the component.
    #[serde(default)]
    pub digest: String,
    /// Where it came from.
    #[serde(default)]
    pub source: String,
    /// `Loaded` or `Failed`.
    #[serde(default)]
    pub state: String,
    /// Why it failed to load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Databases whose `status.plugin.digest` is this version's.
    #[serde(default)]
    pub databases: u32,
    /// Databases without a rollout assignment or pin render with it.
    #[serde(default)]
    pub default: bool,
}

/// A version by name, plugin version and digest.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionRef {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub digest: String,
}

/// Progress of a rollout. It lives in the API so that a restarted atoll, or
/// a new leader, resumes it where it was.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The version Databases move from (the default before the rollout).
    pub from: VersionRef,
    /// The version they move to.
    pub to: VersionRef,
    /// `Progressing`, `Complete` or `Halted`.
    pub phase: String,
    /// The current step, from 1 (the canary, if any).
    pub step: u32,
    /// How many steps the rollout has.
    pub steps: u32,
    /// `step/steps moved/total`, for `kubectl get`.
    #[serde(default)]
    pub progress: String,
    /// When the current step moved its Databases (RFC 3339): its gate
    /// deadline counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started: Option<String>,
    /// The Databases of the current step (`namespace/name`), each waiting
    /// for its gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_databases: Vec<String>,
    /// Databases moved to `to` so far.
    #[serde(default)]
    pub moved: u32,
    /// Databases the rollout is for (excluding pinned and refused ones).
    #[serde(default)]
    pub total: u32,
    /// Databases left alone because they pin a version or digest.
    #[serde(default)]
    pub skipped_pinned: u32,
    /// Databases left alone because the shadow render of `to` failed or
    /// would be refused (data loss, policy).
    #[serde(default)]
    pub skipped_refused: u32,
    /// Databases whose gate failed (`namespace/name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
    /// Failed Databases moved back to `from`.
    #[serde(default)]
    pub rolled_back: u32,
    /// What is happening, or why it halted.
    #[serde(default)]
    pub message: String,
}

/// The result of a shadow render: old and new version side by side.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowRender {
    /// Version and digest that served before the reload (`<version> <digest>`).
    #[serde(default)]
    pub from: String,
    /// Databases rendered with both versions.
    #[serde(default)]
    pub databases: u32,
    /// Databases whose rendered objects or partitions differ.
    #[serde(default)]
    pub changed: u32,
    /// Databases the new version fails to render (the old one rendered).
    #[serde(default)]
    pub failed: u32,
    /// Databases from which the new version would prune objects the old one
    /// rendered. Each of them is refused (`PruneRefused`) until approved.
    #[serde(default)]
    pub prunes: u32,
}
