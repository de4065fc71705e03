//! Children atoll wrote (applied, or wrote the status of) whose watch event
//! has not reached the cache yet. A reconcile right after a write (the next
//! one is often triggered by that very write) would otherwise see the old
//! object and write it again.
//!
//! Kept per Database (kind, namespace, Database name): a reconcile reads only
//! its own Database's writes, so what it costs does not grow with the number
//! of Databases. A write is forgotten once the cache holds the object at its
//! resourceVersion or later: when the watch event arrives
//! ([`Written::seen`]), or, if that event came before the write's answer was
//! recorded (under load it does), at the Database's next read
//! ([`Written::newer_than`]). Before that second path such writes stayed
//! forever, and every reconcile scanned all of them: at 10,000 Databases,
//! two thirds of atoll's CPU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::api::DynamicObject;

use super::observe::Child;
use crate::sync::MutexExt;

/// Kind, namespace and Database name.
type Bucket = (String, String, String);

fn bucket(kind: &str, namespace: &str, database: &str) -> Bucket {
    (kind.into(), namespace.into(), database.into())
}

/// atoll's writes the caches have not caught up with, by Database.
#[derive(Default)]
pub struct Written(Mutex<HashMap<Bucket, HashMap<String, Arc<Child>>>>);

impl Written {
    /// Remember the API server's answer to a write. An object without the
    /// `atoll.dev/database` label is no Database's child (observing never
    /// returns it): nothing to remember.
    pub fn record(&self, kind: &str, object: DynamicObject) {
        let object = Child::from_dynamic(object);
        let (Some(namespace), Some(database)) = (object.namespace(), object.database()) else {
            return;
        };
        let bucket = bucket(kind, &namespace, database);
        self.0
            .locked()
            .entry(bucket)
            .or_default()
            .insert(object.name_any(), Arc::new(object));
    }

    /// Forget child `name` of `database` (deleted by atoll).
    pub fn forget(&self, kind: &str, namespace: &str, database: &str, name: &str) {
        let mut written = self.0.locked();
        let bucket = bucket(kind, namespace, database);
        if let Some(names) = written.get_mut(&bucket) {
            names.remove(name);
            if names.is_empty() {
                written.remove(&bucket);
            }
        }
    }

    /// The cache now holds `object` (or its deletion): drop a write it
    /// supersedes.
    pub fn seen(&self, kind: &str, object: &Child) {
        let mut written = self.0.locked();
        if written.is_empty() {
            return;
        }
        let (Some(namespace), Some(database)) = (object.namespace(), object.database()) else {
            return;
        };
        let bucket = bucket(kind, &namespace, database);
        if let Some(names) = written.get_mut(&bucket) {
            let name = object.name_any();
            let cached = object.resource_version();
            if names
                .get(&name)
                .is_some_and(|w| !newer(w, cached.as_deref()))
            {
                names.remove(&name);
            }
            if names.is_empty() {
                written.remove(&bucket);
            }
        }
    }

    /// The writes of `kind` to children of `database` in `namespace` that are
    /// newer than the cache (`cached`: the resourceVersion the cache holds
    /// for a name); the others are forgotten here.
    pub fn newer_than(
        &self,
        kind: &str,
        namespace: &str,
        database: &str,
        cached: impl Fn(&str) -> Option<String>,
    ) -> Vec<Arc<Child>> {
        let mut written = self.0.locked();
        let bucket = bucket(kind, namespace, database);
        let Some(names) = written.get_mut(&bucket) else {
            return Vec::new();
        };
        names.retain(|name, w| newer(w, cached(name).as_deref()));
        let newer: Vec<Arc<Child>> = names.values().cloned().collect();
        if names.is_empty() {
            written.remove(&bucket);
        }
        newer
    }

    /// How many writes are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.locked().values().map(HashMap::len).sum()
    }

    /// Whether none is.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.0.locked().is_empty()
    }
}

/// Whether `written` is newer than an object at `cached` resourceVersion.
/// resourceVersions are etcd revisions: integers that only grow.
pub fn newer(written: &Child, cached: Option<&str>) -> bool {
    let rv = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok());
    match (rv(written.metadata.resource_version.as_deref()), rv(cached)) {
        (Some(w), Some(c)) => w > c,
        (Some(_), None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(db: &str, name: &str, rv: u64) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv.to_string(),
                "labels": {"atoll.dev/database": db}},
        }))
        .unwrap()
    }

    fn child(db: &str, name: &str, rv: u64) -> Child {
        Child::from_dynamic(object(db, name, rv))
    }

    fn names(writes: &[Arc<Child>]) -> Vec<String> {
        let mut names: Vec<String> = writes.iter().map(|w| w.name_any()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_read_returns_its_own_databases_writes_newer_than_the_cache() {
        let written = Written::default();
        written.record("Service", object("a", "a-0", 7));
        written.record("Service", object("a", "a-1", 8));
        written.record("Service", object("b", "b-0", 9));
        written.record("ConfigMap", object("a", "a-0", 10));
        // The cache holds a-0 at 5 (older) and a-1 at 8 (caught up).
        let cached = |name: &str| match name {
            "a-0" => Some("5".to_string()),
            "a-1" => Some("8".to_string()),
            _ => None,
        };
        let writes = written.newer_than("Service", "ns", "a", cached);
        assert_eq!(names(&writes), ["a-0"]);
        // a-1 is forgotten; b's Service and a's ConfigMap are untouched.
        assert_eq!(written.len(), 3);
        assert_eq!(
            names(&written.newer_than("Service", "ns", "b", |_| None)),
            ["b-0"]
        );
        assert!(
            written
                .newer_than("Service", "other", "a", |_| None)
                .is_empty()
        );
    }

    #[test]
    fn a_write_whose_event_came_first_is_forgotten_at_the_next_read() {
        let written = Written::default();
        // The watch event (rv 5) arrives before the write's answer is
        // recorded: `seen` finds nothing to drop.
        written.seen("Service", &child("a", "a-0", 5));
        written.record("Service", object("a", "a-0", 5));
        assert_eq!(written.len(), 1);
        // The next read finds the cache at the same revision.
        let writes = written.newer_than("Service", "ns", "a", |_| Some("5".into()));
        assert!(writes.is_empty());
        assert!(written.is_empty(), "the stale write is gone");
    }

    #[test]
    fn the_watch_event_forgets_a_write_and_so_does_a_delete() {
        let written = Written::default();
        written.record("Service", object("a", "a-0", 7));
        written.record("Service", object("a", "a-1", 7));
        written.seen("Service", &child("a", "a-0", 6));
        assert_eq!(written.len(), 2, "an older event supersedes nothing");
        written.seen("Service", &child("a", "a-0", 7));
        assert_eq!(written.len(), 1);
        written.forget("Service", "ns", "a", "a-1");
        assert!(written.is_empty());
    }

    #[test]
    fn an_object_without_the_database_label_is_not_kept() {
        let written = Written::default();
        let mut unlabelled = object("a", "x", 3);
        unlabelled.metadata.labels = None;
        written.record("Service", unlabelled);
        assert!(written.is_empty());
    }
}
