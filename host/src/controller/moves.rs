//! Data that a render would leave behind without deleting anything: a
//! partition moved away from the workload whose volumes hold it, and a
//! plugin switch while the Database holds data.
//!
//! Where a partition's data lives comes from the contract: each binding's
//! placement, recorded on the partition's `Partition` (`spec.placement`).
//! When the recorded workload holds data (a StatefulSet with volume claim
//! templates, or a PersistentVolumeClaim) and the new binding places the
//! partition elsewhere (another workload, or `nowhere`), the partition moves
//! away from its data, whatever its Service selects.
//!
//! When there is no recorded workload, or the new binding's placement is
//! `unknown` (a 0.1 plugin), the host infers the home conservatively from
//! what it can see: the Service bound to the partition selects pods, and a
//! StatefulSet with volume claim templates whose pods carry those labels
//! holds the partition's data. When the rendered selector stops matching
//! that StatefulSet, the partition moves. Plugins that place data some
//! other way and do not say so are not seen by this inference.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::observe::{Key, Live};
use crate::api::{Database, PartitionPlacement};
use crate::contract::{PartitionBinding, Placement};
use crate::render::Desired;

/// Each move of data the render makes, described `partition 3: StatefulSet
/// db-1 → StatefulSet db-3` (or `→ nowhere`), plus a plugin switch while
/// data exists.
pub fn moves(db: &Database, desired: &Desired, live: &BTreeMap<Key, Live>) -> Vec<String> {
    let mut moves = Vec::new();
    // Looked up once, not per partition: a reconcile runs this every time,
    // and raft at 1,024 partitions renders thousands of objects.
    let services: HashMap<&str, &Value> = desired
        .objects
        .iter()
        .filter(|o| o["kind"] == "Service")
        .map(|o| (name(o), o))
        .collect();
    let volumes_live = live
        .values()
        .any(|l| l.kind.resource.kind == "StatefulSet" && has_volumes(&l.object));
    for binding in &desired.partitions {
        let record = live.get(&(
            "Partition".to_string(),
            format!("{}-{}", db_name(db), binding.partition),
        ));
        let recorded = record.and_then(|r| {
            serde_json::from_value::<PartitionPlacement>(r.object["spec"]["placement"].clone()).ok()
        });
        let moved = match (&binding.placement, recorded) {
            (Placement::Unknown, _) | (_, None) if volumes_live => {
                inferred_move(binding, record, &services, desired, live)
            }
            (Placement::Unknown, _) | (_, None) => None,
            (placement, Some(old)) => placement_move(binding.partition, &old, placement, live),
        };
        moves.extend(moved);
    }
    let previous = db.status.as_ref().and_then(|s| s.plugin.as_ref());
    let data: Vec<&str> = live
        .values()
        .filter(|l| {
            l.kind.resource.kind == "PersistentVolumeClaim"
                || (l.kind.resource.kind == "StatefulSet" && has_volumes(&l.object))
        })
        .map(|l| name(&l.object))
        .collect();
    if let Some(p) = previous
        && p.name != desired.plugin.name
        && !data.is_empty()
    {
        moves.push(format!(
            "plugin {} → {} while {} hold its data (the new plugin cannot read it)",
            p.name,
            desired.plugin.name,
            data.join(", ")
        ));
    }
    moves
}

/// The move of `partition` away from its recorded home `old`, if `old`
/// holds data and the new `placement` is elsewhere.
fn placement_move(
    partition: u32,
    old: &PartitionPlacement,
    placement: &Placement,
    live: &BTreeMap<Key, Live>,
) -> Option<String> {
    let to = match placement {
        Placement::Workload(w) if w.kind == old.kind && w.name == old.name => return None,
        Placement::Workload(w) => format!("{} {}", w.kind, w.name),
        Placement::Nowhere | Placement::Unknown => "nowhere".to_string(),
    };
    let home = live.get(&(old.kind.clone(), old.name.clone()))?;
    let holds_data = match old.kind.as_str() {
        "PersistentVolumeClaim" => true,
        "StatefulSet" => has_volumes(&home.object),
        _ => false,
    };
    holds_data.then(|| format!("partition {partition}: {} {} → {to}", old.kind, old.name))
}

/// The move of `binding`'s partition inferred from Service selectors: the
/// Service it was bound to (per its Partition `record`) selected a
/// StatefulSet with volumes that the rendered Service no longer selects.
fn inferred_move(
    binding: &PartitionBinding,
    record: Option<&Live>,
    services: &HashMap<&str, &Value>,
    desired: &Desired,
    live: &BTreeMap<Key, Live>,
) -> Option<String> {
    let old_service = record
        .and_then(|r| r.object["spec"]["serviceName"].as_str())
        .unwrap_or(&binding.service);
    let old = live.get(&("Service".to_string(), old_service.to_string()))?;
    let old_selector = &old.object["spec"]["selector"];
    let new_selector = services
        .get(binding.service.as_str())
        .map_or(&Value::Null, |s| &s["spec"]["selector"]);
    if old_selector == new_selector {
        return None;
    }
    let from: Vec<&str> = live
        .values()
        .filter(|l| l.kind.resource.kind == "StatefulSet" && has_volumes(&l.object))
        .filter(|h| selects(old_selector, &h.object))
        .filter(|h| !selects(new_selector, &h.object))
        .map(|h| name(&h.object))
        .collect();
    if from.is_empty() {
        return None;
    }
    let to: Vec<&str> = desired
        .objects
        .iter()
        .filter(|o| o["kind"] == "StatefulSet" && selects(new_selector, o))
        .map(name)
        .collect();
    Some(format!(
        "partition {}: StatefulSet {} → {}",
        binding.partition,
        from.join(", "),
        match to.as_slice() {
            [] => "nothing".to_string(),
            to => format!("StatefulSet {}", to.join(", ")),
        }
    ))
}

fn db_name(db: &Database) -> &str {
    db.metadata.name.as_deref().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("?")
}

fn has_volumes(statefulset: &Value) -> bool {
    statefulset["spec"]["volumeClaimTemplates"]
        .as_array()
        .is_some_and(|t| !t.is_empty())
}

/// Whether `selector` (a Service's label map) selects the pods of
/// `workload` (labels of its pod template). An empty or absent selector
/// selects nothing.
fn selects(selector: &Value, workload: &Value) -> bool {
    let Some(selector) = selector.as_object().filter(|s| !s.is_empty()) else {
        return false;
    };
    let labels = &workload["spec"]["template"]["metadata"]["labels"];
    selector.iter().all(|(k, v)| &labels[k] == v)
}
