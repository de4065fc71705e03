//! Atomix storage nodes: the shared shape of a replicated node group and the
//! `cluster.json` config that Atomix nodes read.
//!
//! raft, cache, primary-backup and log all run groups of Atomix storage nodes:
//! a ConfigMap (`cluster.json` + `protocol.json`), a StatefulSet, a headless
//! Service for stable pod DNS names, optionally a PodDisruptionBudget, and one
//! Service per partition. [`NodeGroup`] renders that set; plugins decide sizes,
//! placement and protocol settings.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde::Serialize;

use crate::k8s::{
    self, ContainerBuilder, Labels, PodBuilder, PullPolicy, Resources, ServiceBuilder,
    StatefulSetBuilder,
};
use crate::{Database, Observed, Output, Placement, StatusReport, Violation};

/// Port clients use (the Atomix API).
pub const API_PORT: u16 = 5678;
/// Port replicas use among themselves.
pub const PROTOCOL_PORT: u16 = 5679;

/// Where the config ConfigMap is mounted in each node.
pub const CONFIG_DIR: &str = "/etc/atomix";
/// Where a node keeps its data.
pub const DATA_DIR: &str = "/var/lib/atomix";

/// `atomix.database.DatabaseConfig` in proto3 JSON: the replicas of a group
/// and the partitions it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseConfig {
    pub replicas: Vec<ReplicaConfig>,
    pub partitions: Vec<PartitionId>,
}

/// `atomix.database.ReplicaConfig` in proto3 JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaConfig {
    pub id: String,
    pub host: String,
    pub api_port: i32,
    pub protocol_port: i32,
}

/// `atomix.database.PartitionId` in proto3 JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionId {
    pub partition: i32,
}

/// The standard labels of a plugin's pods and objects.
pub fn labels(db: &Database, plugin: &str, component: &str) -> Labels {
    k8s::labels([
        ("app.kubernetes.io/name", plugin),
        ("app.kubernetes.io/instance", db.name.as_str()),
        ("app.kubernetes.io/component", component),
        ("atoll.dev/database", db.name.as_str()),
    ])
}

/// A replicated group of Atomix storage nodes.
#[derive(Debug, Clone)]
pub struct NodeGroup {
    /// Name of the StatefulSet and its ConfigMap; the headless Service is
    /// `<name>-hs`.
    pub name: String,
    /// Pod selector labels (must be unique to this group).
    pub labels: Labels,
    pub replicas: u32,
    pub image: String,
    pub pull_policy: PullPolicy,
    pub resources: Resources,
    /// Partition ids this group serves.
    pub partitions: Vec<u32>,
    /// Contents of `protocol.json`.
    pub protocol: serde_json::Value,
    /// Persistent data: a claim template named `data`; `None` means emptyDir.
    pub data: Option<PersistentVolumeClaim>,
    /// Spread replicas across this topology key; `true` makes it required.
    pub spread: Option<(String, bool)>,
    /// Render a PodDisruptionBudget with this `minAvailable`.
    pub min_available: Option<i32>,
}

impl NodeGroup {
    /// The headless Service giving each replica a stable DNS name.
    pub fn headless_service(&self) -> String {
        format!("{}-hs", self.name)
    }

    /// `cluster.json`: every replica's id and DNS name, and the partitions.
    pub fn cluster_config(&self, db: &Database) -> DatabaseConfig {
        let hs = self.headless_service();
        DatabaseConfig {
            replicas: (0..self.replicas)
                .map(|i| {
                    let pod = format!("{}-{i}", self.name);
                    ReplicaConfig {
                        host: db.pod_host(&pod, &hs),
                        id: pod,
                        api_port: API_PORT.into(),
                        protocol_port: PROTOCOL_PORT.into(),
                    }
                })
                .collect(),
            partitions: self
                .partitions
                .iter()
                .map(|&p| PartitionId {
                    partition: p as i32,
                })
                .collect(),
        }
    }

    /// Push the ConfigMap, headless Service, StatefulSet and (if asked) the
    /// PodDisruptionBudget.
    ///
    /// # Errors
    /// An object does not encode as JSON.
    pub fn render(&self, db: &Database, out: &mut Output) -> Result<(), String> {
        let hs = self.headless_service();
        out.push(k8s::config_map(
            &self.name,
            &self.labels,
            [
                ("cluster.json", pretty(&self.cluster_config(db))?),
                ("protocol.json", pretty(&self.protocol)?),
            ],
        ));
        out.push(
            ServiceBuilder::new(&hs, &self.labels)
                .port("api", API_PORT)
                .port("protocol", PROTOCOL_PORT)
                .headless()
                .build(),
        );

        let node = ContainerBuilder::new("node", &self.image)
            .pull_policy(self.pull_policy)
            .args([
                "--config".to_string(),
                format!("{CONFIG_DIR}/cluster.json"),
                "--protocol".to_string(),
                format!("{CONFIG_DIR}/protocol.json"),
                "--node".to_string(),
                "$(POD_NAME)".to_string(),
            ])
            .env_from_field("POD_NAME", "metadata.name")
            .env_from_field("POD_NAMESPACE", "metadata.namespace")
            .port("api", API_PORT)
            .port("protocol", PROTOCOL_PORT)
            .mount("config", CONFIG_DIR, true)
            .mount("data", DATA_DIR, false)
            .readiness(k8s::tcp_probe("api", 5, 10))
            .liveness(k8s::tcp_probe("api", 30, 10))
            .resources(&self.resources)
            .build();
        let mut pod = PodBuilder::new(&self.labels)
            .container(node)
            .config_map_volume("config", &self.name)
            .termination_grace_period(30);
        if self.data.is_none() {
            pod = pod.empty_dir_volume("data");
        }
        if let Some((key, required)) = &self.spread {
            pod = pod.affinity(k8s::anti_affinity(&self.labels, key, *required));
        }
        let mut sts = StatefulSetBuilder::new(&self.name, &self.labels, &hs, pod.build())
            .replicas(self.replicas as i32);
        if let Some(claim) = &self.data {
            sts = sts.volume_claim(claim.clone());
        }
        out.push(sts.build());

        if let Some(min) = self.min_available {
            out.push(k8s::pod_disruption_budget(&self.name, &self.labels, min));
        }
        Ok(())
    }
}

/// Push Service `<db>-p<partition>` routing the API port to pods matching
/// `selector`, and bind the partition to it, its data living at
/// `placement` (usually [`Placement::statefulset`] of the [`NodeGroup`]
/// serving it).
pub fn partition_service(
    db: &Database,
    partition: u32,
    selector: &Labels,
    placement: Placement,
    out: &mut Output,
) {
    let name = db.child(format!("p{partition}"));
    out.push(
        ServiceBuilder::new(&name, selector)
            .label("atoll.dev/partition", partition.to_string())
            .port("api", API_PORT)
            .build(),
    );
    out.bind(partition, name, API_PORT, placement);
}

/// Check a replica count for a majority-based group: odd, 1..=9, so a
/// majority survives failures. `path` is the config field, e.g. `replicas`.
pub fn check_quorum_replicas(path: &str, replicas: u32) -> Option<Violation> {
    (!(1..=9).contains(&replicas) || replicas.is_multiple_of(2)).then(|| {
        Violation::config(
            path,
            format!(
                "must be odd and between 1 and 9 (got {replicas}): use 1, 3, 5, 7 or 9 so a majority survives failures"
            ),
        )
    })
}

/// Readiness of a Database whose partitions are all served by one
/// StatefulSet: every partition is ready once all `want` replicas are, and
/// available while at least `serving` of them are (a quorum for a consensus
/// group, one for a group that elects a primary among live replicas).
pub fn single_group_status(
    db: &Database,
    observed: &Observed,
    statefulset: &str,
    want: u32,
    serving: i32,
) -> StatusReport {
    let want = want as i32;
    let ready = observed.statefulset_ready(statefulset, want);
    let all: Vec<u32> = db.partition_ids().collect();
    if ready >= want {
        StatusReport {
            ready_partitions: all.clone(),
            available_partitions: all,
            message: format!("all {want} replicas ready"),
        }
    } else if ready >= serving {
        StatusReport {
            ready_partitions: Vec::new(),
            available_partitions: all,
            message: format!("{ready}/{want} replicas ready (serving: {serving} needed)"),
        }
    } else {
        StatusReport {
            message: format!("{ready}/{want} replicas ready ({serving} needed to serve)"),
            ..StatusReport::default()
        }
    }
}

/// Majority of `replicas`: what a consensus group needs to stay available.
pub fn quorum(replicas: u32) -> i32 {
    (replicas / 2 + 1) as i32
}

/// Pretty JSON for ConfigMap files (humans read them with kubectl).
fn pretty<T: Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string_pretty(value).map_err(|e| e.to_string())
}
