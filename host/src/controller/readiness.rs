//! Readiness: which partitions can serve, as the plugin's `status` reads
//! the observed children.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::Context;
use super::observe::{Key, Live};
use crate::api::{Database, PartitionStatus};
use crate::error::PluginError;
use crate::render::{Desired, plugin_input};

/// What the plugin reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    /// One per rendered partition binding, with its endpoint.
    pub partitions: Vec<PartitionStatus>,
    /// The plugin's summary.
    pub message: String,
}

/// Ask the component that rendered `desired` (the same version, even if a
/// hot reload swapped the registry since) which partitions are ready, given
/// the children as observed. This reconcile's own applies show up through
/// the watches and trigger the next reconcile.
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
    let started = std::time::Instant::now();
    let report = tokio::task::spawn_blocking(move || plugin.status(&input, &observed)).await?;
    ctx.metrics
        .plugin_call(&desired.plugin.name, "status", started.elapsed());
    Ok(report.map(|report| {
        let ready: BTreeSet<u32> = report.ready_partitions.into_iter().collect();
        let partitions = desired
            .partitions
            .iter()
            .map(|b| PartitionStatus {
                id: b.partition,
                service: b.service.clone(),
                endpoint: ctx.renderer.endpoint(&namespace, b),
                ready: ready.contains(&b.partition),
                available: ready.contains(&b.partition),
            })
            .collect();
        Readiness {
            partitions,
            message: report.message,
        }
    }))
}
