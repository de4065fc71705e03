//! Status: conditions that say what is wrong and how to fix it, computed
//! from the reconcile's outcome, and written (Database and Partitions, by
//! server-side apply) only when they change; a problem also makes a Warning
//! Event, once per change of status.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::observe::{Key, Live};
use super::{Context, Error};
use crate::api::{
    API_VERSION, Condition, Database, DatabaseStatus, FIELD_MANAGER, Partition, PartitionStatus,
    PluginRef, Reason,
};
use crate::sync::MutexExt;

/// What one reconcile found.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Children are as rendered; `partitions` say which are ready and
    /// available, `rollouts` which workloads still replace pods.
    Converged {
        plugin: PluginRef,
        partitions: Vec<PartitionStatus>,
        message: String,
        rollouts: Vec<String>,
    },
    /// Something stops convergence; `message` says what and how to fix it.
    /// Children are left as they are.
    Degraded {
        reason: Reason,
        message: String,
        plugin: Option<PluginRef>,
    },
}

/// The status to write for `outcome`, keeping each condition's
/// `lastTransitionTime` when its status did not change.
pub fn database_status(
    previous: Option<&DatabaseStatus>,
    generation: Option<i64>,
    partitions_wanted: u32,
    outcome: Outcome,
) -> DatabaseStatus {
    let previous_conditions = previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let condition = |type_: &str, ok: bool, reason: Reason, message: &str| {
        let status = if ok { "True" } else { "False" };
        let last = previous_conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| Timestamp::now().to_string());
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: Some(last),
            observed_generation: generation,
        }
    };
    let availability = |partitions: &[PartitionStatus], message: &str| {
        let available = partitions.iter().filter(|p| p.available).count() as u32;
        let all = available >= partitions_wanted;
        let summary = format!("{available}/{partitions_wanted} partitions available");
        let summary = match message.is_empty() || all {
            true => summary,
            false => format!("{summary}: {message}"),
        };
        let reason = match all {
            true => Reason::AllPartitionsAvailable,
            false => Reason::PartitionsUnavailable,
        };
        (available, condition("Available", all, reason, &summary))
    };
    match outcome {
        Outcome::Converged {
            plugin,
            partitions,
            message,
            rollouts,
        } => {
            let ready = partitions.iter().filter(|p| p.ready).count() as u32;
            let (available, available_condition) = availability(&partitions, &message);
            let rolling = !rollouts.is_empty();
            let all = ready == partitions_wanted && !rolling;
            let summary = match rolling {
                true => rollouts.join("; "),
                false => format!("{ready}/{partitions_wanted} partitions ready: {message}"),
            };
            let not_ready = match (rolling, available >= partitions_wanted) {
                (true, _) => Reason::RollingOut,
                (false, true) => Reason::ReplicasNotReady,
                (false, false) => Reason::PartitionsNotReady,
            };
            DatabaseStatus {
                observed_generation: generation,
                ready_partitions: ready,
                available_partitions: available,
                partitions,
                plugin: Some(plugin),
                conditions: vec![
                    condition(
                        "Ready",
                        all,
                        if all {
                            Reason::AllPartitionsReady
                        } else {
                            not_ready
                        },
                        &summary,
                    ),
                    available_condition,
                    condition(
                        "Progressing",
                        !all,
                        match (all, rolling) {
                            (true, _) => Reason::Converged,
                            (false, true) => Reason::RollingOut,
                            (false, false) => Reason::WaitingForPartitions,
                        },
                        &summary,
                    ),
                    condition(
                        "Degraded",
                        false,
                        Reason::Healthy,
                        "children match the rendered state",
                    ),
                ],
            }
        }
        Outcome::Degraded {
            reason,
            message,
            plugin,
        } => {
            // Readiness and availability of what already runs are still
            // true; keep reporting them.
            let partitions = previous.map(|s| s.partitions.clone()).unwrap_or_default();
            let ready = partitions.iter().filter(|p| p.ready).count() as u32;
            let (available, available_condition) = availability(&partitions, "");
            DatabaseStatus {
                observed_generation: generation,
                ready_partitions: ready,
                available_partitions: available,
                partitions,
                plugin: plugin.or_else(|| previous.and_then(|s| s.plugin.clone())),
                conditions: vec![
                    condition("Ready", false, reason, &message),
                    available_condition,
                    condition("Progressing", false, reason, &message),
                    condition("Degraded", true, reason, &message),
                ],
            }
        }
    }
}

/// Whether writing `next` over `previous` changes anything beyond timestamps.
pub fn differs(previous: Option<&DatabaseStatus>, next: &DatabaseStatus) -> bool {
    let Some(previous) = previous else {
        return true;
    };
    let strip = |s: &DatabaseStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = None;
        }
        s
    };
    strip(previous) != strip(next)
}

/// Record a problem: a Degraded status and, when that changes the status, a
/// Warning Event.
///
/// # Errors
/// The status write failed (an Event that cannot be published is logged).
pub async fn degrade(
    db: &Database,
    ctx: &Context,
    reason: Reason,
    message: String,
    plugin: Option<PluginRef>,
) -> Result<(), Error> {
    let outcome = Outcome::Degraded {
        reason,
        message: message.clone(),
        plugin,
    };
    if write_status(db, ctx, outcome).await? {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_string(),
            note: Some(message.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &db.object_ref(&())).await {
            tracing::warn!(error = %e, "could not publish an Event");
        }
    }
    Ok(())
}

/// Write Database status if it changed; returns whether it did.
///
/// # Errors
/// The API server refused the status patch.
pub async fn write_status(db: &Database, ctx: &Context, outcome: Outcome) -> Result<bool, Error> {
    let key = (db.namespace().unwrap_or_default(), db.name_any());
    let rv = |o: &Database| o.resource_version().and_then(|v| v.parse::<u64>().ok());
    let previous = {
        let mut written = ctx.status_written.locked();
        match written.get(&key) {
            Some((w, status)) if rv(db).is_none_or(|r| r < *w) => Some(status.clone()),
            Some(_) => {
                written.remove(&key);
                db.status.clone()
            }
            None => db.status.clone(),
        }
    };
    let next = database_status(
        previous.as_ref(),
        db.metadata.generation,
        db.spec.partitions,
        outcome,
    );
    if !differs(previous.as_ref(), &next) {
        return Ok(false);
    }
    let api: Api<Database> = Api::namespaced(ctx.client.clone(), &key.0);
    let patch = json!({"apiVersion": API_VERSION, "kind": "Database", "status": next});
    let stored = api
        .patch_status(
            &key.1,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    if let (Some(w), Some(status)) = (rv(&stored), stored.status) {
        ctx.status_written.locked().insert(key, (w, status));
    }
    Ok(true)
}

/// Write each Partition's status if it changed.
///
/// # Errors
/// The API server refused a status patch.
pub async fn write_partition_status(
    ctx: &Context,
    namespace: &str,
    database: &str,
    live: &BTreeMap<Key, Live>,
    partitions: &[PartitionStatus],
) -> Result<(), Error> {
    let api: Api<Partition> = Api::namespaced(ctx.client.clone(), namespace);
    for p in partitions {
        let name = format!("{database}-{}", p.id);
        let status = json!({"ready": p.ready, "available": p.available, "endpoints": [p.endpoint]});
        let current = live
            .get(&("Partition".to_string(), name.clone()))
            .map(|l| &l.object["status"]);
        if current == Some(&status) {
            continue;
        }
        let patch = json!({"apiVersion": API_VERSION, "kind": "Partition", "status": status});
        let stored = api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        if let Ok(stored) = serde_json::to_value(stored).and_then(serde_json::from_value) {
            ctx.remember_write("Partition", stored);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> PluginRef {
        PluginRef {
            name: "raft".into(),
            version: "0.1.0".into(),
            digest: "sha256:x".into(),
        }
    }

    fn converged(ready: &[bool]) -> Outcome {
        let all: Vec<(bool, bool)> = ready.iter().map(|&r| (r, r)).collect();
        converged_with(&all, &[])
    }

    /// One partition per `(ready, available)`, and workloads rolling out.
    fn converged_with(partitions: &[(bool, bool)], rollouts: &[&str]) -> Outcome {
        Outcome::Converged {
            plugin: plugin(),
            partitions: partitions
                .iter()
                .enumerate()
                .map(|(i, &(ready, available))| PartitionStatus {
                    id: i as u32 + 1,
                    service: format!("db-p{}", i + 1),
                    endpoint: "x:1".into(),
                    ready,
                    available,
                })
                .collect(),
            message: "m".into(),
            rollouts: rollouts.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn get<'a>(s: &'a DatabaseStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn ready_only_when_every_partition_is() {
        let s = database_status(None, Some(2), 2, converged(&[true, false]));
        assert_eq!(s.ready_partitions, 1);
        assert_eq!(get(&s, "Ready").status, "False");
        assert_eq!(get(&s, "Progressing").status, "True");
        let s = database_status(Some(&s), Some(2), 2, converged(&[true, true]));
        assert_eq!(get(&s, "Ready").status, "True");
        assert_eq!(get(&s, "Degraded").status, "False");
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn degraded_keeps_partitions_and_transition_times_are_stable() {
        let ok = database_status(None, Some(1), 1, converged(&[true]));
        let again = database_status(Some(&ok), Some(1), 1, converged(&[true]));
        assert!(!differs(Some(&ok), &again));
        assert_eq!(
            get(&ok, "Ready").last_transition_time,
            get(&again, "Ready").last_transition_time
        );
        let bad = database_status(
            Some(&ok),
            Some(2),
            1,
            Outcome::Degraded {
                reason: Reason::InvalidSpec,
                message: "spec.storage.config.replicas: must be odd".into(),
                plugin: None,
            },
        );
        assert!(differs(Some(&ok), &bad));
        assert_eq!(bad.ready_partitions, 1);
        assert_eq!(get(&bad, "Degraded").reason, "InvalidSpec");
        assert_eq!(bad.plugin, Some(plugin()));
    }

    #[test]
    fn a_partition_missing_a_replica_is_available_not_ready() {
        let s = database_status(
            None,
            Some(1),
            3,
            converged_with(&[(true, true), (false, true), (true, true)], &[]),
        );
        assert_eq!((s.ready_partitions, s.available_partitions), (2, 3));
        assert_eq!(get(&s, "Available").status, "True");
        assert_eq!(get(&s, "Available").reason, "AllPartitionsAvailable");
        assert_eq!(get(&s, "Ready").status, "False");
        assert_eq!(get(&s, "Ready").reason, "ReplicasNotReady");

        let s = database_status(
            None,
            Some(1),
            3,
            converged_with(&[(true, true), (false, false), (true, true)], &[]),
        );
        assert_eq!(s.available_partitions, 2);
        assert_eq!(get(&s, "Available").status, "False");
        assert_eq!(get(&s, "Available").reason, "PartitionsUnavailable");
        assert_eq!(get(&s, "Available").message, "2/3 partitions available: m");
        assert_eq!(get(&s, "Ready").reason, "PartitionsNotReady");
    }

    #[test]
    fn a_rollout_keeps_the_database_progressing_and_not_ready() {
        let line = "StatefulSet db-2: 1/3 replicas updated";
        let s = database_status(
            None,
            Some(4),
            2,
            converged_with(&[(true, true), (true, true)], &[line]),
        );
        assert_eq!(s.ready_partitions, 2);
        for (t, status) in [("Ready", "False"), ("Progressing", "True")] {
            let c = get(&s, t);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                (status, "RollingOut"),
                "{t}"
            );
            assert_eq!(c.message, line);
        }
        assert_eq!(get(&s, "Available").status, "True");
        let done = database_status(Some(&s), Some(4), 2, converged(&[true, true]));
        assert_eq!(get(&done, "Ready").status, "True");
        assert_eq!(get(&done, "Progressing").reason, "Converged");
    }

    #[test]
    fn degraded_keeps_reporting_availability() {
        let serving = database_status(
            None,
            Some(1),
            2,
            converged_with(&[(false, true), (true, true)], &[]),
        );
        let bad = database_status(
            Some(&serving),
            Some(2),
            2,
            Outcome::Degraded {
                reason: Reason::RenderFailed,
                message: "boom".into(),
                plugin: None,
            },
        );
        assert_eq!(bad.available_partitions, 2);
        assert_eq!(get(&bad, "Available").status, "True");
        assert_eq!(get(&bad, "Ready").reason, "RenderFailed");
    }
}
