//! What a reconcile will do to a Database's children, decided before any
//! write: every object to apply, every owned child to prune, or a refusal
//! because pruning would destroy data.
//!
//! Guarantee (the data-loss guard): unless the Database is annotated
//! `atoll.dev/allow-data-loss: "true"`, a plan never prunes a child that
//! holds data (a PersistentVolumeClaim, a StatefulSet with volume claim
//! templates, a Partition); it refuses instead, naming them, and nothing is
//! applied or pruned. the data-safety tests checks this over sequences
//! of spec edits through the real plugins.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use serde_json::Value;

use super::observe::{Key, Live, key};
use crate::api::{ALLOW_DATA_LOSS, Database};
use crate::render::{Desired, Renderer};

/// The outcome of [`plan`].
#[derive(Debug)]
pub struct Plan<'a> {
    /// Partition records, then the rendered objects.
    pub wanted: Vec<Value>,
    /// Owned children no longer rendered.
    pub prune: Vec<&'a Live>,
    /// Why nothing may be done: the children that would lose data.
    pub refused: Option<String>,
}

/// Plan the reconcile of `db` from its render and its live children.
pub fn plan<'a>(
    db: &Database,
    renderer: &Renderer,
    desired: &Desired,
    live: &'a BTreeMap<Key, Live>,
) -> Plan<'a> {
    let mut wanted: Vec<Value> = renderer
        .partition_objects(db, desired)
        .into_iter()
        .map(|p| serde_json::to_value(p).expect("a Partition serialises"))
        .collect();
    wanted.extend(desired.objects.iter().cloned());
    let wanted_keys: BTreeSet<Key> = wanted.iter().map(key).collect();
    let prune: Vec<&Live> = live
        .iter()
        .filter(|(key, _)| !wanted_keys.contains(*key))
        .map(|(_, l)| l)
        .collect();

    let allow_loss = db.annotations().get(ALLOW_DATA_LOSS).map(String::as_str) == Some("true");
    let losing: Vec<String> = prune
        .iter()
        .filter(|l| holds_data(l))
        .map(|l| {
            format!(
                "{} {}",
                l.kind.resource.kind,
                l.object["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let refused = (!losing.is_empty() && !allow_loss).then(|| {
        format!(
            "refusing to delete {} (data would be lost); restore the previous spec, or annotate the Database {ALLOW_DATA_LOSS}=\"true\" to allow it",
            losing.join(", ")
        )
    });
    Plan {
        wanted,
        prune,
        refused,
    }
}

/// Whether deleting `live` destroys data: a PersistentVolumeClaim, a
/// StatefulSet with volume claim templates (its claims are retained, but the
/// replicas holding them are gone), or a Partition.
pub fn holds_data(live: &Live) -> bool {
    match live.kind.resource.kind.as_str() {
        "PersistentVolumeClaim" | "Partition" => true,
        "StatefulSet" => live.object["spec"]["volumeClaimTemplates"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        _ => false,
    }
}
