//! raft: partitions replicated by Raft consensus across groups of Atomix nodes.
//!
//! Per cluster `c` (1..=clusters): ConfigMap, StatefulSet and PodDisruptionBudget
//! `<db>-<c>`, headless Service `<db>-<c>-hs`. Per partition `p`: Service
//! `<db>-p<p>`, served by cluster `(p mod clusters) + 1`. A partition is ready
//! when every replica of its cluster is.

use atoll_guest::atomix::{self, NodeGroup};
use atoll_guest::k8s::{PullPolicy, Resources, VolumeClaimConfig};
use atoll_guest::{Database, Observed, Output, Placement, Plugin, StatusReport, Violation};
use schemars::JsonSchema;
use serde::Deserialize;

/// `spec.storage.config` of a raft Database.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    /// Number of Raft clusters; partitions are spread across them. 1..=partitions.
    pub clusters: u32,
    /// Replicas per cluster: odd, 1..=9, so a majority survives failures.
    pub replicas: u32,
    /// Storage node image.
    pub image: String,
    /// When to pull the image.
    pub image_pull_policy: PullPolicy,
    /// Persistent storage per replica; without it data lives in an emptyDir
    /// and is lost when a pod is rescheduled.
    pub volume_claim_template: Option<VolumeClaimConfig>,
    /// Container resource requests and limits.
    pub resources: Resources,
    /// Raft election timeout in milliseconds.
    pub election_timeout_millis: u32,
    /// Raft leader heartbeat interval in milliseconds; below the election timeout.
    pub heartbeat_interval_millis: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            clusters: 1,
            replicas: 3,
            image: "atomix/raft-storage-node:v0.5.3".into(),
            image_pull_policy: PullPolicy::IfNotPresent,
            volume_claim_template: None,
            resources: Resources::default(),
            election_timeout_millis: 5000,
            heartbeat_interval_millis: 500,
        }
    }
}

/// The cluster serving partition `p`.
pub fn cluster_of(partition: u32, clusters: u32) -> u32 {
    partition % clusters + 1
}

pub struct Raft;

impl Raft {
    fn group(db: &Database, config: &Config, cluster: u32) -> NodeGroup {
        let mut labels = atomix::labels(db, Self::NAME, "node");
        labels.insert("atoll.dev/cluster".into(), cluster.to_string());
        NodeGroup {
            name: db.child(cluster),
            labels,
            replicas: config.replicas,
            image: config.image.clone(),
            pull_policy: config.image_pull_policy,
            resources: config.resources.clone(),
            partitions: db
                .partition_ids()
                .filter(|&p| cluster_of(p, config.clusters) == cluster)
                .collect(),
            protocol: serde_json::json!({
                "electionTimeoutMillis": config.election_timeout_millis,
                "heartbeatIntervalMillis": config.heartbeat_interval_millis,
            }),
            data: config
                .volume_claim_template
                .as_ref()
                .map(|v| v.claim("data")),
            spread: Some(("kubernetes.io/hostname".into(), false)),
            // A budget on a single replica would block every node drain.
            min_available: (config.replicas > 1).then(|| atomix::quorum(config.replicas)),
        }
    }
}

impl Plugin for Raft {
    type Config = Config;
    const NAME: &'static str = "raft";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Partitions replicated by Raft consensus (Atomix raft storage nodes)";

    fn check(db: &Database, config: &Config) -> Vec<Violation> {
        let mut v = Vec::new();
        v.extend(atomix::check_quorum_replicas("replicas", config.replicas));
        if config.clusters == 0 || config.clusters > db.partitions {
            v.push(Violation::config(
                "clusters",
                format!(
                    "must be between 1 and spec.partitions ({}) (got {}): a cluster without partitions would sit idle",
                    db.partitions, config.clusters
                ),
            ));
        }
        if config.image.trim().is_empty() {
            v.push(Violation::config("image", "must name a container image"));
        }
        if config.heartbeat_interval_millis == 0
            || config.heartbeat_interval_millis >= config.election_timeout_millis
        {
            v.push(Violation::config(
                "heartbeatIntervalMillis",
                format!(
                    "must be above 0 and below electionTimeoutMillis ({}) (got {}), or followers start needless elections",
                    config.election_timeout_millis, config.heartbeat_interval_millis
                ),
            ));
        }
        if let Some(claim) = &config.volume_claim_template {
            v.extend(claim.check("volumeClaimTemplate"));
        }
        v.extend(config.resources.check("resources"));
        v
    }

    fn render(db: &Database, config: &Config, out: &mut Output) -> Result<(), String> {
        let groups: Vec<NodeGroup> = (1..=config.clusters)
            .map(|c| Self::group(db, config, c))
            .collect();
        for group in &groups {
            group.render(db, out)?;
        }
        for p in db.partition_ids() {
            let group = &groups[(cluster_of(p, config.clusters) - 1) as usize];
            // The cluster's StatefulSet holds the partition's replicas.
            let placement = Placement::statefulset(&group.name);
            atomix::partition_service(db, p, &group.labels, placement, out);
        }
        Ok(())
    }

    fn status(db: &Database, config: &Config, observed: &Observed) -> StatusReport {
        let want = config.replicas as i32;
        let quorum = atomix::quorum(config.replicas);
        let mut waiting = Vec::new();
        // Per cluster: (every replica ready, a quorum ready).
        let clusters: Vec<(bool, bool)> = (1..=config.clusters)
            .map(|c| {
                let ready = observed.statefulset_ready(&db.child(c), want);
                if ready < want {
                    let serving = if ready >= quorum {
                        "serving"
                    } else {
                        "no quorum"
                    };
                    waiting.push(format!(
                        "cluster {c}: {ready}/{want} replicas ready ({serving})"
                    ));
                }
                (ready >= want, ready >= quorum)
            })
            .collect();
        let of = |p: u32| clusters[(cluster_of(p, config.clusters) - 1) as usize];
        let ready_partitions = db.partition_ids().filter(|&p| of(p).0).collect();
        let available_partitions = db.partition_ids().filter(|&p| of(p).1).collect();
        let message = if waiting.is_empty() {
            format!("all {} clusters ready", config.clusters)
        } else {
            waiting.join("; ")
        };
        StatusReport {
            ready_partitions,
            available_partitions,
            message,
        }
    }
}

// Feature `library`: another component reuses Raft's logic and exports itself.
#[cfg(not(feature = "library"))]
atoll_guest::export!(Raft);

#[cfg(test)]
mod tests;
