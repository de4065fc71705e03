//! The component glue: WIT types <-> SDK types, and the exports.

use crate::{Plugin, dispatch};
use std::marker::PhantomData;

#[doc(hidden)]
// Generated code: the export glue of a WIT function with many record fields
// takes them as separate arguments.
#[allow(clippy::too_many_arguments)]
// The canonical-ABI glue wit-bindgen generates is unsafe by nature; it is
// generated, not written here.
#[allow(unsafe_code)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "::atoll_guest::__private::bindings",
        runtime_path: "::atoll_guest::__private::wit_bindgen::rt",
    });
}

use bindings::atoll::storage::types as wit;

/// The exported component for plugin `P`. `export!` names it.
pub struct Component<P>(PhantomData<P>);

pub(crate) fn log(level: crate::Level, message: &str) {
    use crate::Level::*;
    let level = match level {
        Trace => wit::Level::Trace,
        Debug => wit::Level::Debug,
        Info => wit::Level::Info,
        Warn => wit::Level::Warn,
        Error => wit::Level::Error,
    };
    bindings::atoll::storage::host::log(level, message);
}

fn database(db: wit::Database) -> crate::Database {
    crate::Database {
        name: db.name,
        namespace: db.namespace,
        uid: db.uid,
        generation: db.generation,
        labels: db.labels.into_iter().collect(),
        partitions: db.partitions,
        config: db.config,
        cluster_domain: db.cluster_domain,
    }
}

fn violations(v: Vec<crate::Violation>) -> Vec<wit::Violation> {
    v.into_iter()
        .map(|v| wit::Violation {
            field: v.field,
            message: v.message,
        })
        .collect()
}

impl<P: Plugin> bindings::Guest for Component<P> {
    fn metadata() -> wit::Metadata {
        let m = dispatch::metadata::<P>();
        wit::Metadata {
            name: m.name,
            version: m.version,
            description: m.description,
            config_schema: m.config_schema,
        }
    }

    fn validate(db: wit::Database) -> Result<(), Vec<wit::Violation>> {
        dispatch::validate::<P>(&database(db)).map_err(violations)
    }

    fn render(db: wit::Database) -> Result<wit::Rendered, wit::RenderError> {
        match dispatch::render::<P>(&database(db)) {
            Ok(r) => Ok(wit::Rendered {
                objects: r.objects,
                partitions: r
                    .partitions
                    .into_iter()
                    .map(|b| wit::PartitionBinding {
                        partition: b.partition,
                        service: b.service,
                        port: b.port,
                        placement: match b.placement {
                            crate::Placement::Nowhere => wit::Placement::Nowhere,
                            crate::Placement::Workload { kind, name } => {
                                wit::Placement::Workload(wit::WorkloadRef { kind, name })
                            }
                        },
                    })
                    .collect(),
            }),
            Err(crate::RenderError::Invalid(v)) => Err(wit::RenderError::Invalid(violations(v))),
            Err(crate::RenderError::Failed(m)) => Err(wit::RenderError::Failed(m)),
        }
    }

    fn status(db: wit::Database, observed: Vec<String>) -> wit::StatusReport {
        let r = dispatch::status::<P>(&database(db), &observed);
        wit::StatusReport {
            ready_partitions: r.ready_partitions,
            available_partitions: r.available_partitions,
            message: r.message,
        }
    }
}
