//! The built-in plugins compiled natively into the host (feature
//! `native-plugins`), used only to measure what WebAssembly costs: same plugin
//! code, same SDK dispatch (config parsing, checks, JSON encoding), no sandbox.

use atoll_guest::{Plugin, dispatch};

use crate::runtime::{PartitionBinding, PluginDatabase, PluginRenderError, Rendered, Violation};

/// Render `db` with plugin `P` natively, returning what the component would.
pub fn render<P: Plugin>(db: &PluginDatabase) -> Result<Rendered, PluginRenderError> {
    let db = atoll_guest::Database {
        name: db.name.clone(),
        namespace: db.namespace.clone(),
        uid: db.uid.clone(),
        generation: db.generation,
        labels: db.labels.iter().cloned().collect(),
        partitions: db.partitions,
        config: db.config.clone(),
        cluster_domain: db.cluster_domain.clone(),
    };
    match dispatch::render::<P>(&db) {
        Ok(r) => Ok(Rendered {
            objects: r.objects,
            partitions: r
                .partitions
                .into_iter()
                .map(|b| PartitionBinding {
                    partition: b.partition,
                    service: b.service,
                    port: b.port,
                })
                .collect(),
        }),
        Err(atoll_guest::RenderError::Invalid(v)) => Err(PluginRenderError::Invalid(
            v.into_iter()
                .map(|v| Violation {
                    field: v.field,
                    message: v.message,
                })
                .collect(),
        )),
        Err(atoll_guest::RenderError::Failed(m)) => Err(PluginRenderError::Failed(m)),
    }
}

/// The native raft plugin.
pub use atoll_plugin_raft::Raft;
