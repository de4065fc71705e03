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
///
/// # Errors
/// Every violation, each naming its field.
pub fn validate<P: Plugin>(db: &Database) -> Result<(), Vec<Violation>> {
    parsed::<P>(db).map(|_| ())
}

/// `render(db)`: refuses an invalid Database before rendering anything.
///
/// # Errors
/// `Invalid` with the violations, or `Failed` when the plugin cannot render.
pub fn render<P: Plugin>(db: &Database) -> Result<Rendered, RenderError> {
    let config = parsed::<P>(db).map_err(RenderError::Invalid)?;
    let mut out = Output::default();
    P::render(db, &config, &mut out).map_err(RenderError::Failed)?;
    out.finish().map_err(RenderError::Failed)
}

/// `status(db, observed)`: with an invalid config, nothing is ready. Like
/// `render`, [`Plugin::status`] only sees a config that passed
/// [`Plugin::check`], so it may rely on the ranges `check` enforces.
pub fn status<P: Plugin>(db: &Database, observed: &[String]) -> StatusReport {
    match parsed::<P>(db) {
        Ok(config) => P::status(db, &config, &Observed::parse(observed)),
        Err(violations) => StatusReport {
            ready_partitions: Vec::new(),
            available_partitions: Vec::new(),
            message: format!(
                "invalid config: {}",
                violations
                    .iter()
                    .map(Violation::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, schemars::JsonSchema, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        groups: u32,
    }

    /// Divides by `groups`, so it must never see a config `check` refused.
    struct Divider;

    impl Plugin for Divider {
        type Config = Cfg;
        const NAME: &'static str = "divider";
        const VERSION: &'static str = "0.0.0";
        const DESCRIPTION: &'static str = "test";

        fn check(_: &Database, config: &Cfg) -> Vec<Violation> {
            (config.groups == 0)
                .then(|| Violation::config("groups", "must be at least 1"))
                .into_iter()
                .collect()
        }

        fn render(_: &Database, _: &Cfg, _: &mut Output) -> Result<(), String> {
            Ok(())
        }

        fn status(db: &Database, config: &Cfg, _: &Observed) -> StatusReport {
            StatusReport {
                ready_partitions: vec![db.partitions / config.groups],
                available_partitions: Vec::new(),
                message: String::new(),
            }
        }
    }

    #[test]
    fn status_never_sees_a_config_check_refuses() {
        let db = Database::new("db", 2).with_config(serde_json::json!({"groups": 0}));
        let report = status::<Divider>(&db, &[]);
        assert!(report.ready_partitions.is_empty());
        assert_eq!(
            report.message,
            "invalid config: spec.storage.config.groups: must be at least 1"
        );
        let db = Database::new("db", 2).with_config(serde_json::json!({"groups": 2}));
        assert_eq!(status::<Divider>(&db, &[]).ready_partitions, [1]);
    }
}
