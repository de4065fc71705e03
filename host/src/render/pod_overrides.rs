//! `spec.pod`: the settings a platform team puts on every pod of a Database,
//! applied by the host to every pod template the plugin renders, whatever the
//! plugin (built-in or not).
//!
//! Guarantees, after the output policy and before the config checksum:
//! - every object of the render with a pod template at `spec.template`
//!   (StatefulSets, Deployments, any allowed kind shaped like them) gets the
//!   overrides, with the precedence documented on [`PodOverrides`];
//! - labels go on the pod template only, never on the workload or its
//!   selector, and a label key the workload's selector uses is refused, so
//!   an override can neither orphan pods nor change an immutable selector;
//! - applying twice gives the same object as applying once.

mod check;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::PodOverrides;
use crate::contract::Violation;

pub use check::check;

/// Apply `pod` to every pod template among `objects`.
///
/// # Errors
/// A label `pod` sets is one the workload's selector uses: the violations
/// name it and the workload, and nothing was changed.
pub fn apply(objects: &mut [Value], pod: &PodOverrides) -> Result<(), Vec<Violation>> {
    let conflicts = selector_conflicts(objects, pod);
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    for object in objects.iter_mut().filter(|o| has_template(o)) {
        apply_template(&mut object["spec"]["template"], pod);
    }
    Ok(())
}

/// Whether `object` has a pod template at `spec.template`.
pub fn has_template(object: &Value) -> bool {
    object["spec"]["template"]["spec"].is_object()
}

/// `spec.pod.labels` keys some workload's selector uses.
fn selector_conflicts(objects: &[Value], pod: &PodOverrides) -> Vec<Violation> {
    let Some(labels) = &pod.labels else {
        return Vec::new();
    };
    let mut used: BTreeMap<&str, String> = BTreeMap::new();
    for object in objects.iter().filter(|o| has_template(o)) {
        let selector = &object["spec"]["selector"];
        let keys = selector["matchLabels"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys().map(String::as_str))
            .chain(
                selector["matchExpressions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["key"].as_str()),
            );
        let workload = format!(
            "{} {}",
            object["kind"].as_str().unwrap_or_default(),
            object["metadata"]["name"].as_str().unwrap_or_default()
        );
        for key in keys.filter(|k| labels.contains_key(*k)) {
            used.entry(key).or_insert(workload.clone());
        }
    }
    used.into_iter()
        .map(|(key, workload)| Violation {
            field: format!("spec.pod.labels[{key}]"),
            message: format!(
                "`{key}` is a label of the pod selector of {workload}, which the plugin owns and Kubernetes never lets change; choose another key"
            ),
        })
        .collect()
}

fn apply_template(template: &mut Value, pod: &PodOverrides) {
    if let Some(labels) = &pod.labels {
        merge_map(object_at(template, &["metadata", "labels"]), labels);
    }
    if let Some(annotations) = &pod.annotations {
        merge_map(
            object_at(template, &["metadata", "annotations"]),
            annotations,
        );
    }
    let spec = &mut template["spec"];
    if let Some(selector) = &pod.node_selector {
        merge_map(object_at(spec, &["nodeSelector"]), selector);
    }
    if let Some(tolerations) = &pod.tolerations {
        append(spec, "tolerations", tolerations);
    }
    if let Some(constraints) = &pod.topology_spread_constraints {
        append(spec, "topologySpreadConstraints", constraints);
    }
    replace(spec, "affinity", pod.affinity.as_ref());
    replace(spec, "priorityClassName", pod.priority_class_name.as_ref());
    replace(spec, "securityContext", pod.security_context.as_ref());
    for list in ["initContainers", "containers"] {
        for container in spec[list].as_array_mut().into_iter().flatten() {
            if let Some(env) = &pod.env {
                set_env(container, env);
            }
            if let Some(resources) = &pod.resources {
                default_resources(container, resources);
            }
        }
    }
}

/// The object at `path` under `value`, made an empty object if it is not one.
fn object_at<'a>(value: &'a mut Value, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut at = value;
    for key in path {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        at = &mut at[*key];
    }
    if !at.is_object() {
        *at = Value::Object(Map::new());
    }
    match at {
        Value::Object(map) => map,
        _ => unreachable!("made an object just above"),
    }
}

/// Key by key, `overrides` winning.
fn merge_map(into: &mut Map<String, Value>, overrides: &BTreeMap<String, String>) {
    for (k, v) in overrides {
        into.insert(k.clone(), Value::String(v.clone()));
    }
}

/// Append each of `items` the list does not already hold (so applying
/// twice adds nothing).
fn append<T: Serialize>(spec: &mut Value, field: &str, items: &[T]) {
    if !spec[field].is_array() {
        spec[field] = Value::Array(Vec::new());
    }
    let Value::Array(list) = &mut spec[field] else {
        return;
    };
    for item in items {
        let item = to_value(item);
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

fn replace<T: Serialize>(spec: &mut Value, field: &str, value: Option<&T>) {
    if let Some(value) = value {
        spec[field] = to_value(value);
    }
}

/// The Database's variable replaces the container's of the same name in
/// place (so `$(VAR)` references keep their order); new ones are appended.
fn set_env(container: &mut Value, env: &[k8s_openapi::api::core::v1::EnvVar]) {
    if !container["env"].is_array() {
        container["env"] = Value::Array(Vec::new());
    }
    let Value::Array(list) = &mut container["env"] else {
        return;
    };
    for var in env {
        let value = to_value(var);
        match list.iter_mut().find(|e| e["name"] == var.name.as_str()) {
            Some(existing) => *existing = value,
            None => list.push(value),
        }
    }
}

/// Per resource name, the defaults apply only where the container sets
/// neither a request nor a limit for it: a plugin's request with a default
/// limit below it (or the reverse) would make an invalid pod.
fn default_resources(
    container: &mut Value,
    defaults: &k8s_openapi::api::core::v1::ResourceRequirements,
) {
    let names: Vec<&String> = defaults
        .requests
        .iter()
        .chain(defaults.limits.iter())
        .flat_map(BTreeMap::keys)
        .collect();
    for name in names {
        let set = |section: &str| !container["resources"][section][name.as_str()].is_null();
        if set("requests") || set("limits") {
            continue;
        }
        for (section, values) in [
            ("requests", &defaults.requests),
            ("limits", &defaults.limits),
        ] {
            if let Some(q) = values.as_ref().and_then(|m| m.get(name)) {
                object_at(container, &["resources", section])
                    .insert(name.clone(), Value::String(q.0.clone()));
            }
        }
    }
}

fn to_value<T: Serialize>(value: &T) -> Value {
    // Kubernetes API types are plain data; serialising them cannot fail.
    serde_json::to_value(value).unwrap_or(Value::Null)
}
