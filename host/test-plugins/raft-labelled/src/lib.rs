//! "raft 0.1.1": the built-in raft plugin's logic, plus the label
//! `atoll.dev/test-release=labelled` on every object. The hot-reload tests
//! load it from a ConfigMap and look for the label. For a Database labelled
//! `atoll.dev/test-drop=pdb` this release also stops rendering
//! PodDisruptionBudgets: a new version that would prune. Never shipped.

use atoll_guest::{
    Database, Observed, Output, Plugin, StatusReport, Violation, dispatch, serde_json,
};
use atoll_plugin_raft::Raft;

/// The label this release adds.
pub const LABEL: (&str, &str) = ("atoll.dev/test-release", "labelled");
/// The Database label that makes this release drop PodDisruptionBudgets.
pub const DROP: (&str, &str) = ("atoll.dev/test-drop", "pdb");

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
        if db.labels.get(DROP.0).map(String::as_str) == Some(DROP.1) {
            let rendered = dispatch::render::<Raft>(db).map_err(|e| format!("{e:?}"))?;
            for object in rendered.objects {
                let kind = serde_json::from_str::<serde_json::Value>(&object)
                    .map_err(|e| e.to_string())?["kind"]
                    .clone();
                if kind != "PodDisruptionBudget" {
                    out.push_raw(object);
                }
            }
            for b in rendered.partitions {
                out.bind(b.partition, b.service, b.port, b.placement);
            }
        } else {
            Raft::render(db, config, out)?;
        }
        out.label_all(LABEL.0, LABEL.1);
        Ok(())
    }

    fn status(db: &Database, config: &Self::Config, observed: &Observed) -> StatusReport {
        Raft::status(db, config, observed)
    }
}

atoll_guest::export!(Labelled);
