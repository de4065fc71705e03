//! "legacy-two": a plugin written against `atoll:storage@0.2.0` with bare
//! wit-bindgen (the SDK speaks 0.3), as plugins built before availability
//! existed were. It renders one Service per partition, each bound with
//! placement in a StatefulSet some other tool runs, and reports the odd
//! partitions ready; atoll must load it, keep its placements, and count its
//! ready partitions as its available ones. Never shipped.

// wit-bindgen's generated ABI glue is unsafe by nature, and takes a
// record's many fields as separate arguments.
#[allow(unsafe_code, clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({ world: "plugin", path: "../../wit-0.2", pub_export_macro: true });
}

use bindings::atoll::storage::host::log;
use bindings::atoll::storage::types::{
    Database, Level, Metadata, PartitionBinding, Placement, RenderError, Rendered, StatusReport,
    Violation, WorkloadRef,
};

/// The port every partition Service exposes.
const PORT: u16 = 5678;

struct LegacyTwo;

impl bindings::Guest for LegacyTwo {
    fn metadata() -> Metadata {
        Metadata {
            name: "legacy-two".into(),
            version: "0.2.0".into(),
            description: "A Service per partition, from a 0.2 plugin".into(),
            config_schema: r#"{"type":"object"}"#.into(),
        }
    }

    fn validate(db: Database) -> Result<(), Vec<Violation>> {
        if db.config.trim() == "{}" {
            Ok(())
        } else {
            Err(vec![Violation {
                field: "spec.storage.config".into(),
                message: "must be empty: legacy-two takes no config".into(),
            }])
        }
    }

    fn render(db: Database) -> Result<Rendered, RenderError> {
        log(
            Level::Info,
            &format!("rendering {} partitions", db.partitions),
        );
        let mut objects = Vec::new();
        let mut partitions = Vec::new();
        for p in 1..=db.partitions {
            // Database names are DNS labels: no JSON escaping needed.
            let service = format!("{}-p{p}", db.name);
            objects.push(format!(
                r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{service}"}},"spec":{{"selector":{{"app":"{}"}},"ports":[{{"name":"api","port":{PORT}}}]}}}}"#,
                db.name
            ));
            partitions.push(PartitionBinding {
                partition: p,
                service,
                port: PORT,
                placement: Placement::Workload(WorkloadRef {
                    kind: "StatefulSet".into(),
                    name: format!("{}-data", db.name),
                }),
            });
        }
        Ok(Rendered {
            objects,
            partitions,
        })
    }

    fn status(db: Database, _observed: Vec<String>) -> StatusReport {
        StatusReport {
            ready_partitions: (1..=db.partitions).filter(|p| p % 2 == 1).collect(),
            message: "odd partitions ready".into(),
        }
    }
}

#[allow(unsafe_code)]
const _: () = {
    bindings::export!(LegacyTwo with_types_in bindings);
};
