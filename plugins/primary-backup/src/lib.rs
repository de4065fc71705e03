//! primary-backup: partitions held in memory by one group of Atomix nodes, each
//! partition on a primary that replicates to `backups` backups.
//!
//! One group: ConfigMap, StatefulSet and (with backups) PodDisruptionBudget
//! `<db>`, headless Service `<db>-hs`; per partition `p`: Service `<db>-p<p>`.
//! Data lives in memory and emptyDir only, never in PersistentVolumeClaims.
//! Every partition is ready when every replica is.

use atoll_guest::atomix::{self, NodeGroup};
use atoll_guest::k8s::{PullPolicy, Resources};
use atoll_guest::{Database, Observed, Output, Placement, Plugin, StatusReport, Violation};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most backups a partition may have.
pub const MAX_BACKUPS: u32 = 8;

/// `spec.storage.config` of a primary-backup Database.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    /// Backups of each partition's primary, 0..=8; the group runs backups + 1
    /// replicas. With 0 a restarted node loses its partitions' data.
    pub backups: u32,
    /// Whether a write waits for the backups (`sync`) or only for the primary
    /// (`async`, faster, but a primary failure can lose acknowledged writes).
    pub replication: Replication,
    /// Failure domain replicas are spread across: `node_aware` (hosts),
    /// `rack_aware` (`topology.kubernetes.io/rack` node label) or `zone_aware`
    /// (`topology.kubernetes.io/zone`). The spread is preferred, not required:
    /// with fewer domains than replicas, pods still schedule, doubling up.
    pub member_group_strategy: MemberGroupStrategy,
    /// Storage node image.
    pub image: String,
    /// When to pull the image.
    pub image_pull_policy: PullPolicy,
    /// Container resource requests and limits of each replica; data lives in
    /// memory, so size the memory limit for it.
    pub resources: Resources,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backups: 1,
            replication: Replication::Sync,
            member_group_strategy: MemberGroupStrategy::NodeAware,
            image: "atomix/primary-backup-storage-node:v0.5.0".into(),
            image_pull_policy: PullPolicy::IfNotPresent,
            resources: Resources::default(),
        }
    }
}

/// How a primary replicates writes to its backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Replication {
    /// A write is acknowledged once every backup has it.
    Sync,
    /// A write is acknowledged once the primary has it.
    Async,
}

/// The failure domain replicas are spread across.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberGroupStrategy {
    /// Different Kubernetes nodes (`kubernetes.io/hostname`).
    NodeAware,
    /// Different racks (`topology.kubernetes.io/rack`).
    RackAware,
    /// Different zones (`topology.kubernetes.io/zone`).
    ZoneAware,
}

impl MemberGroupStrategy {
    /// The node label whose values are the failure domains.
    pub fn topology_key(self) -> &'static str {
        match self {
            MemberGroupStrategy::NodeAware => "kubernetes.io/hostname",
            MemberGroupStrategy::RackAware => "topology.kubernetes.io/rack",
            MemberGroupStrategy::ZoneAware => "topology.kubernetes.io/zone",
        }
    }
}

pub struct PrimaryBackup;

impl PrimaryBackup {
    fn group(db: &Database, config: &Config) -> NodeGroup {
        let replicas = config.backups + 1;
        NodeGroup {
            name: db.name.clone(),
            labels: atomix::labels(db, Self::NAME, "node"),
            replicas,
            image: config.image.clone(),
            pull_policy: config.image_pull_policy,
            resources: config.resources.clone(),
            partitions: db.partition_ids().collect(),
            protocol: serde_json::json!({
                "replication": config.replication,
                "backups": config.backups,
            }),
            data: None,
            // Preferred, so a cluster with fewer domains than replicas still
            // runs every replica.
            spread: Some((config.member_group_strategy.topology_key().into(), false)),
            // Any one replica holds every partition; a budget on a single
            // replica would block every node drain.
            min_available: (replicas > 1).then_some(1),
        }
    }
}

impl Plugin for PrimaryBackup {
    type Config = Config;
    const NAME: &'static str = "primary-backup";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "In-memory partitions replicated from a primary to backups (Atomix primary-backup storage nodes)";

    fn check(_db: &Database, config: &Config) -> Vec<Violation> {
        let mut v = Vec::new();
        if config.backups > MAX_BACKUPS {
            v.push(Violation::config(
                "backups",
                format!(
                    "must be between 0 and {MAX_BACKUPS} (got {}): each backup adds a replica every write may wait for; 1 or 2 is usual",
                    config.backups
                ),
            ));
        }
        if config.image.trim().is_empty() {
            v.push(Violation::config("image", "must name a container image"));
        }
        v.extend(config.resources.check("resources"));
        v
    }

    fn render(db: &Database, config: &Config, out: &mut Output) -> Result<(), String> {
        let group = Self::group(db, config);
        group.render(db, out)?;
        for p in db.partition_ids() {
            let placement = Placement::statefulset(&group.name);
            atomix::partition_service(db, p, &group.labels, placement, out);
        }
        Ok(())
    }

    fn status(db: &Database, config: &Config, observed: &Observed) -> StatusReport {
        // The replicas elect a primary among those alive: one serves.
        atomix::single_group_status(db, observed, &db.name, config.backups + 1, 1)
    }
}

atoll_guest::export!(PrimaryBackup);

#[cfg(test)]
mod tests;
