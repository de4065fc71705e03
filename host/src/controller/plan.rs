//! What a reconcile will do to a Database's children, decided before any
//! write: every object to apply, every owned child to prune, or a refusal
//! because pruning would destroy data.
//!
//! Guarantee (the data-loss guard): a plan never prunes a child that holds
//! data (a PersistentVolumeClaim, a StatefulSet with volume claim templates,
//! a Partition); it refuses instead, naming them, and nothing is applied or
//! pruned. The one exception is a one-time approval: the annotation
//! `atoll.dev/allow-data-loss: "<generation>"` lets exactly that generation's
//! change through; the next edit is guarded again, and any other value
//! (`"true"` included) approves nothing. The data-safety tests check this
//! over sequences of spec edits through the real plugins.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use serde_json::Value;

use super::observe::{Key, Live, key};
use crate::api::{ALLOW_DATA_LOSS, Database, Reason};
use crate::render::{Desired, Renderer};

/// The outcome of [`plan`].
#[derive(Debug)]
pub struct Plan<'a> {
    /// Partition records, the host's own objects, then the rendered objects.
    pub wanted: Vec<Value>,
    /// Owned children no longer rendered.
    pub prune: Vec<&'a Live>,
    /// Why nothing may be done: the children that would lose data, or that
    /// a new plugin version stopped rendering.
    pub refused: Option<Refusal>,
}

/// Why a plan does nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `DataLossRefused` or `PruneRefused`.
    pub reason: Reason,
    /// What would be lost and the command that approves it.
    pub message: String,
}

/// Plan the reconcile of `db` from its render, the objects the host keeps
/// for it besides the render (`host`: the partition-group Service, see
/// [`discovery`](super::discovery)) and its live children.
pub fn plan<'a>(
    db: &Database,
    renderer: &Renderer,
    desired: &Desired,
    host: Vec<Value>,
    live: &'a BTreeMap<Key, Live>,
) -> Plan<'a> {
    let mut wanted: Vec<Value> = renderer
        .partition_objects(db, desired)
        .into_iter()
        .map(|p| serde_json::to_value(p).expect("a Partition serialises"))
        .collect();
    wanted.extend(host);
    wanted.extend(desired.objects.iter().cloned());
    let wanted_keys: BTreeSet<Key> = wanted.iter().map(key).collect();
    let prune: Vec<&Live> = live
        .iter()
        .filter(|(key, _)| !wanted_keys.contains(*key))
        .map(|(_, l)| l)
        .collect();
    let refused = guard(db, desired, live, &prune);
    Plan {
        wanted,
        prune,
        refused,
    }
}

/// The data-loss guard: refuse what would lose data, or what a new plugin
/// version would prune, unless this generation is approved.
fn guard(
    db: &Database,
    desired: &Desired,
    live: &BTreeMap<Key, Live>,
    prune: &[&Live],
) -> Option<Refusal> {
    let losses = losses(db, desired, live, prune);
    let dropped = dropped_by_new_version(db, desired, prune);
    if losses.is_empty() && dropped.is_none() {
        return None;
    }
    let why = match approval(db) {
        Approval::ThisGeneration => return None,
        Approval::Other(value) => format!(
            " ({ALLOW_DATA_LOSS} is {value:?}, which approves nothing: it must name the generation it approves)"
        ),
        Approval::None => String::new(),
    };
    let (reason, what) = match dropped {
        Some(dropped) if losses.is_empty() => (Reason::PruneRefused, dropped),
        _ => (Reason::DataLossRefused, losses.join("; ")),
    };
    Some(Refusal {
        reason,
        message: refusal(db, &what, &why),
    })
}

/// What the plan would delete or move of the Database's data.
fn losses(
    db: &Database,
    desired: &Desired,
    live: &BTreeMap<Key, Live>,
    prune: &[&Live],
) -> Vec<String> {
    let deleting: Vec<String> = prune
        .iter()
        .filter(|l| holds_data(l))
        .map(|l| describe(l))
        .collect();
    let moving = super::moves::moves(db, desired, live);
    let mut losses = Vec::new();
    if !deleting.is_empty() {
        losses.push(format!(
            "refusing to delete {} (data would be lost)",
            deleting.join(", ")
        ));
    }
    if !moving.is_empty() {
        losses.push(format!(
            "refusing to move data away from where it lives: {}",
            moving.join("; ")
        ));
    }
    losses
}

/// A plugin version other than the one that last converged the Database
/// (a hot reload, an upgrade) prunes nothing on its own: what it would
/// prune, described, or `None`.
fn dropped_by_new_version(db: &Database, desired: &Desired, prune: &[&Live]) -> Option<String> {
    let previous = db.status.as_ref()?.plugin.as_ref()?;
    if previous.digest == desired.plugin.digest || prune.is_empty() {
        return None;
    }
    let dropped: Vec<String> = prune.iter().map(|l| describe(l)).collect();
    let new = &desired.plugin;
    Some(format!(
        "plugin {} {} ({}) no longer renders {}, which {} {} ({}) rendered; kept until approved",
        new.name,
        new.version,
        new.digest,
        dropped.join(", "),
        previous.name,
        previous.version,
        previous.digest
    ))
}

/// What `atoll.dev/allow-data-loss` says about `db`'s current generation.
#[derive(Debug, PartialEq, Eq)]
pub enum Approval {
    /// Absent.
    None,
    /// Names this generation: its change may delete data.
    ThisGeneration,
    /// Anything else (another generation, `"true"`): approves nothing.
    Other(String),
}

/// Read the approval annotation of `db`.
pub fn approval(db: &Database) -> Approval {
    let Some(value) = db.annotations().get(ALLOW_DATA_LOSS) else {
        return Approval::None;
    };
    match (value.trim().parse::<i64>(), db.metadata.generation) {
        (Ok(approved), Some(generation)) if approved == generation => Approval::ThisGeneration,
        _ => Approval::Other(value.clone()),
    }
}

/// The refusal message: what would be lost, and the exact command that
/// approves this one change.
fn refusal(db: &Database, what: &str, why: &str) -> String {
    let generation = db.metadata.generation.unwrap_or(0);
    format!(
        "{what}{why}; restore the previous spec or plugin, or approve this change (generation {generation}) once: kubectl annotate database {} -n {} {ALLOW_DATA_LOSS}={generation} --overwrite",
        db.name_any(),
        db.namespace().unwrap_or_else(|| "default".into()),
    )
}

/// `Kind name` of a child.
fn describe(live: &Live) -> String {
    format!(
        "{} {}",
        live.kind.resource.kind,
        live.object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Whether deleting `live` destroys data: a PersistentVolumeClaim, a
/// StatefulSet with volume claim templates (its claims are retained, but the
/// replicas holding them are gone), or a Partition.
fn holds_data(live: &Live) -> bool {
    match live.kind.resource.kind.as_str() {
        "PersistentVolumeClaim" | "Partition" => true,
        "StatefulSet" => live.object["spec"]["volumeClaimTemplates"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        _ => false,
    }
}
