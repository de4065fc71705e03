//! Getting a Database's children to the rendered state: observe what atoll
//! owns, server-side apply what drifted, prune what is no longer rendered.
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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::policy::LABEL_DATABASE;

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

/// The children of every Database as the controller's watches see them: one
/// store per kind (objects labelled `app.kubernetes.io/managed-by=atoll`,
/// managedFields stripped). Lets a reconcile observe without a request.
pub type Children = [(Kind, Store<DynamicObject>)];

/// Children atoll wrote (applied, or wrote the status of) whose watch event
/// has not reached the cache yet, keyed by kind, namespace and name. A
/// reconcile right after a write (the next one is often triggered by that
/// very write) would otherwise see the old object and write it again.
#[derive(Default)]
pub struct Written(Mutex<HashMap<(String, String, String), Arc<DynamicObject>>>);

impl Written {
    /// Remember the API server's answer to a write.
    pub fn record(&self, kind: &str, mut object: DynamicObject) {
        object.managed_fields_mut().clear();
        let key = (
            kind.to_string(),
            object.namespace().unwrap_or_default(),
            object.name_any(),
        );
        self.0.lock().unwrap().insert(key, Arc::new(object));
    }

    /// Forget `(kind, namespace, name)` (deleted by atoll).
    pub fn forget(&self, kind: &str, namespace: &str, name: &str) {
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        self.0.lock().unwrap().remove(&key);
    }

    /// The cache now holds `object` (or its deletion): drop a write it
    /// supersedes.
    pub fn seen(&self, kind: &str, object: &DynamicObject) {
        let mut written = self.0.lock().unwrap();
        if written.is_empty() {
            return;
        }
        let key = (
            kind.to_string(),
            object.namespace().unwrap_or_default(),
            object.name_any(),
        );
        if written
            .get(&key)
            .is_some_and(|w| !newer(w, object.resource_version().as_deref()))
        {
            written.remove(&key);
        }
    }

    /// Written objects of `kind` in `namespace` matching `filter`.
    fn matching(
        &self,
        kind: &str,
        namespace: &str,
        filter: impl Fn(&DynamicObject) -> bool,
    ) -> Vec<Arc<DynamicObject>> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|((k, ns, _), o)| k == kind && ns == namespace && filter(o))
            .map(|(_, o)| Arc::clone(o))
            .collect()
    }
}

/// Whether `written` is newer than an object at `cached` resourceVersion.
/// resourceVersions are etcd revisions: integers that only grow.
fn newer(written: &DynamicObject, cached: Option<&str>) -> bool {
    let rv = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok());
    match (rv(written.metadata.resource_version.as_deref()), rv(cached)) {
        (Some(w), Some(c)) => w > c,
        (Some(_), None) => true,
        _ => false,
    }
}

/// The children of Database `name` (uid `uid`) in `namespace` from the
/// watch caches (or atoll's own newer writes), keyed by kind and name; same
/// result as [`observe`] as of the last watch event.
pub fn observe_cached(
    children: &Children,
    written: &Written,
    namespace: &str,
    name: &str,
    uid: &str,
) -> BTreeMap<Key, Live> {
    let mut live = BTreeMap::new();
    let ours = |o: &DynamicObject| {
        o.metadata.namespace.as_deref() == Some(namespace)
            && o.labels().get(LABEL_DATABASE).map(String::as_str) == Some(name)
            && o.owner_references()
                .iter()
                .any(|r| r.controller == Some(true) && r.uid == uid)
    };
    for (kind, store) in children {
        // Writes first: one the cache catches up with in between is then
        // found in the cache rather than missed in both.
        let writes = written.matching(&kind.resource.kind, namespace, ours);
        let mut objects: BTreeMap<String, Arc<DynamicObject>> = store
            .state_filter(ours)
            .into_iter()
            .map(|o| (o.name_any(), o))
            .collect();
        for w in writes {
            let cached = objects.get(&w.name_any());
            if newer(
                &w,
                cached.and_then(|c| c.metadata.resource_version.as_deref()),
            ) {
                objects.insert(w.name_any(), w);
            }
        }
        for object in objects.into_values() {
            live.insert(
                (kind.resource.kind.clone(), object.name_any()),
                Live {
                    kind: kind.clone(),
                    object: to_value(kind, &object),
                },
            );
        }
    }
    live
}

/// `object` as JSON with its apiVersion and kind (list and watch items may
/// come without them; plugins need them).
fn to_value(kind: &Kind, object: &DynamicObject) -> Value {
    let mut value = serde_json::to_value(object).expect("a listed object serialises");
    if let Value::Object(map) = &mut value {
        map.insert(
            "apiVersion".into(),
            Value::String(kind.resource.api_version.clone()),
        );
        map.insert("kind".into(), Value::String(kind.resource.kind.clone()));
    }
    value
}

/// List the children of Database `name` (uid `uid`) in `namespace`, across
/// `kinds`, keyed by kind and name. For reconciles outside a running
/// controller (no watch caches).
pub async fn observe(
    client: &Client,
    namespace: &str,
    name: &str,
    uid: &str,
    kinds: &[Kind],
) -> Result<BTreeMap<Key, Live>, kube::Error> {
    let params = ListParams::default().labels(&format!("{LABEL_DATABASE}={name}"));
    let mut live = BTreeMap::new();
    for kind in kinds {
        for object in kind.api(client, namespace).list(&params).await? {
            let owned = object
                .owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid);
            if !owned {
                continue;
            }
            live.insert(
                (kind.resource.kind.clone(), object.name_any()),
                Live {
                    kind: kind.clone(),
                    object: to_value(kind, &object),
                },
            );
        }
    }
    Ok(live)
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
