//! log: partitions kept as a replicated, persistent log by one group of Atomix
//! log nodes.
//!
//! One group: ConfigMap, StatefulSet and (with more than one replica)
//! PodDisruptionBudget `<db>`, headless Service `<db>-hs`, and a
//! PersistentVolumeClaim `data-<db>-<i>` per replica from the StatefulSet's
//! claim template; per partition `p`: Service `<db>-p<p>`. `protocol.json`
//! carries the log settings with sizes in bytes:
//! `{"storage": {"segmentSize": …, "maxEntrySize": …, "flushOnCommit": …}}`.
//! Every partition is ready when every replica is.

use atoll_guest::atomix::{self, NodeGroup};
use atoll_guest::k8s::{self, PullPolicy, Resources};
use atoll_guest::{
    Database, Observed, Output, Placement, Plugin, StatusReport, Violation, quantity,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// `spec.storage.config` of a log Database.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    /// Replicas of the log: odd, 1..=9, so a majority survives failures.
    pub replicas: u32,
    /// Storage node image.
    pub image: String,
    /// When to pull the image.
    pub image_pull_policy: PullPolicy,
    /// Container resource requests and limits of each replica.
    pub resources: Resources,
    /// Where and how each replica keeps its log.
    pub storage: Storage,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            replicas: 3,
            image: "atomix/log-storage-node:v0.5.0".into(),
            image_pull_policy: PullPolicy::IfNotPresent,
            resources: Resources::default(),
            storage: Storage::default(),
        }
    }
}

/// `storage`: the PersistentVolumeClaim of each replica and the log's layout.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Storage {
    /// Size of each replica's volume, a Kubernetes quantity such as `10Gi`.
    pub size: String,
    /// StorageClass of the volumes; the cluster default when absent.
    pub class_name: Option<String>,
    /// Size of one log segment file, a quantity such as `64Mi`; at most `size`.
    pub segment_size: String,
    /// Largest entry the log accepts, a quantity such as `1Mi`; at most
    /// `segmentSize`.
    pub max_entry_size: String,
    /// Flush to disk on every commit: slower, but a committed entry survives
    /// every replica losing power at once.
    pub flush_on_commit: bool,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            size: "1Gi".into(),
            class_name: None,
            segment_size: "64Mi".into(),
            max_entry_size: "1Mi".into(),
            flush_on_commit: false,
        }
    }
}

/// Bytes of a byte-size quantity: a whole number, at least 1.
fn bytes(q: &str) -> Result<u64, String> {
    let value = quantity::value(q)?;
    if value < 1.0 || value.fract() != 0.0 {
        return Err(format!(
            "must be a whole number of bytes, at least 1 (got {q}); use a size such as 1Mi or 64Mi"
        ));
    }
    Ok(value as u64)
}

pub struct Log;

impl Log {
    fn group(db: &Database, config: &Config) -> Result<NodeGroup, String> {
        let storage = &config.storage;
        Ok(NodeGroup {
            name: db.name.clone(),
            labels: atomix::labels(db, Self::NAME, "node"),
            replicas: config.replicas,
            image: config.image.clone(),
            pull_policy: config.image_pull_policy,
            resources: config.resources.clone(),
            partitions: db.partition_ids().collect(),
            protocol: serde_json::json!({
                "storage": {
                    "segmentSize": bytes(&storage.segment_size)?,
                    "maxEntrySize": bytes(&storage.max_entry_size)?,
                    "flushOnCommit": storage.flush_on_commit,
                }
            }),
            data: Some(k8s::volume_claim(
                "data",
                &storage.size,
                storage.class_name.as_deref(),
            )),
            spread: Some(("kubernetes.io/hostname".into(), false)),
            // A budget on a single replica would block every node drain.
            min_available: (config.replicas > 1).then(|| atomix::quorum(config.replicas)),
        })
    }

    fn check_storage(storage: &Storage) -> Vec<Violation> {
        let mut v = Vec::new();
        let size = quantity::value(&storage.size)
            .map_err(|e| v.push(Violation::config("storage.size", e)))
            .ok();
        if storage
            .class_name
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            v.push(Violation::config(
                "storage.className",
                "must name a StorageClass (got an empty name); omit it to use the cluster default",
            ));
        }
        let segment = bytes(&storage.segment_size)
            .map_err(|e| v.push(Violation::config("storage.segmentSize", e)))
            .ok();
        let max_entry = bytes(&storage.max_entry_size)
            .map_err(|e| v.push(Violation::config("storage.maxEntrySize", e)))
            .ok();
        if let (Some(size), Some(segment)) = (size, segment)
            && segment as f64 > size
        {
            v.push(Violation::config(
                "storage.segmentSize",
                format!(
                    "must not exceed storage.size ({}) (got {}): use a smaller segment or a larger volume",
                    storage.size, storage.segment_size
                ),
            ));
        }
        if let (Some(segment), Some(max_entry)) = (segment, max_entry)
            && max_entry > segment
        {
            v.push(Violation::config(
                "storage.maxEntrySize",
                format!(
                    "must not exceed storage.segmentSize ({}) (got {}): an entry must fit in one segment",
                    storage.segment_size, storage.max_entry_size
                ),
            ));
        }
        v
    }
}

impl Plugin for Log {
    type Config = Config;
    const NAME: &'static str = "log";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Partitions kept as a replicated persistent log (Atomix log storage nodes)";

    fn check(_db: &Database, config: &Config) -> Vec<Violation> {
        let mut v = Vec::new();
        v.extend(atomix::check_quorum_replicas("replicas", config.replicas));
        if config.image.trim().is_empty() {
            v.push(Violation::config("image", "must name a container image"));
        }
        v.extend(config.resources.check("resources"));
        v.extend(Self::check_storage(&config.storage));
        v
    }

    fn render(db: &Database, config: &Config, out: &mut Output) -> Result<(), String> {
        let group = Self::group(db, config)?;
        group.render(db, out)?;
        for p in db.partition_ids() {
            let placement = Placement::statefulset(&group.name);
            atomix::partition_service(db, p, &group.labels, placement, out);
        }
        Ok(())
    }

    fn status(db: &Database, config: &Config, observed: &Observed) -> StatusReport {
        // A consensus log: a majority of replicas serves.
        let quorum = atomix::quorum(config.replicas);
        atomix::single_group_status(db, observed, &db.name, config.replicas, quorum)
    }
}

atoll_guest::export!(Log);

#[cfg(test)]
mod tests;
