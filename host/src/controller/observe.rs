//! What a Database's children look like now: from the controller's watch
//! caches, or by listing when no controller runs (tests, tools).
//!
//! Guarantee: only objects labelled `atoll.dev/database=<db>` whose
//! controller owner reference is this Database's uid are observed.
//!
//! The caches keep each child as a [`Child`]: structured metadata (what
//! reconciles filter on) and the rest as JSON text. A `DynamicObject` holds a
//! `serde_json::Value` tree, several times the size of its text; with
//! thousands of children (a StatefulSet with server defaults is several KB)
//! the trees were most of atoll's memory. A reconcile decodes only its own
//! Database's children, about ten small documents.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{DynamicResourceScope, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::{Deserialize, Deserializer, de::Error as _};
use serde_json::Value;

use super::Context;
use super::by_database::ByDatabase;
use super::written::{Written, newer};
use crate::api::{LABEL_DATABASE, LABEL_RETAINED_FROM};

/// `(kind, name)` of an object.
pub type Key = (String, String);

/// A kind atoll manages, resolved for the dynamic API.
#[derive(Debug, Clone)]
pub struct Kind {
    /// Shared: every key of a watch cache holds one (see [`Child`]).
    pub resource: Arc<ApiResource>,
}

impl Kind {
    /// From `apiVersion` and `kind` (regular plurals: every kind atoll allows
    /// pluralises by rule).
    pub fn new(api_version: &str, kind: &str) -> Self {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        Kind {
            resource: Arc::new(ApiResource::from_gvk(&GroupVersionKind::gvk(
                group, version, kind,
            ))),
        }
    }

    /// The dynamic API of this kind in `namespace`.
    pub fn api(&self, client: &Client, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), namespace, &*self.resource)
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

/// A child as the watch caches keep it: the whole object as deflated JSON
/// text (without apiVersion, kind and managedFields: never read, often half
/// of an object) and, structured, only the metadata reconciles filter on.
///
/// The caches were most of atoll's heap (jemalloc's profiler over 1,000
/// Databases: 25 MiB of 47 for 6,000 children): labels and annotations as
/// maps were a kilobyte or more per child, and a StatefulSet with server
/// defaults is 4-5 KB of text. Deflated, a child's text is a third to a
/// quarter of that; a reconcile inflates only its own Database's children
/// (about ten, tens of microseconds each). The two labels reconciles filter
/// on are fields, not a map (a `BTreeMap` node is over 500 bytes however few
/// its entries), and a cache key shares its kind ([`Kind::resource`]) rather
/// than copying five strings. `cargo bench -p atoll --bench cache` prints
/// the bytes per child.
///
/// Caveat: `metadata.labels` is empty; [`Child::database`] and
/// [`Child::belongs_to`] read the labels kept.
#[derive(Clone, Debug)]
pub struct Child {
    /// name, namespace, uid, resourceVersion and ownerReferences;
    /// everything else is only in the text.
    pub metadata: ObjectMeta,
    /// The `atoll.dev/database` label.
    database: Option<Box<str>>,
    /// The `atoll.dev/retained-from` label.
    retained_from: Option<Box<str>>,
    /// The object but apiVersion and kind: JSON, deflated.
    deflated: Box<[u8]>,
}

/// `text`, deflated (fast level: a cache fills from watch events).
fn deflate(text: &str) -> Box<[u8]> {
    use std::io::Write as _;
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder
        .write_all(text.as_bytes())
        .and_then(|()| encoder.finish())
        .expect("deflating into memory cannot fail")
        .into_boxed_slice()
}

impl Child {
    /// From the object's fields but apiVersion and kind (`metadata`
    /// included, managedFields already gone).
    fn new(metadata: &ObjectMeta, object: &Value) -> Self {
        let label = |key: &str| Some(metadata.labels.as_ref()?.get(key)?.as_str().into());
        Child {
            metadata: ObjectMeta {
                name: metadata.name.clone(),
                namespace: metadata.namespace.clone(),
                uid: metadata.uid.clone(),
                resource_version: metadata.resource_version.clone(),
                owner_references: metadata.owner_references.clone(),
                ..ObjectMeta::default()
            },
            database: label(LABEL_DATABASE),
            retained_from: label(LABEL_RETAINED_FROM),
            deflated: deflate(&object.to_string()),
        }
    }

    /// The Database this child is labelled with (`atoll.dev/database`).
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// [`belongs_to`] for a cached child.
    pub fn belongs_to(&self, uid: &str) -> bool {
        owned_or_retained(&self.metadata, self.retained_from.as_deref(), uid)
    }

    /// From the API server's answer to a write.
    pub fn from_dynamic(object: DynamicObject) -> Self {
        let mut metadata = object.metadata;
        metadata.managed_fields = None;
        let mut fields = object.data;
        if let Value::Object(map) = &mut fields {
            map.insert(
                "metadata".into(),
                serde_json::to_value(&metadata).expect("ObjectMeta serialises"),
            );
        }
        Child::new(&metadata, &fields)
    }

    /// The whole object as JSON, with the apiVersion and kind of `kind`
    /// (list and watch items may come without them; plugins need them).
    pub fn to_value(&self, kind: &Kind) -> Value {
        use std::io::Read as _;
        let mut text = String::new();
        flate2::read::DeflateDecoder::new(&self.deflated[..])
            .read_to_string(&mut text)
            .expect("a cached child is text we deflated");
        let mut value: Value = serde_json::from_str(&text).expect("a cached child is JSON");
        if let Value::Object(map) = &mut value {
            map.insert(
                "apiVersion".into(),
                Value::String(kind.resource.api_version.clone()),
            );
            map.insert("kind".into(), Value::String(kind.resource.kind.clone()));
        }
        value
    }
}

impl<'de> Deserialize<'de> for Child {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut value = Value::deserialize(deserializer)?;
        let map = value
            .as_object_mut()
            .ok_or_else(|| D::Error::custom("a Kubernetes object is a JSON object"))?;
        map.remove("apiVersion");
        map.remove("kind");
        let metadata = match map.get_mut("metadata") {
            Some(Value::Object(m)) => {
                m.remove("managedFields");
                ObjectMeta::deserialize(&map["metadata"]).map_err(D::Error::custom)?
            }
            _ => {
                map.insert("metadata".into(), Value::Object(Default::default()));
                ObjectMeta::default()
            }
        };
        Ok(Child::new(&metadata, &value))
    }
}

impl Resource for Child {
    type DynamicType = Arc<ApiResource>;
    type Scope = DynamicResourceScope;

    fn group(dt: &Arc<ApiResource>) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &Arc<ApiResource>) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn kind(dt: &Arc<ApiResource>) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn api_version(dt: &Arc<ApiResource>) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &Arc<ApiResource>) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The children of every Database as the controller's watches see them: one
/// store per kind (objects labelled `app.kubernetes.io/managed-by=atoll`),
/// with its index by Database. Lets a reconcile observe without a request.
pub type Children = [(Kind, Store<Child>, Arc<ByDatabase>)];

/// Whether an object is the child of the Database with `uid`: its controller
/// owner reference, or (a claim kept under `deletionPolicy: Retain`, which
/// has no owner reference) its `atoll.dev/retained-from` label.
pub fn belongs_to(metadata: &ObjectMeta, uid: &str) -> bool {
    let retained = metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_RETAINED_FROM));
    owned_or_retained(metadata, retained.map(String::as_str), uid)
}

fn owned_or_retained(metadata: &ObjectMeta, retained_from: Option<&str>, uid: &str) -> bool {
    let owned = metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid);
    owned || retained_from == Some(uid)
}

/// The children of Database `name` (uid `uid`) in `namespace`: from the
/// watch caches while the controller runs, else by listing each kind.
///
/// # Errors
/// Only when listing (no caches): the API server's error.
pub async fn children(
    ctx: &Context,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<BTreeMap<Key, Live>, kube::Error> {
    match ctx.caches() {
        Some(caches) => Ok(observe_cached(&caches, &ctx.written, namespace, name, uid)),
        None => observe(&ctx.client, namespace, name, uid, &ctx.kinds).await,
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
    let ours = |o: &Child| {
        o.metadata.namespace.as_deref() == Some(namespace)
            && o.database() == Some(name)
            && o.belongs_to(uid)
    };
    for (kind, store, index) in children {
        let cached =
            |n: &str| store.get(&ObjectRef::new_with(n, kind.resource.clone()).within(namespace));
        // Writes first: one the cache catches up with in between is then
        // found in the cache rather than missed in both.
        let writes = written.newer_than(&kind.resource.kind, namespace, name, |n| {
            cached(n)?.resource_version()
        });
        let mut objects: BTreeMap<String, Arc<Child>> = index
            .names(namespace, name)
            .into_iter()
            .filter_map(|n| cached(&n))
            .filter(|o| ours(o))
            .map(|o| (o.name_any(), o))
            .collect();
        for w in writes.into_iter().filter(|w| ours(w)) {
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
                    object: object.to_value(kind),
                },
            );
        }
    }
    live
}

/// List the children of Database `name` (uid `uid`) in `namespace`, across
/// `kinds`, keyed by kind and name. For reconciles outside a running
/// controller (no watch caches).
///
/// # Errors
/// The API server refused a LIST.
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
        let api: Api<Child> = Api::namespaced_with(client.clone(), namespace, &kind.resource);
        for object in api.list(&params).await? {
            if !object.belongs_to(uid) {
                continue;
            }
            live.insert(
                (kind.resource.kind.clone(), object.name_any()),
                Live {
                    kind: kind.clone(),
                    object: object.to_value(kind),
                },
            );
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_child_round_trips_without_managed_fields() {
        let object = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db-raft", "namespace": "ns", "resourceVersion": "7",
                "labels": {"atoll.dev/database": "db", "app.kubernetes.io/name": "raft"},
                "annotations": {"atoll.dev/config-checksum": "abc"},
                "ownerReferences": [{"apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
                    "name": "db", "uid": "u1", "controller": true}],
                "managedFields": [{"manager": "atoll", "operation": "Apply"}]},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "raft"}]}}},
            "status": {"readyReplicas": 2}
        });
        let child: Child = serde_json::from_value(object.clone()).unwrap();
        let kind = Kind::new("apps/v1", "StatefulSet");
        let mut expected = object;
        expected["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert_eq!(child.to_value(&kind), expected);
        assert_eq!(child.resource_version().as_deref(), Some("7"));
        // Structured, only what reconciles filter on; the text keeps the rest.
        assert_eq!(child.database(), Some("db"));
        assert!(child.metadata.labels.is_none() && child.metadata.annotations.is_none());
        assert!(child.belongs_to("u1") && !child.belongs_to("u2"));
        // A claim kept under `deletionPolicy: Retain` has no owner, a label.
        let kept: Child = serde_json::from_value(json!({"metadata": {"name": "data-0",
            "labels": {"atoll.dev/retained-from": "u1"}}}))
        .unwrap();
        assert!(kept.belongs_to("u1") && !kept.belongs_to("u2") && kept.database().is_none());
        // A write's answer is kept the same way.
        let written = Child::from_dynamic(serde_json::from_value(expected.clone()).unwrap());
        assert_eq!(written.to_value(&kind), expected);
        assert_eq!(written.metadata, child.metadata);
    }

    #[test]
    fn only_a_newer_write_supersedes_the_cache() {
        let child = |rv: &str| {
            serde_json::from_value::<Child>(
                json!({"metadata": {"name": "a", "resourceVersion": rv}}),
            )
            .unwrap()
        };
        assert!(newer(&child("10"), Some("9")));
        assert!(!newer(&child("9"), Some("9")));
        assert!(newer(&child("1"), None));
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
