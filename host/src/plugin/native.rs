//! The built-in plugins compiled natively into the host (feature
//! `native-plugins`), used only to measure what WebAssembly costs: same plugin
//! code, same SDK dispatch (config parsing, checks, JSON encoding), no sandbox.

use atoll_guest::{Plugin, dispatch};

use super::runtime::NativeCalls;
use crate::contract::{
    PartitionBinding, Placement, PluginDatabase, PluginRenderError, Rendered, StatusReport,
    Violation, WorkloadRef,
};

/// The native calls of built-in plugin `name`.
pub fn calls(name: &str) -> Option<NativeCalls> {
    fn of<P: Plugin>() -> NativeCalls {
        NativeCalls {
            validate: validate::<P>,
            render: render::<P>,
            status: status::<P>,
        }
    }
    Some(match name {
        "raft" => of::<atoll_plugin_raft::Raft>(),
        "cache" => of::<atoll_plugin_cache::Cache>(),
        "redis" => of::<atoll_plugin_redis::Redis>(),
        "primary-backup" => of::<atoll_plugin_primary_backup::PrimaryBackup>(),
        "log" => of::<atoll_plugin_log::Log>(),
        _ => return None,
    })
}

fn guest_db(db: &PluginDatabase) -> atoll_guest::Database {
    atoll_guest::Database {
        name: db.name.clone(),
        namespace: db.namespace.clone(),
        uid: db.uid.clone(),
        generation: db.generation,
        labels: db.labels.iter().cloned().collect(),
        partitions: db.partitions,
        config: db.config.clone(),
        cluster_domain: db.cluster_domain.clone(),
    }
}

fn violations(v: Vec<atoll_guest::Violation>) -> Vec<Violation> {
    v.into_iter()
        .map(|v| Violation {
            field: v.field,
            message: v.message,
        })
        .collect()
}

/// `validate(db)` with plugin `P` natively.
///
/// # Errors
/// The violations, as the component would return them.
pub fn validate<P: Plugin>(db: &PluginDatabase) -> Result<(), Vec<Violation>> {
    dispatch::validate::<P>(&guest_db(db)).map_err(violations)
}

/// `status(db, observed)` with plugin `P` natively.
pub fn status<P: Plugin>(db: &PluginDatabase, observed: &[String]) -> StatusReport {
    let report = dispatch::status::<P>(&guest_db(db), observed);
    StatusReport {
        ready_partitions: report.ready_partitions,
        available_partitions: report.available_partitions,
        message: report.message,
    }
}

/// Render `db` with plugin `P` natively, returning what the component would.
///
/// # Errors
/// The render error, as the component would return it.
pub fn render<P: Plugin>(db: &PluginDatabase) -> Result<Rendered, PluginRenderError> {
    match dispatch::render::<P>(&guest_db(db)) {
        Ok(r) => Ok(Rendered {
            objects: r.objects,
            partitions: r
                .partitions
                .into_iter()
                .map(|b| PartitionBinding {
                    partition: b.partition,
                    service: b.service,
                    port: b.port,
                    placement: match b.placement {
                        atoll_guest::Placement::Nowhere => Placement::Nowhere,
                        atoll_guest::Placement::Workload { kind, name } => {
                            Placement::Workload(WorkloadRef { kind, name })
                        }
                    },
                })
                .collect(),
        }),
        Err(atoll_guest::RenderError::Invalid(v)) => Err(PluginRenderError::Invalid(violations(v))),
        Err(atoll_guest::RenderError::Failed(m)) => Err(PluginRenderError::Failed(m)),
    }
}

/// The native raft plugin.
pub use atoll_plugin_raft::Raft;
