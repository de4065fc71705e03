//! The four contract functions over plain Rust types.
//!
//! The WebAssembly exports and native callers (the test harness, the host's
//! native-comparison build) both go through these, so a native run exercises
//! exactly the code — config parsing, checks, JSON encoding — that runs in the
//! component.

use crate::{
    Database, Metadata, Observed, Output, Plugin, RenderError, Rendered, StatusReport, Violation,
    config_schema, parse_config,
};

/// `metadata()`.
pub fn metadata<P: Plugin>() -> Metadata {
    Metadata {
        name: P::NAME.to_string(),
        version: P::VERSION.to_string(),
        description: P::DESCRIPTION.to_string(),
        config_schema: config_schema::<P::Config>(),
    }
}

/// `validate(db)`: config parsing plus [`Plugin::check`].
pub fn validate<P: Plugin>(db: &Database) -> Result<(), Vec<Violation>> {
    parsed::<P>(db).map(|_| ())
}

/// `render(db)`: refuses an invalid Database before rendering anything.
pub fn render<P: Plugin>(db: &Database) -> Result<Rendered, RenderError> {
    let config = parsed::<P>(db).map_err(RenderError::Invalid)?;
    let mut out = Output::default();
    P::render(db, &config, &mut out).map_err(RenderError::Failed)?;
    out.finish().map_err(RenderError::Failed)
}

/// `status(db, observed)`: with an invalid config, nothing is ready.
pub fn status<P: Plugin>(db: &Database, observed: &[String]) -> StatusReport {
    match parse_config::<P::Config>(db) {
        Ok(config) => P::status(db, &config, &Observed::parse(observed)),
        Err(violation) => StatusReport {
            ready_partitions: Vec::new(),
            message: format!("invalid config: {violation}"),
        },
    }
}

fn parsed<P: Plugin>(db: &Database) -> Result<P::Config, Vec<Violation>> {
    let config = parse_config::<P::Config>(db).map_err(|v| vec![v])?;
    let mut violations = Vec::new();
    if db.partitions == 0 {
        violations.push(Violation::spec("partitions", "must be at least 1"));
    }
    violations.extend(P::check(db, &config));
    if violations.is_empty() {
        Ok(config)
    } else {
        Err(violations)
    }
}
