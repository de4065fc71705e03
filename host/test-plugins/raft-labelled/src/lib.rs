//! "raft 0.1.1": the built-in raft plugin's logic, plus the label
//! `atoll.dev/test-release=labelled` on every object. The hot-reload tests
//! load it from a ConfigMap and look for the label. Never shipped.

use atoll_guest::{Database, Observed, Output, Plugin, StatusReport, Violation};
use atoll_plugin_raft::Raft;

/// The label this release adds.
pub const LABEL: (&str, &str) = ("atoll.dev/test-release", "labelled");

pub struct Labelled;

impl Plugin for Labelled {
    type Config = <Raft as Plugin>::Config;
    const NAME: &'static str = Raft::NAME;
    const VERSION: &'static str = "0.1.1";
    const DESCRIPTION: &'static str = Raft::DESCRIPTION;

    fn check(db: &Database, config: &Self::Config) -> Vec<Violation> {
        Raft::check(db, config)
    }

    fn render(db: &Database, config: &Self::Config, out: &mut Output) -> Result<(), String> {
        Raft::render(db, config, out)?;
        out.label_all(LABEL.0, LABEL.1);
        Ok(())
    }

    fn status(db: &Database, config: &Self::Config, observed: &Observed) -> StatusReport {
        Raft::status(db, config, observed)
    }
}

atoll_guest::export!(Labelled);
