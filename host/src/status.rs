//! Database status: conditions that say what is wrong and how to fix it,
//! computed from the render outcome and the plugin's readiness report.

use k8s_openapi::jiff::Timestamp;

use crate::api::{Condition, DatabaseStatus, PartitionStatus, PluginRef};

/// What one reconcile found.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Children are as rendered; `ready` of `partitions` can serve.
    Converged {
        plugin: PluginRef,
        partitions: Vec<PartitionStatus>,
        message: String,
    },
    /// Something stops convergence; `reason` is CamelCase, `message` says
    /// what and how to fix it. Children are left as they are.
    Degraded {
        reason: String,
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
    let condition = |type_: &str, ok: bool, reason: &str, message: &str| {
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
    match outcome {
        Outcome::Converged {
            plugin,
            partitions,
            message,
        } => {
            let ready = partitions.iter().filter(|p| p.ready).count() as u32;
            let all = ready == partitions_wanted;
            let summary = format!("{ready}/{partitions_wanted} partitions ready: {message}");
            DatabaseStatus {
                observed_generation: generation,
                ready_partitions: ready,
                partitions,
                plugin: Some(plugin),
                conditions: vec![
                    condition(
                        "Ready",
                        all,
                        if all {
                            "AllPartitionsReady"
                        } else {
                            "PartitionsNotReady"
                        },
                        &summary,
                    ),
                    condition(
                        "Progressing",
                        !all,
                        if all {
                            "Converged"
                        } else {
                            "WaitingForPartitions"
                        },
                        &summary,
                    ),
                    condition(
                        "Degraded",
                        false,
                        "Healthy",
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
            // Readiness of what already runs is still true; keep reporting it.
            let partitions = previous.map(|s| s.partitions.clone()).unwrap_or_default();
            let ready = partitions.iter().filter(|p| p.ready).count() as u32;
            DatabaseStatus {
                observed_generation: generation,
                ready_partitions: ready,
                partitions,
                plugin: plugin.or_else(|| previous.and_then(|s| s.plugin.clone())),
                conditions: vec![
                    condition("Ready", false, &reason, &message),
                    condition("Progressing", false, &reason, &message),
                    condition("Degraded", true, &reason, &message),
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
        Outcome::Converged {
            plugin: plugin(),
            partitions: ready
                .iter()
                .enumerate()
                .map(|(i, &ready)| PartitionStatus {
                    id: i as u32 + 1,
                    service: format!("db-p{}", i + 1),
                    endpoint: "x:1".into(),
                    ready,
                })
                .collect(),
            message: "m".into(),
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
                reason: "InvalidConfig".into(),
                message: "spec.storage.config.replicas: must be odd".into(),
                plugin: None,
            },
        );
        assert!(differs(Some(&ok), &bad));
        assert_eq!(bad.ready_partitions, 1);
        assert_eq!(get(&bad, "Degraded").reason, "InvalidConfig");
        assert_eq!(bad.plugin, Some(plugin()));
    }
}
