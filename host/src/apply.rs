//! Getting a Database's children to the rendered state: server-side apply
//! what drifted from the render, prune what is no longer rendered (what
//! exists comes from [`crate::observe`]).
//!
//! Guarantees:
//! - Only objects labelled `atoll.dev/database=<db>` whose controller owner
//!   reference is this Database's uid are ever observed, updated or deleted.
//! - An object is applied only when it is missing or differs from what was
//!   rendered (every rendered field present with the rendered value), so a
//!   reconcile of an unchanged Database sends no write request.
//! - Applies use field manager `atoll` and force ownership of the fields atoll
//!   renders: hand edits to those fields are reverted.
//!
//! Caveat: the API server normalises some values (e.g. CPU `0.5` becomes
//! `500m`); a plugin rendering a non-canonical form is re-applied on every
//! reconcile (harmless, but not free).

use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::Value;

/// The field manager atoll applies with.
pub const FIELD_MANAGER: &str = "atoll";

/// `(kind, name)` of an object.
pub type Key = (String, String);

/// A kind atoll manages, resolved for the dynamic API.
#[derive(Debug, Clone)]
pub struct Kind {
    pub resource: ApiResource,
}

impl Kind {
    /// From `apiVersion` and `kind` (regular plurals: every kind atoll allows
    /// pluralises by rule).
    pub fn new(api_version: &str, kind: &str) -> Self {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        Kind {
            resource: ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind)),
        }
    }

    fn api(&self, client: &Client, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), namespace, &self.resource)
    }
}

/// One observed child.
#[derive(Debug, Clone)]
pub struct Live {
    pub kind: Kind,
    pub object: Value,
}

/// `(kind, name)` of a rendered object (the output policy checked both exist).
pub fn key(object: &Value) -> Key {
    (
        object["kind"].as_str().unwrap_or_default().to_string(),
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Whether `live` holds every field of `desired` with the same value.
/// Arrays must match element-wise (same length); extra fields in `live`
/// (defaults, status, metadata the server adds) are ignored.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| contains(lv, dv)) || dv.is_null()),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv))
        }
        (Value::Number(l), Value::Number(d)) => l.as_f64() == d.as_f64(),
        (l, d) => l == d,
    }
}

/// Server-side apply `object` (field manager `atoll`, forced); returns the
/// object as the API server stored it.
pub async fn apply(
    client: &Client,
    namespace: &str,
    object: &Value,
) -> Result<DynamicObject, kube::Error> {
    let kind = Kind::new(
        object["apiVersion"].as_str().unwrap_or_default(),
        object["kind"].as_str().unwrap_or_default(),
    );
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    kind.api(client, namespace)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
}

/// Delete a child (background propagation: its own dependents, such as a
/// StatefulSet's pods, go with it).
pub async fn delete(client: &Client, namespace: &str, live: &Live) -> Result<(), kube::Error> {
    let name = live.object["metadata"]["name"].as_str().unwrap_or_default();
    match live
        .kind
        .api(client, namespace)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn live_with_server_defaults_contains_the_rendered_object() {
        let desired = json!({"spec": {"replicas": 3, "template": {"ports": [{"port": 5678}]}}});
        let live = json!({"spec": {"replicas": 3, "revisionHistoryLimit": 10,
            "template": {"ports": [{"port": 5678, "protocol": "TCP"}]}}, "status": {}});
        assert!(contains(&live, &desired));
    }

    #[test]
    fn changed_missing_or_extra_elements_are_drift() {
        let desired = json!({"spec": {"replicas": 3, "ports": [{"port": 1}]}});
        assert!(!contains(
            &json!({"spec": {"replicas": 1, "ports": [{"port": 1}]}}),
            &desired
        ));
        assert!(!contains(
            &json!({"spec": {"ports": [{"port": 1}]}}),
            &desired
        ));
        assert!(!contains(
            &json!({"spec": {"replicas": 3, "ports": [{"port": 1}, {"port": 2}]}}),
            &desired
        ));
    }

    #[test]
    fn kinds_resolve_to_their_resources() {
        let k = Kind::new("policy/v1", "PodDisruptionBudget");
        assert_eq!(k.resource.plural, "poddisruptionbudgets");
        assert_eq!(k.resource.group, "policy");
        let k = Kind::new("v1", "Service");
        assert_eq!(
            (k.resource.group.as_str(), k.resource.plural.as_str()),
            ("", "services")
        );
    }
}
