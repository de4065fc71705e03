//! Readiness: which partitions are ready and which can serve, as the
//! plugin's `status` reads the observed children, and which workloads are
//! still rolling their pods to a new template (judged by the host from the
//! workloads' own status, the same for every plugin).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use super::Context;
use super::observe::{Key, Live};
use crate::api::{Database, PartitionStatus};
use crate::error::PluginError;
use crate::render::{Desired, memo, plugin_input};

/// What the plugin reported, and the rollouts under way.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    /// One per rendered partition binding, with its endpoint.
    pub partitions: Vec<PartitionStatus>,
    /// The plugin's summary.
    pub message: String,
    /// One line per workload whose pods are not all on its current
    /// template, e.g. `StatefulSet shop-2: 1/3 replicas updated`.
    pub rollouts: Vec<String>,
}

/// Ask the component that rendered `desired` (the same version, even if a
/// hot reload swapped the registry since) which partitions are ready and
/// available, given the children as observed. A ready partition always
/// counts as available, whatever the plugin says. The same component asked
/// about the same input and observed objects before answers from the memo
/// (`render::memo`) without a call. This reconcile's own
/// applies show up through the watches and trigger the next reconcile.
///
/// # Errors
/// The plugin call failed (trap, deadline, memory), or its thread panicked.
pub async fn readiness(
    ctx: &Context,
    db: &Database,
    desired: &Desired,
    live: &BTreeMap<Key, Live>,
) -> Result<Result<Readiness, PluginError>, tokio::task::JoinError> {
    let plugin = Arc::clone(&desired.component);
    let observed: Vec<String> = live
        .values()
        .filter(|l| l.kind.resource.kind != "Partition")
        .map(|l| l.object.to_string())
        .collect();
    let input = plugin_input(db, &ctx.renderer.cluster_domain);
    let namespace = input.namespace.clone();
    let key = memo::status_key(plugin.digest(), &input, &observed);
    let name = desired.plugin.name.as_str();
    let report = match ctx.memos.status.get(&key) {
        Some(report) => {
            ctx.metrics.memoized(name, "status");
            Ok(report)
        }
        None => {
            let started = std::time::Instant::now();
            let report =
                tokio::task::spawn_blocking(move || plugin.status(&input, &observed)).await?;
            ctx.metrics.plugin_call(name, "status", started.elapsed());
            report.map(|report| {
                let report = Arc::new(report);
                ctx.memos.status.insert(key, Arc::clone(&report), 1);
                report
            })
        }
    };
    Ok(report.map(|report| {
        let ready: BTreeSet<u32> = report.ready_partitions.iter().copied().collect();
        let available: BTreeSet<u32> = report.available_partitions.iter().copied().collect();
        let partitions = desired
            .partitions
            .iter()
            .map(|b| PartitionStatus {
                id: b.partition,
                service: b.service.clone(),
                endpoint: ctx.renderer.endpoint(&namespace, b),
                ready: ready.contains(&b.partition),
                available: ready.contains(&b.partition) || available.contains(&b.partition),
            })
            .collect();
        Readiness {
            partitions,
            message: report.message.clone(),
            rollouts: rollouts(live.values().map(|l| &l.object)),
        }
    }))
}

/// Workloads still replacing pods, one line each, in name order.
pub fn rollouts<'a>(objects: impl Iterator<Item = &'a Value>) -> Vec<String> {
    let mut lines: Vec<(String, String)> = objects
        .filter_map(|o| {
            let kind = o["kind"].as_str()?;
            let name = o["metadata"]["name"].as_str()?;
            let progress = match kind {
                "StatefulSet" => statefulset_rollout(o),
                "Deployment" => deployment_rollout(o),
                _ => None,
            }?;
            Some((name.to_string(), format!("{kind} {name}: {progress}")))
        })
        .collect();
    lines.sort();
    lines.into_iter().map(|(_, line)| line).collect()
}

/// `1/3 replicas updated` while a StatefulSet's pods are not all at its
/// update revision (its controller moves `currentRevision` to the update
/// revision once every replica is updated and ready), or the controller has
/// not yet seen its latest spec. A StatefulSet just created (no revision
/// yet) is starting, and one missing a pod of its current revision is short
/// a replica: neither is a rollout.
fn statefulset_rollout(sts: &Value) -> Option<String> {
    let status = &sts["status"];
    let want = sts["spec"]["replicas"].as_i64().unwrap_or(1);
    let updated = status["updatedReplicas"].as_i64().unwrap_or(0);
    let current = status["currentRevision"].as_str()?;
    let update = status["updateRevision"].as_str()?;
    if unobserved(sts) {
        return Some(format!(
            "0/{want} replicas updated (its controller has not seen the new spec yet)"
        ));
    }
    (current != update).then(|| format!("{updated}/{want} replicas updated"))
}

/// The same for a Deployment: pods of an older template still run, or not
/// every replica runs the newest one yet. Only once the Deployment has
/// reported a status at all.
fn deployment_rollout(deploy: &Value) -> Option<String> {
    let status = &deploy["status"];
    status["observedGeneration"].as_i64()?;
    let want = deploy["spec"]["replicas"].as_i64().unwrap_or(1);
    let updated = status["updatedReplicas"].as_i64().unwrap_or(0);
    let total = status["replicas"].as_i64().unwrap_or(0);
    if unobserved(deploy) {
        return Some(format!(
            "0/{want} replicas updated (its controller has not seen the new spec yet)"
        ));
    }
    // A Deployment that is only starting has no pods of an older template.
    (total > updated).then(|| format!("{updated}/{want} replicas updated"))
}

/// The workload's controller has not observed its latest generation.
fn unobserved(workload: &Value) -> bool {
    let generation = workload["metadata"]["generation"].as_i64();
    let observed = workload["status"]["observedGeneration"].as_i64();
    matches!((generation, observed), (Some(g), Some(o)) if o < g)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::rollouts;

    fn sts(name: &str, replicas: i64, status: serde_json::Value) -> serde_json::Value {
        json!({"kind": "StatefulSet", "metadata": {"name": name, "generation": 2},
               "spec": {"replicas": replicas}, "status": status})
    }

    #[test]
    fn a_statefulset_between_revisions_is_rolling_out() {
        let rolling = sts(
            "shop-2",
            3,
            json!({"observedGeneration": 2, "currentRevision": "a", "updateRevision": "b",
                   "updatedReplicas": 1, "readyReplicas": 3}),
        );
        let done = sts(
            "shop-1",
            3,
            json!({"observedGeneration": 2, "currentRevision": "b", "updateRevision": "b",
                   "updatedReplicas": 3, "readyReplicas": 3}),
        );
        assert_eq!(
            rollouts([&done, &rolling].into_iter()),
            ["StatefulSet shop-2: 1/3 replicas updated"]
        );
    }

    #[test]
    fn a_statefulset_missing_a_pod_of_its_revision_is_not_rolling_out() {
        let short = sts(
            "shop-2",
            3,
            json!({"observedGeneration": 2, "currentRevision": "b", "updateRevision": "b",
                   "updatedReplicas": 2, "readyReplicas": 2}),
        );
        assert!(rollouts(std::iter::once(&short)).is_empty());
    }

    #[test]
    fn a_statefulset_whose_new_spec_is_unseen_is_rolling_out() {
        let unseen = sts(
            "shop-1",
            3,
            json!({"observedGeneration": 1, "currentRevision": "a", "updateRevision": "a",
                   "updatedReplicas": 3}),
        );
        let lines = rollouts(std::iter::once(&unseen));
        assert_eq!(lines.len(), 1);
        assert_eq!(
            lines,
            [
                "StatefulSet shop-1: 0/3 replicas updated (its controller has not seen the new spec yet)"
            ]
        );
    }

    #[test]
    fn a_new_workload_is_starting_not_rolling_out() {
        let new_sts = sts("shop-1", 3, json!({}));
        let new_deploy = json!({"kind": "Deployment", "metadata": {"name": "shop-proxy", "generation": 1},
                                "spec": {"replicas": 2}});
        let starting = json!({"kind": "Deployment", "metadata": {"name": "shop-proxy", "generation": 1},
                              "spec": {"replicas": 2},
                              "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1}});
        assert!(rollouts([&new_sts, &new_deploy, &starting].into_iter()).is_empty());
    }

    #[test]
    fn a_deployment_with_old_pods_is_rolling_out() {
        let rolling = json!({"kind": "Deployment", "metadata": {"name": "shop-proxy", "generation": 3},
                             "spec": {"replicas": 2},
                             "status": {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 1}});
        assert_eq!(
            rollouts(std::iter::once(&rolling)),
            ["Deployment shop-proxy: 1/2 replicas updated"]
        );
    }
}
