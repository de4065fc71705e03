//! The output policy: what a plugin's render may contain, enforced by the
//! host on every render (plugins are not trusted to follow it).
//!
//! A render passes only if every object is an allowed kind, lives in the
//! Database's namespace (absent namespaces are filled in), is named after the
//! Database, appears once, does not take a name the host keeps for itself
//! (the partition-group Service `<db>`, see `controller::discovery`), and
//! the whole output stays within count and byte bounds, and what the pods,
//! Services and Secrets of the render may do passes [`pod_security`]. The
//! host then stamps atoll's labels and an owner reference to the Database on
//! every object, replacing whatever the plugin set there.
//!
//! The pod rules judge what would be applied: [`OutputPolicy::enforce`]
//! checks the plugin's render, and the renderer checks again after the
//! Database's `spec.pod` overrides (its `securityContext` replaces the
//! plugin's), refusing there as an invalid Database spec.
//!
//! By default plugins may render only what the built-in plugins render:
//! StatefulSets, Deployments, Services, ConfigMaps and
//! PodDisruptionBudgets. Secrets, ServiceAccounts and PersistentVolumeClaims
//! are opt-in (`--allow-kind`), as is any other kind, and each needs the
//! matching RBAC rule (the Helm chart's `policy.allow*` values add both).

pub mod pod_security;
pub mod retention;

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::api::{
    ANNOTATION_RENDERED, API_VERSION, DeletionPolicy, KIND_DATABASE, LABEL_DATABASE,
    LABEL_MANAGED_BY, LABEL_PLUGIN,
};
use crate::contract::{PartitionBinding, Rendered};
use crate::error::PolicyError;
pub use pod_security::{PodPolicy, PodSecurityLevel};

/// A kind plugins may render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedKind {
    pub api_version: String,
    pub kind: String,
}

impl AllowedKind {
    /// `kind` of `api_version`.
    pub fn new(api_version: &str, kind: &str) -> Self {
        AllowedKind {
            api_version: api_version.into(),
            kind: kind.into(),
        }
    }
}

impl std::str::FromStr for AllowedKind {
    type Err = String;

    /// `apps/v1/StatefulSet` or `v1/ConfigMap`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.rsplit_once('/') {
            Some((api_version, kind)) if !api_version.is_empty() && !kind.is_empty() => {
                Ok(AllowedKind::new(api_version, kind))
            }
            _ => Err(format!(
                "{s:?} is not <apiVersion>/<Kind>, e.g. apps/v1/StatefulSet or v1/ConfigMap"
            )),
        }
    }
}

/// Bounds and allowed kinds for rendered output.
#[derive(Debug, Clone)]
pub struct OutputPolicy {
    pub allowed_kinds: Vec<AllowedKind>,
    /// Most objects one render may produce.
    pub max_objects: usize,
    /// Most bytes of JSON one render may produce, all objects together.
    pub max_bytes: usize,
    /// What rendered pods, Services and Secrets may do.
    pub pods: PodPolicy,
}

/// The kinds the built-in plugins render: the default allowed kinds.
pub fn default_kinds() -> Vec<AllowedKind> {
    vec![
        AllowedKind::new("apps/v1", "StatefulSet"),
        AllowedKind::new("apps/v1", "Deployment"),
        AllowedKind::new("v1", "Service"),
        AllowedKind::new("v1", "ConfigMap"),
        AllowedKind::new("policy/v1", "PodDisruptionBudget"),
    ]
}

impl Default for OutputPolicy {
    fn default() -> Self {
        OutputPolicy {
            allowed_kinds: default_kinds(),
            // raft at 1024 partitions and 1024 clusters renders 5120 objects.
            max_objects: 8192,
            max_bytes: 16 << 20,
            pods: PodPolicy::default(),
        }
    }
}

/// The Database a render is for.
#[derive(Debug, Clone)]
pub struct Owner<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub plugin: &'a str,
    pub partitions: u32,
    /// What deleting the Database does to volumes (see [`retention`]).
    pub deletion: DeletionPolicy,
}

impl OutputPolicy {
    /// This policy also allowing `kinds` (duplicates are ignored).
    pub fn allowing(mut self, kinds: impl IntoIterator<Item = AllowedKind>) -> Self {
        for kind in kinds {
            if !self.allowed_kinds.contains(&kind) {
                self.allowed_kinds.push(kind);
            }
        }
        self
    }

    /// Check `rendered` for `owner` and return the objects to apply, with
    /// namespace, labels and owner reference set.
    ///
    /// # Errors
    /// The first rule the render breaks; nothing of it may be applied.
    pub fn enforce(&self, owner: &Owner, rendered: &Rendered) -> Result<Vec<Value>, PolicyError> {
        let count = rendered.objects.len();
        if count > self.max_objects {
            return Err(PolicyError::TooManyObjects {
                count,
                max: self.max_objects,
            });
        }
        let bytes: usize = rendered.objects.iter().map(String::len).sum();
        if bytes > self.max_bytes {
            return Err(PolicyError::TooLarge {
                bytes,
                max: self.max_bytes,
            });
        }

        let mut seen = BTreeSet::new();
        let mut services = BTreeSet::new();
        let mut objects = Vec::with_capacity(count);
        for (index, text) in rendered.objects.iter().enumerate() {
            let mut object: Value =
                serde_json::from_str(text).map_err(|e| PolicyError::Malformed {
                    index,
                    reason: e.to_string(),
                })?;
            let (api_version, kind, name) =
                identity(&object).ok_or_else(|| PolicyError::Malformed {
                    index,
                    reason: "apiVersion, kind or metadata.name is missing or not a string".into(),
                })?;
            if !self
                .allowed_kinds
                .iter()
                .any(|k| k.api_version == api_version && k.kind == kind)
            {
                return Err(PolicyError::KindNotAllowed {
                    api_version,
                    kind,
                    name,
                    allowed: self
                        .allowed_kinds
                        .iter()
                        .map(|k| format!("{}/{}", k.api_version, k.kind))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            if name != owner.name && !name.starts_with(&format!("{}-", owner.name)) {
                return Err(PolicyError::NamePrefix {
                    kind,
                    name,
                    prefix: owner.name.to_string(),
                });
            }
            if reserved(&kind, &name, owner.name) {
                return Err(PolicyError::Reserved { kind, name });
            }
            let metadata = object["metadata"]
                .as_object_mut()
                .expect("identity() checked metadata is an object");
            match metadata.get("namespace") {
                None | Some(Value::Null) => {}
                Some(Value::String(ns)) if ns == owner.namespace => {}
                Some(other) => {
                    return Err(PolicyError::WrongNamespace {
                        kind,
                        name,
                        namespace: other
                            .as_str()
                            .map_or_else(|| other.to_string(), str::to_string),
                        expected: owner.namespace.to_string(),
                    });
                }
            }
            if !seen.insert((kind.clone(), name.clone())) {
                return Err(PolicyError::Duplicate { kind, name });
            }
            if kind == "Service" {
                services.insert(name.clone());
            }
            stamp(metadata, owner);
            if retention::retained_claim(&kind, owner.deletion) {
                retention::mark_retained(metadata, owner.uid);
            }
            if kind == "StatefulSet"
                && let Some(note) = retention::statefulset(&mut object, owner.deletion)
                && let Some(metadata) = object["metadata"].as_object_mut()
            {
                retention::annotate(metadata, note);
            }
            fingerprint(&mut object);
            objects.push(object);
        }
        check_bindings(owner.partitions, &rendered.partitions, &services)?;
        self.pods.check(&objects)?;
        Ok(objects)
    }
}

fn identity(object: &Value) -> Option<(String, String, String)> {
    let s = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    object["metadata"].as_object()?;
    Some((
        s(&object["apiVersion"])?,
        s(&object["kind"])?,
        s(&object["metadata"]["name"])?,
    ))
}

/// Whether `kind name` is the host's own for Database `db`: the
/// partition-group Service `<db>` and its EndpointSlices `<db>`, `<db>-2`…
/// (`controller::discovery`).
fn reserved(kind: &str, name: &str, db: &str) -> bool {
    match kind {
        "Service" => name == db,
        "EndpointSlice" => {
            name == db
                || name
                    .strip_prefix(db)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        }
        _ => false,
    }
}

/// Force namespace, atoll's labels and the owner reference.
pub(crate) fn stamp(metadata: &mut Map<String, Value>, owner: &Owner) {
    metadata.insert("namespace".into(), owner.namespace.into());
    let labels = metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if !labels.is_object() {
        *labels = Value::Object(Map::new());
    }
    let labels = labels.as_object_mut().expect("just made an object");
    labels.insert(LABEL_MANAGED_BY.into(), "atoll".into());
    labels.insert(LABEL_DATABASE.into(), owner.name.into());
    labels.insert(LABEL_PLUGIN.into(), owner.plugin.into());
    metadata.insert(
        "ownerReferences".into(),
        json!([{
            "apiVersion": API_VERSION,
            "kind": KIND_DATABASE,
            "name": owner.name,
            "uid": owner.uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }]),
    );
}

/// Set [`ANNOTATION_RENDERED`] to a hash of the object without it.
pub(crate) fn fingerprint(object: &mut Value) {
    use sha2::{Digest as _, Sha256};
    let Some(metadata) = object["metadata"].as_object_mut() else {
        return;
    };
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !annotations.is_object() {
        *annotations = Value::Object(Map::new());
    }
    annotations
        .as_object_mut()
        .expect("just made an object")
        .remove(ANNOTATION_RENDERED);
    let hash = Sha256::digest(object.to_string().as_bytes());
    let value = hex::encode(&hash[..8]);
    object["metadata"]["annotations"][ANNOTATION_RENDERED] = value.into();
}

/// Every partition 1..=partitions bound exactly once, to a rendered Service.
fn check_bindings(
    partitions: u32,
    bindings: &[PartitionBinding],
    services: &BTreeSet<String>,
) -> Result<(), PolicyError> {
    let mut bound = BTreeSet::new();
    for b in bindings {
        if b.partition == 0 || b.partition > partitions {
            return Err(PolicyError::Bindings(format!(
                "partition {} is outside 1..={partitions}",
                b.partition
            )));
        }
        if !bound.insert(b.partition) {
            return Err(PolicyError::Bindings(format!(
                "partition {} is bound twice",
                b.partition
            )));
        }
        if !services.contains(&b.service) {
            return Err(PolicyError::Bindings(format!(
                "partition {} is bound to Service {}, which was not rendered",
                b.partition, b.service
            )));
        }
        if b.port == 0 {
            return Err(PolicyError::Bindings(format!(
                "partition {} has port 0",
                b.partition
            )));
        }
    }
    if bound.len() as u32 != partitions {
        let missing: Vec<u32> = (1..=partitions).filter(|p| !bound.contains(p)).collect();
        return Err(PolicyError::Bindings(format!(
            "partitions {missing:?} are not bound"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
