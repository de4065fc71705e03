//! Data that a render would leave behind without deleting anything: a
//! partition whose Service stops selecting the workload whose volumes hold
//! it, and a plugin switch while the Database holds data.
//!
//! The host infers a partition's home from what it can see: the Service
//! bound to the partition selects pods, and a StatefulSet with volume claim
//! templates whose pods carry those labels holds the partition's data. When
//! the rendered selector stops matching that StatefulSet, the partition
//! moves away from its data (clients reach a new, empty home). Caveat:
//! plugins that place data some other way are not seen here; the contract
//! does not say where a partition lives yet.

use std::collections::BTreeMap;

use serde_json::Value;

use super::observe::{Key, Live};
use crate::api::Database;
use crate::render::Desired;

/// Each move of data the render makes, described `partition 3: StatefulSet
/// db-1 → StatefulSet db-3`, plus a plugin switch while data exists.
pub fn moves(db: &Database, desired: &Desired, live: &BTreeMap<Key, Live>) -> Vec<String> {
    let holders: Vec<&Live> = live
        .values()
        .filter(|l| l.kind.resource.kind == "StatefulSet" && has_volumes(&l.object))
        .collect();
    let mut moves = Vec::new();
    for binding in &desired.partitions {
        let record = live.get(&(
            "Partition".to_string(),
            format!("{}-{}", db_name(db), binding.partition),
        ));
        let old_service = record
            .and_then(|r| r.object["spec"]["serviceName"].as_str())
            .unwrap_or(&binding.service);
        let Some(old) = live.get(&("Service".to_string(), old_service.to_string())) else {
            continue;
        };
        let old_selector = &old.object["spec"]["selector"];
        let new_selector = desired
            .objects
            .iter()
            .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == binding.service.as_str())
            .map_or(&Value::Null, |s| &s["spec"]["selector"]);
        if old_selector == new_selector {
            continue;
        }
        let from: Vec<&str> = holders
            .iter()
            .filter(|h| selects(old_selector, &h.object))
            .filter(|h| !selects(new_selector, &h.object))
            .map(|h| name(&h.object))
            .collect();
        if from.is_empty() {
            continue;
        }
        let to: Vec<&str> = desired
            .objects
            .iter()
            .filter(|o| o["kind"] == "StatefulSet" && selects(new_selector, o))
            .map(name)
            .collect();
        moves.push(format!(
            "partition {}: StatefulSet {} → {}",
            binding.partition,
            from.join(", "),
            match to.as_slice() {
                [] => "nothing".to_string(),
                to => format!("StatefulSet {}", to.join(", ")),
            }
        ));
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
