//! The `atoll.dev/v1alpha1` API, as Rust types. The CustomResourceDefinitions
//! (`atoll crds`, `deploy/crds/`) are generated from these.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every atoll resource.
pub const GROUP: &str = "atoll.dev";
/// `apiVersion` of every atoll resource.
pub const API_VERSION: &str = "atoll.dev/v1alpha1";
/// Kind of the Database resource.
pub const KIND_DATABASE: &str = "Database";
/// Most partitions a Database may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// Annotation approving, once, a change that deletes data (lowering
/// partitions, removing a StatefulSet that holds volumes): its value is the
/// generation approved; any other value approves nothing.
pub const ALLOW_DATA_LOSS: &str = "atoll.dev/allow-data-loss";

/// The field manager atoll applies with (children and status alike).
pub const FIELD_MANAGER: &str = "atoll";
/// Label marking objects atoll manages.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label naming the owning Database.
pub const LABEL_DATABASE: &str = "atoll.dev/database";
/// Label naming the plugin that rendered the object.
pub const LABEL_PLUGIN: &str = "atoll.dev/plugin";
/// Annotation holding a hash of the object as rendered. Comparing a live
/// object with the desired one only finds fields that differ; a field the
/// plugin stopped rendering (a label a new plugin version drops) changes this
/// hash, so the controller re-applies and server-side apply removes it.
pub const ANNOTATION_RENDERED: &str = "atoll.dev/rendered";
/// Label holding a Member's group, so a group's members can be watched.
pub const LABEL_GROUP: &str = "atoll.dev/group";
/// Label on a Member record naming the `atoll run` instance whose JoinGroup
/// stream holds it, and on that instance's Lease (`atoll-instance-<id>`):
/// records of an instance whose Lease is gone or expired are swept.
pub const LABEL_INSTANCE: &str = "atoll.dev/instance";
/// Label on a Member record naming the namespace of its instance's Lease, so
/// that atoll installations with Leases in different namespaces leave each
/// other's records alone.
pub const LABEL_INSTANCE_NAMESPACE: &str = "atoll.dev/instance-namespace";
/// Label on a PersistentVolumeClaim kept when its Database is deleted
/// (`deletionPolicy: Retain`): the uid of that Database. While the Database
/// exists it marks the claim as its own in place of an owner reference
/// (which would have the garbage collector delete it).
pub const LABEL_RETAINED_FROM: &str = "atoll.dev/retained-from";
/// Annotation where the host says what it changed in a rendered object and
/// why (for example a volume claim retention policy the Database's
/// `deletionPolicy` overrides).
pub const ANNOTATION_OVERRIDDEN: &str = "atoll.dev/overridden";
/// Pod-template annotation holding a SHA-256 of the data of every ConfigMap
/// and Secret the template mounts or reads, so editing them rolls the pods
/// (`render::checksum`).
pub const ANNOTATION_CONFIG_CHECKSUM: &str = "atoll.dev/config-checksum";

mod plugin;
mod reason;
pub use plugin::*;
pub use reason::Reason;

/// The Event recorder atoll reports with (controller `atoll`, instance the
/// pod's name when set).
pub fn event_recorder(client: kube::Client) -> kube::runtime::events::Recorder {
    kube::runtime::events::Recorder::new(
        client,
        kube::runtime::events::Reporter {
            controller: "atoll".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    )
}

/// A partitioned database run by a storage plugin.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "atoll.dev",
    version = "v1alpha1",
    kind = "Database",
    namespaced,
    shortname = "db",
    status = "DatabaseStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Partitions","type":"integer","jsonPath":".spec.partitions"}"#,
    printcolumn = r#"{"name":"Available","type":"integer","jsonPath":".status.availablePartitions"}"#,
    printcolumn = r#"{"name":"Ready-Partitions","type":"integer","jsonPath":".status.readyPartitions","priority":1}"#,
    printcolumn = r#"{"name":"Plugin","type":"string","jsonPath":".spec.storage.plugin"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.plugin.version"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.plugin.digest","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Number of partitions, 1..=1024. Partitions are numbered from 1. Lowering
    /// it deletes data and is refused unless the Database is annotated
    /// `atoll.dev/allow-data-loss: "<generation>"`, which approves that
    /// generation's change only.
    #[schemars(range(min = 1, max = 1024))]
    pub partitions: u32,
    /// Which storage plugin runs this Database, and how.
    pub storage: StorageSpec,
    /// What deleting the Database does to its volumes. `Retain` (the
    /// default) keeps every PersistentVolumeClaim, templated or rendered,
    /// labelled `atoll.dev/retained-from: <database uid>`; `Delete` removes
    /// them once their workloads are gone. Scaling a StatefulSet down never
    /// deletes claims either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Settings atoll applies to every pod template the plugin renders
    /// (StatefulSets and Deployments): environment, placement, labels,
    /// annotations, default resources and the pod security context. A value
    /// set here wins over the plugin's; see [`PodOverrides`] for how each
    /// field merges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodOverrides>,
}

/// `spec.pod`: what a platform team sets on every pod of a Database,
/// whichever plugin renders it. Precedence, field by field: `env` entries
/// replace the plugin's entry of the same name in every container and are
/// added where missing; `nodeSelector`, `labels` and `annotations` are merged
/// key by key with the Database's value winning; `tolerations` and
/// `topologySpreadConstraints` are appended; `affinity`,
/// `priorityClassName` and `securityContext` replace the plugin's;
/// `resources` are defaults, applied per resource (cpu, memory, ...) to each
/// container that sets neither a request nor a limit for it (a plugin's
/// request or limit keeps that resource the plugin's, so a default can never
/// make a limit fall below a request). Labels go on the pod template only;
/// keys atoll sets (`atoll.dev/*`, `app.kubernetes.io/managed-by`) and keys
/// the plugin's workload selector uses are refused.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Environment variables set in every container (and init container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<k8s_openapi::api::core::v1::EnvVar>>,
    /// Node labels every pod must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<std::collections::BTreeMap<String, String>>,
    /// Tolerations added to every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<k8s_openapi::api::core::v1::Toleration>>,
    /// Affinity of every pod, replacing the plugin's (for example its
    /// anti-affinity between replicas: restate it here if you still want it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<k8s_openapi::api::core::v1::Affinity>,
    /// Topology spread constraints added to every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints:
        Option<Vec<k8s_openapi::api::core::v1::TopologySpreadConstraint>>,
    /// PriorityClass of every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Labels added to every pod template (not to the workload, so selectors
    /// never change); a key the workload's selector uses is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// Annotations added to every pod template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    /// Default requests and limits of every container, for each resource
    /// the plugin sets neither a request nor a limit for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// Pod security context of every pod, replacing the plugin's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<k8s_openapi::api::core::v1::PodSecurityContext>,
}

/// What deleting a Database does to its PersistentVolumeClaims.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep every claim (and so the data) after the Database is deleted.
    #[default]
    Retain,
    /// Delete the claims with the Database.
    Delete,
}

/// The storage plugin and its configuration.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Plugin name, e.g. raft, cache, redis, primary-backup or log
    /// (`kubectl get storageplugins` lists what is loaded).
    #[schemars(length(min = 1))]
    pub plugin: String,
    /// Semantic version requirement on the plugin, e.g. `^0.1`: the
    /// Database renders with a loaded version satisfying it (the one it has
    /// if it does, else the highest) and rollouts never move it; with none
    /// loaded it is Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Exact component to render with, `sha256:<hex>` (`kubectl get sp
    /// <plugin> -o yaml` lists each loaded version's digest): rollouts never
    /// move the Database; while no loaded version has it, it is Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: Option<String>,
    /// Plugin-specific configuration, validated by the plugin against the
    /// JSON schema it publishes (`atoll plugins inspect`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub config: Option<serde_json::Value>,
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Observed state of a Database, written by atoll.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many partitions have every replica ready.
    #[serde(default)]
    pub ready_partitions: u32,
    /// How many partitions can serve requests now (a quorum, a primary or
    /// the node is up, as the plugin judges): at most `readyPartitions`
    /// fewer than all while replicas are missing.
    #[serde(default)]
    pub available_partitions: u32,
    /// Every partition, with where to reach it.
    #[serde(default)]
    pub partitions: Vec<PartitionStatus>,
    /// The plugin that rendered this Database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRef>,
    /// `Ready`, `Available`, `Progressing` and `Degraded`, each with a
    /// reason and a message saying what is wrong and how to fix it.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One partition of a Database.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    /// Partition id, 1..=partitions.
    pub id: u32,
    /// Service serving the partition.
    pub service: String,
    /// `host:port` clients connect to.
    pub endpoint: String,
    /// Every replica of the partition is ready.
    pub ready: bool,
    /// The partition can serve requests now (it may be missing replicas).
    #[serde(default)]
    pub available: bool,
}

/// Which plugin (and which build of it) rendered a Database.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginRef {
    pub name: String,
    pub version: String,
    /// `sha256:<hex>` of the component.
    pub digest: String,
}

/// A status condition, as in `metav1.Condition`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Available`, `Progressing` or `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason, e.g. `InvalidConfig`.
    pub reason: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One partition of a Database, created by atoll from the plugin's partition
/// bindings and owned by the Database.
///
/// `spec.placement` records where the partition's data lives, as the plugin
/// said in the binding's placement (WIT `placement`):
///
/// ```yaml
/// spec:
///   database: orders
///   partitionId: 2
///   serviceName: orders-p2
///   port: 5678
///   placement: {kind: StatefulSet, name: orders-1}   # workload(StatefulSet, orders-1)
/// ```
///
/// It is absent when the data lives nowhere durable (placement `nowhere`, a
/// cache) or the plugin does not say (`unknown`, a 0.1 plugin). While the
/// recorded workload holds data (a StatefulSet with volume claim templates,
/// or a PersistentVolumeClaim), atoll refuses a render that places the
/// partition elsewhere until approved; without a record it infers the home
/// from what the partition's Service selects.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "atoll.dev",
    version = "v1alpha1",
    kind = "Partition",
    namespaced,
    shortname = "part",
    status = "PartitionStatusFields",
    printcolumn = r#"{"name":"Database","type":"string","jsonPath":".spec.database"}"#,
    printcolumn = r#"{"name":"Partition","type":"integer","jsonPath":".spec.partitionId"}"#,
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.serviceName"}"#,
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Available","type":"boolean","jsonPath":".status.available"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PartitionSpec {
    /// Name of the owning Database (same namespace).
    pub database: String,
    /// Partition id, 1..=partitions.
    #[schemars(range(min = 1, max = 1024))]
    pub partition_id: u32,
    /// Service serving this partition.
    pub service_name: String,
    /// Port on that Service.
    pub port: u16,
    /// The workload whose pods hold the partition's data; absent when it
    /// lives nowhere durable or the plugin does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PartitionPlacement>,
}

/// A workload in the Partition's namespace holding its data
/// (`spec.placement`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct PartitionPlacement {
    /// The workload's kind, e.g. `StatefulSet`.
    pub kind: String,
    /// Its name, e.g. `orders-1`.
    pub name: String,
}

/// Observed state of a Partition.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatusFields {
    /// Whether every replica of the partition is ready.
    #[serde(default)]
    pub ready: bool,
    /// Whether the partition can serve requests now.
    #[serde(default)]
    pub available: bool,
    /// `host:port` endpoints of the partition.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

/// A member of a membership group, recorded by the gRPC MembershipService
/// while the member's JoinGroup stream is open.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "atoll.dev",
    version = "v1alpha1",
    kind = "Member",
    namespaced,
    printcolumn = r#"{"name":"Group","type":"string","jsonPath":".spec.group"}"#,
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".spec.host"}"#,
    printcolumn = r#"{"name":"Port","type":"integer","jsonPath":".spec.port"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MemberSpec {
    /// Name of the group (in the member's namespace).
    pub group: String,
    /// Host the member is reachable at.
    pub host: String,
    /// Port the member is reachable at.
    pub port: i32,
}

/// A primitive (counter, map, lock, ...) registered in a Database through the
/// gRPC PrimitiveService.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "atoll.dev",
    version = "v1alpha1",
    kind = "Primitive",
    namespaced,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Database","type":"string","jsonPath":".spec.database.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PrimitiveSpec {
    /// The Database holding the primitive.
    pub database: DatabaseRef,
    /// Primitive type.
    #[serde(rename = "type")]
    pub type_: PrimitiveType,
}

/// A Database by name and namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct DatabaseRef {
    pub name: String,
    pub namespace: String,
}

/// Primitive types of the Atomix API.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PrimitiveType {
    Counter,
    Election,
    IndexedMap,
    LeaderLatch,
    List,
    Lock,
    Log,
    Map,
    Set,
    Value,
}

/// Every CustomResourceDefinition atoll serves, in a stable order.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        Database::crd(),
        Partition::crd(),
        Member::crd(),
        Primitive::crd(),
        StoragePlugin::crd(),
    ]
}
