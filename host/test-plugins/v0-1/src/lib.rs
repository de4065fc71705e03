//! "legacy": a plugin written against `atoll:storage@0.1.0` with bare
//! wit-bindgen (the SDK speaks 0.2), as plugins built before placement
//! existed were. It renders one Service per partition, selecting pods some
//! other tool runs, and binds each partition to it; atoll must load it and
//! give its bindings placement `unknown`. Never shipped.

// wit-bindgen's generated ABI glue is unsafe by nature, and takes a
// record's many fields as separate arguments.
#[allow(unsafe_code, clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({ world: "plugin", path: "../../wit-0.1", pub_export_macro: true });
}

use bindings::atoll::storage::host::log;
use bindings::atoll::storage::types::{
    Database, Level, Metadata, PartitionBinding, RenderError, Rendered, StatusReport, Violation,
};

/// The port every partition Service exposes.
const PORT: u16 = 5678;

struct Legacy;

impl bindings::Guest for Legacy {
    fn metadata() -> Metadata {
        Metadata {
            name: "legacy".into(),
            version: "0.1.0".into(),
            description: "A Service per partition, from a 0.1 plugin".into(),
            config_schema: r#"{"type":"object"}"#.into(),
        }
    }

    fn validate(db: Database) -> Result<(), Vec<Violation>> {
        if db.config.trim() == "{}" {
            Ok(())
        } else {
            Err(vec![Violation {
                field: "spec.storage.config".into(),
                message: "must be empty: legacy takes no config".into(),
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
            });
        }
        Ok(Rendered {
            objects,
            partitions,
        })
    }

    fn status(db: Database, _observed: Vec<String>) -> StatusReport {
        StatusReport {
            ready_partitions: (1..=db.partitions).collect(),
            message: "always ready".into(),
        }
    }
}

#[allow(unsafe_code)]
const _: () = {
    bindings::export!(Legacy with_types_in bindings);
};
