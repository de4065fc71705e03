//! "raft 0.1.1": the built-in raft plugin's logic, plus the label
//! `atoll.dev/test-release=labelled` on every object. The hot-reload tests
//! load it from a ConfigMap and look for the label. For a Database labelled
//! `atoll.dev/test-drop=pdb` this release also stops rendering
//! PodDisruptionBudgets: a new version that would prune; for one labelled
//! `atoll.dev/test-unready=true` its pods require a node label no node has,
//! so they never become Ready (the rollout tests' bad release). Never
//! shipped.

use atoll_guest::{
    Database, Observed, Output, Plugin, StatusReport, Violation, dispatch, serde_json,
};
use atoll_plugin_raft::Raft;

/// The label this release adds.
pub const LABEL: (&str, &str) = ("atoll.dev/test-release", "labelled");
/// The Database label that makes this release drop PodDisruptionBudgets.
pub const DROP: (&str, &str) = ("atoll.dev/test-drop", "pdb");
/// The Database label that makes this release render pods no node can run
/// (a release that renders badly for some Databases: they never get Ready).
pub const UNREADY: (&str, &str) = ("atoll.dev/test-unready", "true");
/// The node label those pods require, which no node has.
const NOWHERE: &str = "atoll.dev/test-nowhere";

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
        let drop_pdb = db.labels.get(DROP.0).map(String::as_str) == Some(DROP.1);
        let unready = db.labels.get(UNREADY.0).map(String::as_str) == Some(UNREADY.1);
        if drop_pdb || unready {
            let rendered = dispatch::render::<Raft>(db).map_err(|e| format!("{e:?}"))?;
            for object in rendered.objects {
                let mut value = serde_json::from_str::<serde_json::Value>(&object)
                    .map_err(|e| e.to_string())?;
                if drop_pdb && value["kind"] == "PodDisruptionBudget" {
                    continue;
                }
                if unready && value["kind"] == "StatefulSet" {
                    // No node has this label: the pods stay Pending.
                    value["spec"]["template"]["spec"]["nodeSelector"] =
                        serde_json::json!({ NOWHERE: "true" });
                    out.push_raw(value.to_string());
                } else {
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
