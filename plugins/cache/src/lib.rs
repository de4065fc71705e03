//! cache: partitions held in memory by single-replica Atomix cache nodes.
//!
//! Per node `n` (1..=ceil(partitions / partitionsPerNode)): ConfigMap and
//! StatefulSet `<db>-<n>` (one replica, emptyDir), headless Service
//! `<db>-<n>-hs`. Node `n` serves the contiguous partitions
//! `(n-1)*partitionsPerNode+1 ..= min(n*partitionsPerNode, partitions)`. Per
//! partition `p`: Service `<db>-p<p>` selecting its node. A partition is ready
//! when its node's pod is. Nothing is replicated or persisted: a restarted node
//! comes back empty.

use atoll_guest::atomix::{self, NodeGroup};
use atoll_guest::k8s::{PullPolicy, Resources};
use atoll_guest::{Database, Observed, Output, Placement, Plugin, StatusReport, Violation};
use schemars::JsonSchema;
use serde::Deserialize;

/// `spec.storage.config` of a cache Database.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    /// Partitions each cache node serves, at least 1; the Database runs
    /// ceil(partitions / partitionsPerNode) nodes.
    pub partitions_per_node: u32,
    /// Cache node image.
    pub image: String,
    /// When to pull the image.
    pub image_pull_policy: PullPolicy,
    /// Container resource requests and limits of each node; the cache lives in
    /// memory, so size the memory limit for the data.
    pub resources: Resources,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            partitions_per_node: 1,
            image: "atomix/cache-storage-node:v0.5.1".into(),
            image_pull_policy: PullPolicy::IfNotPresent,
            resources: Resources::default(),
        }
    }
}

/// How many nodes serve `partitions` at `per_node` partitions each.
pub fn node_count(partitions: u32, per_node: u32) -> u32 {
    partitions.div_ceil(per_node)
}

/// The node serving partition `p` (both 1-based).
pub fn node_of(partition: u32, per_node: u32) -> u32 {
    (partition - 1) / per_node + 1
}

pub struct Cache;

/// How many not-ready nodes the status message names before summarising.
const MESSAGE_NODES: usize = 5;

impl Cache {
    fn node(db: &Database, config: &Config, node: u32) -> NodeGroup {
        let per_node = config.partitions_per_node;
        let mut labels = atomix::labels(db, Self::NAME, "node");
        labels.insert("atoll.dev/node".into(), node.to_string());
        NodeGroup {
            name: db.child(node),
            labels,
            replicas: 1,
            image: config.image.clone(),
            pull_policy: config.image_pull_policy,
            resources: config.resources.clone(),
            partitions: ((node - 1) * per_node + 1..=(node * per_node).min(db.partitions))
                .collect(),
            protocol: serde_json::json!({}),
            data: None,
            spread: None,
            // A budget on a single replica would block every node drain.
            min_available: None,
        }
    }
}

impl Plugin for Cache {
    type Config = Config;
    const NAME: &'static str = "cache";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "In-memory cache partitions on single-replica nodes (Atomix cache storage nodes)";

    fn check(_db: &Database, config: &Config) -> Vec<Violation> {
        let mut v = Vec::new();
        if config.partitions_per_node == 0 {
            v.push(Violation::config(
                "partitionsPerNode",
                "must be at least 1 (got 0): use 1 for a node per partition, or more to pack partitions onto fewer nodes",
            ));
        }
        if config.image.trim().is_empty() {
            v.push(Violation::config("image", "must name a container image"));
        }
        v.extend(config.resources.check("resources"));
        v
    }

    fn render(db: &Database, config: &Config, out: &mut Output) -> Result<(), String> {
        let per_node = config.partitions_per_node;
        let nodes: Vec<NodeGroup> = (1..=node_count(db.partitions, per_node))
            .map(|n| Self::node(db, config, n))
            .collect();
        for node in &nodes {
            node.render(db, out)?;
        }
        for p in db.partition_ids() {
            let node = &nodes[(node_of(p, per_node) - 1) as usize];
            // In memory only: a cache keeps nothing that a move could lose.
            atomix::partition_service(db, p, &node.labels, Placement::Nowhere, out);
        }
        Ok(())
    }

    fn status(db: &Database, config: &Config, observed: &Observed) -> StatusReport {
        let per_node = config.partitions_per_node;
        let nodes = node_count(db.partitions, per_node);
        let ready_nodes: Vec<bool> = (1..=nodes)
            .map(|n| observed.statefulset_ready(&db.child(n), 1) >= 1)
            .collect();
        let ready_partitions: Vec<u32> = db
            .partition_ids()
            .filter(|&p| ready_nodes[(node_of(p, per_node) - 1) as usize])
            .collect();
        let waiting: Vec<String> = (1..=nodes)
            .filter(|&n| !ready_nodes[(n - 1) as usize])
            .map(|n| format!("node {n}"))
            .collect();
        let message = if waiting.is_empty() {
            format!("all {nodes} nodes ready")
        } else {
            let mut named = waiting[..waiting.len().min(MESSAGE_NODES)].join(", ");
            if waiting.len() > MESSAGE_NODES {
                named.push_str(&format!(" and {} more", waiting.len() - MESSAGE_NODES));
            }
            format!(
                "{}/{nodes} nodes ready; not ready: {named}",
                nodes as usize - waiting.len()
            )
        };
        // One node per partition and no replicas: available is ready.
        StatusReport {
            available_partitions: ready_partitions.clone(),
            ready_partitions,
            message,
        }
    }
}

atoll_guest::export!(Cache);

#[cfg(test)]
mod tests;
