//! Config checksums: a pod template carries `atoll.dev/config-checksum`, a
//! SHA-256 over the data of every ConfigMap and Secret it mounts or reads, so
//! any edit of that data changes the template and the workload rolls its
//! pods. Plugins need not do anything: the host stamps every template.
//!
//! Guarantees:
//! - references are found in volumes (`configMap`, `secret`, `projected`
//!   sources) and in every container and init container (`envFrom`, `env`
//!   `valueFrom` `configMapKeyRef`/`secretKeyRef`), and hashed in a stable
//!   order, so the same data always gives the same checksum;
//! - an object the same render contains is hashed as rendered; any other
//!   (a user's own Secret) as the controller read it from the API server
//!   during the reconcile ([`stamp`] with its data), or as missing if it does
//!   not exist, so creating it later also rolls the pods;
//! - a template referencing nothing carries no checksum.
//!
//! Caveats: atoll does not watch objects it does not render, so an edit of
//! such an external ConfigMap or Secret reaches the pods at the Database's
//! next reconcile (at the latest the resync, every 5 minutes), not at once.
//! Offline renders (`atoll render`) cannot read the cluster: there external
//! references hash as "not read", so their checksum differs from the one
//! atoll applies. The checksum reveals nothing of the data beyond whether it
//! changed, but like any unsalted hash it lets someone who can read the
//! workload test guesses of a tiny Secret; keep secrets high-entropy.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::pod_overrides::has_template;
use crate::api::ANNOTATION_CONFIG_CHECKSUM;

/// A ConfigMap or Secret a pod template refers to, by kind and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigRef {
    /// `ConfigMap` or `Secret`.
    pub kind: &'static str,
    pub name: String,
}

/// What the controller read of referenced objects the render does not
/// contain: the object, or `None` when it does not exist.
pub type External = BTreeMap<ConfigRef, Option<Value>>;

/// Every ConfigMap and Secret the pod templates among `objects` refer to
/// that `objects` do not contain: what the controller must read.
pub fn external(objects: &[Value]) -> BTreeSet<ConfigRef> {
    let rendered = rendered(objects);
    objects
        .iter()
        .filter(|o| has_template(o))
        .flat_map(|o| references(&o["spec"]["template"]))
        .filter(|r| !rendered.contains_key(r))
        .collect()
}

/// Set (or remove, when it refers to nothing) the checksum annotation of
/// every pod template among `objects`; `external` holds what was read of
/// the references the render does not contain.
pub fn stamp(objects: &mut [Value], external: &External) {
    let checksums: Vec<Option<String>> = {
        let rendered = rendered(objects);
        objects
            .iter()
            .map(|o| match has_template(o) {
                true => checksum(&o["spec"]["template"], &rendered, external),
                false => None,
            })
            .collect()
    };
    for (object, sum) in objects.iter_mut().zip(checksums) {
        if !has_template(object) {
            continue;
        }
        let metadata = &mut object["spec"]["template"]["metadata"];
        match sum {
            Some(sum) => metadata["annotations"][ANNOTATION_CONFIG_CHECKSUM] = sum.into(),
            None => {
                if let Some(annotations) = metadata["annotations"].as_object_mut() {
                    annotations.remove(ANNOTATION_CONFIG_CHECKSUM);
                }
            }
        }
    }
}

/// The ConfigMaps and Secrets among `objects`, by reference.
fn rendered(objects: &[Value]) -> BTreeMap<ConfigRef, &Value> {
    objects
        .iter()
        .filter_map(|o| {
            let kind = config_kind(o["kind"].as_str()?)?;
            let name = o["metadata"]["name"].as_str()?.to_string();
            Some((ConfigRef { kind, name }, o))
        })
        .collect()
}

fn config_kind(kind: &str) -> Option<&'static str> {
    match kind {
        "ConfigMap" => Some("ConfigMap"),
        "Secret" => Some("Secret"),
        _ => None,
    }
}

/// The checksum of `template`, `None` when it refers to nothing.
fn checksum(
    template: &Value,
    rendered: &BTreeMap<ConfigRef, &Value>,
    external: &External,
) -> Option<String> {
    let refs = references(template);
    if refs.is_empty() {
        return None;
    }
    let mut hash = Sha256::new();
    for r in &refs {
        field(&mut hash, r.kind);
        field(&mut hash, &r.name);
        let object = match (rendered.get(r), external.get(r)) {
            (Some(object), _) => Some(*object),
            (None, Some(Some(object))) => Some(object),
            (None, Some(None)) => {
                field(&mut hash, "missing");
                None
            }
            (None, None) => {
                field(&mut hash, "not read");
                None
            }
        };
        for section in ["data", "binaryData", "stringData"] {
            let Some(entries) = object.and_then(|o| o[section].as_object()) else {
                continue;
            };
            field(&mut hash, section);
            // Sorted here rather than trusting the map's order.
            let sorted: BTreeMap<&String, &Value> = entries.iter().collect();
            for (key, value) in sorted {
                field(&mut hash, key);
                match value.as_str() {
                    Some(text) => field(&mut hash, text),
                    None => field(&mut hash, &value.to_string()),
                }
            }
        }
    }
    Some(hex::encode(hash.finalize()))
}

/// Length-prefixed, so no two sequences of fields hash alike.
fn field(hash: &mut Sha256, text: &str) {
    hash.update((text.len() as u64).to_be_bytes());
    hash.update(text.as_bytes());
}

/// Every ConfigMap and Secret `template` mounts or reads, sorted.
pub fn references(template: &Value) -> BTreeSet<ConfigRef> {
    let mut refs = BTreeSet::new();
    let mut add = |kind: &'static str, name: &Value| {
        if let Some(name) = name.as_str().filter(|n| !n.is_empty()) {
            refs.insert(ConfigRef {
                kind,
                name: name.to_string(),
            });
        }
    };
    let spec = &template["spec"];
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        add("ConfigMap", &volume["configMap"]["name"]);
        add("Secret", &volume["secret"]["secretName"]);
        for source in volume["projected"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
        {
            add("ConfigMap", &source["configMap"]["name"]);
            add("Secret", &source["secret"]["name"]);
        }
    }
    let containers = ["initContainers", "containers"]
        .into_iter()
        .flat_map(|list| spec[list].as_array().into_iter().flatten());
    for container in containers {
        for from in container["envFrom"].as_array().into_iter().flatten() {
            add("ConfigMap", &from["configMapRef"]["name"]);
            add("Secret", &from["secretRef"]["name"]);
        }
        for var in container["env"].as_array().into_iter().flatten() {
            add("ConfigMap", &var["valueFrom"]["configMapKeyRef"]["name"]);
            add("Secret", &var["valueFrom"]["secretKeyRef"]["name"]);
        }
    }
    refs
}

#[cfg(test)]
mod tests;
