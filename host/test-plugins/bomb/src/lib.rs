//! "bomb": a plugin that hands atoll oversized or over-deep documents, for
//! the bounds tests. Metadata takes no input, so the misbehaviour is chosen
//! by patching the component's bytes: the tests replace the 8 bytes after
//! `ATOLL-BOMB-MODE:` (see `MODE`) with one of the modes below (padded
//! with `_`). Never shipped.
//!
//! Modes: `ok______` (behaves), `schemadp` (config schema nested 10,000
//! deep), `schemabg` (a 1 MiB schema of `[0,0,...]`), `descbig_` (an 8 KiB
//! description), `errbig__` (render fails with a 100 KiB message and
//! validate returns 1,000 violations), `logbig__` (render logs 2,000 lines
//! of 1 KiB), `deep____` (render returns an object nested 100 deep),
//! `values__` (render returns 4 MiB of `[0,0,...]`), `statbig_` (status
//! message of 100 KiB).

// wit-bindgen's generated ABI glue is unsafe by nature, and takes a
// record's many fields as separate arguments.
#[allow(unsafe_code, clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({ world: "plugin", path: "../../../wit", pub_export_macro: true });
}

use bindings::atoll::storage::host::log;
use bindings::atoll::storage::types::{
    Database, Level, Metadata, PartitionBinding, Placement, RenderError, Rendered, StatusReport,
    Violation,
};

/// The mode marker the tests patch.
#[used]
static MODE: [u8; 24] = *b"ATOLL-BOMB-MODE:ok______";

/// The mode, read so the compiler cannot fold the static into constants.
fn mode() -> [u8; 8] {
    let mut out = [0u8; 8];
    for (i, b) in out.iter_mut().enumerate() {
        *b = std::hint::black_box(&MODE)[16 + i];
    }
    out
}

fn is(m: &str) -> bool {
    mode() == *m.as_bytes()
}

struct Bomb;

impl bindings::Guest for Bomb {
    fn metadata() -> Metadata {
        let schema = if is("schemadp") {
            format!("{}0{}", "[".repeat(10_000), "]".repeat(10_000))
        } else if is("schemabg") {
            format!("[{}0]", "0,".repeat(512 << 10))
        } else {
            r#"{"type":"object"}"#.into()
        };
        Metadata {
            name: "bomb".into(),
            version: "0.1.0".into(),
            description: if is("descbig_") {
                "d".repeat(8 << 10)
            } else {
                "Oversized documents on purpose (tests only)".into()
            },
            config_schema: schema,
        }
    }

    fn validate(_db: Database) -> Result<(), Vec<Violation>> {
        if is("errbig__") {
            return Err((0..1000)
                .map(|i| Violation {
                    field: format!("spec.storage.config.f{i}"),
                    message: "v".repeat(4096),
                })
                .collect());
        }
        Ok(())
    }

    fn render(db: Database) -> Result<Rendered, RenderError> {
        if is("errbig__") {
            return Err(RenderError::Failed("e".repeat(100 << 10)));
        }
        if is("logbig__") {
            for i in 0..2000 {
                log(Level::Info, &format!("{i:04} {}", "l".repeat(1019)));
            }
        }
        let mut objects = vec![format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{}-bomb"}},"data":{{"a":"b"}}}}"#,
            db.name
        )];
        if is("deep____") {
            objects.push(format!("{}0{}", "[".repeat(100), "]".repeat(100)));
        }
        if is("values__") {
            let zeros = format!("[{}0]", "0,".repeat(512 << 10));
            objects.extend(std::iter::repeat_n(zeros, 4));
        }
        let mut partitions = Vec::new();
        for p in 1..=db.partitions {
            let service = format!("{}-p{p}", db.name);
            objects.push(format!(
                r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{service}"}},"spec":{{"selector":{{"app":"{}"}},"ports":[{{"name":"api","port":5678}}]}}}}"#,
                db.name
            ));
            partitions.push(PartitionBinding {
                partition: p,
                service,
                port: 5678,
                placement: Placement::Nowhere,
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
            available_partitions: (1..=db.partitions).collect(),
            message: if is("statbig_") {
                "s".repeat(100 << 10)
            } else {
                "bomb".into()
            },
        }
    }
}

#[allow(unsafe_code)]
const _: () = {
    bindings::export!(Bomb with_types_in bindings);
};
