//! Rust mirrors of the WIT records, used by plugins and the native harness.

use std::collections::BTreeMap;

/// The Database being handled (WIT `database`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid` (empty offline).
    pub uid: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.partitions`.
    pub partitions: u32,
    /// `spec.storage.config` as JSON text.
    pub config: String,
    /// Cluster DNS domain, e.g. `cluster.local`.
    pub cluster_domain: String,
}

impl Database {
    /// A Database for tests and tools: namespace `default`, domain `cluster.local`,
    /// empty config.
    pub fn new(name: &str, partitions: u32) -> Self {
        Database {
            name: name.to_string(),
            namespace: "default".to_string(),
            uid: String::new(),
            generation: 1,
            labels: BTreeMap::new(),
            partitions,
            config: "{}".to_string(),
            cluster_domain: "cluster.local".to_string(),
        }
    }

    /// Set the namespace.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_string();
        self
    }

    /// Set `spec.storage.config`.
    pub fn with_config(mut self, config: serde_json::Value) -> Self {
        self.config = config.to_string();
        self
    }

    /// Partition ids, `1..=partitions`.
    pub fn partition_ids(&self) -> std::ops::RangeInclusive<u32> {
        1..=self.partitions
    }

    /// `<name>-<suffix>`: the only shape of name the output policy accepts
    /// besides the Database's own name.
    pub fn child(&self, suffix: impl std::fmt::Display) -> String {
        format!("{}-{}", self.name, suffix)
    }

    /// Stable DNS name of a pod behind a headless Service.
    pub fn pod_host(&self, pod: &str, headless_service: &str) -> String {
        format!(
            "{pod}.{headless_service}.{}.svc.{}",
            self.namespace, self.cluster_domain
        )
    }
}

/// What a plugin says about itself (WIT `metadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub description: String,
    /// JSON Schema of `spec.storage.config`, as JSON text.
    pub config_schema: String,
}

/// One thing wrong with a Database (WIT `violation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path from the Database root, e.g. `spec.storage.config.replicas`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl Violation {
    /// A violation of `spec.storage.config.<path>`.
    pub fn config(path: &str, message: impl Into<String>) -> Self {
        let field = if path.is_empty() {
            "spec.storage.config".to_string()
        } else {
            format!("spec.storage.config.{path}")
        };
        Violation {
            field,
            message: message.into(),
        }
    }

    /// A violation of `spec.<path>`, e.g. `partitions`.
    pub fn spec(path: &str, message: impl Into<String>) -> Self {
        Violation {
            field: format!("spec.{path}"),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Where one partition is served, and where its data lives (WIT
/// `partition-binding`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBinding {
    pub partition: u32,
    pub service: String,
    pub port: u16,
    pub placement: Placement,
}

/// Where a partition's data lives (WIT `placement`).
///
/// atoll records it on the partition's `Partition` object and refuses a
/// render that changes it while the old home holds data (a StatefulSet with
/// volume claim templates, or a PersistentVolumeClaim), until the user
/// approves that change once. Say where the data really is: a plugin that
/// names the wrong workload loses the protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Nowhere durable: the partition lives in memory only (a cache), so
    /// serving it from elsewhere loses nothing that was kept.
    Nowhere,
    /// The pods of this workload (in the Database's namespace) hold the
    /// partition's data, e.g. a StatefulSet whose volumes keep it.
    Workload {
        /// The workload's `kind`, e.g. `StatefulSet`.
        kind: String,
        /// Its `metadata.name`.
        name: String,
    },
}

impl Placement {
    /// The partition lives in StatefulSet `name`.
    pub fn statefulset(name: impl Into<String>) -> Self {
        Placement::Workload {
            kind: "StatefulSet".to_string(),
            name: name.into(),
        }
    }
}

/// The desired state (WIT `rendered`): objects as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub objects: Vec<String>,
    pub partitions: Vec<PartitionBinding>,
}

/// Why a render failed (WIT `render-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    Invalid(Vec<Violation>),
    Failed(String),
}

/// Readiness and availability judged from observed objects (WIT
/// `status-report`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusReport {
    /// Partitions whose every replica is ready.
    pub ready_partitions: Vec<u32>,
    /// Partitions that can serve now, perhaps with replicas missing (a
    /// quorum, a primary). The host counts every ready partition as
    /// available too, so listing only the extra ones is enough.
    pub available_partitions: Vec<u32>,
    /// A short human summary, e.g. `cluster 2: 2/3 replicas ready`.
    pub message: String,
}

/// Log severity (WIT `level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}
