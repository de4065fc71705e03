//! An index of the watch caches by Database: the names of each kind's
//! cached children by namespace and `atoll.dev/database` label, so a
//! reconcile finds its own children in time proportional to their number,
//! not to every child of every Database (a scan per reconcile made a resync
//! over N Databases cost N² work).
//!
//! Guarantee: every cached child labelled with a Database is indexed under
//! it once its watch event was handled. Caveat: a name may outlive its
//! object after a relist (the index is rebuilt from the store then); readers
//! look each name up in the store and skip what is gone.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::reflector::Store;

use super::observe::Child;
use crate::sync::MutexExt;

/// Names of one kind's cached children, by `(namespace, database)`.
#[derive(Debug, Default)]
pub struct ByDatabase(Mutex<HashMap<(String, String), Names>>);

/// A Database's children of one kind are a few names: a sorted vector
/// (a `BTreeSet` node is over 250 bytes however few they are).
#[derive(Debug, Default)]
struct Names(Vec<Box<str>>);

impl Names {
    fn insert(&mut self, name: &str) {
        if let Err(at) = self.0.binary_search_by(|n| (**n).cmp(name)) {
            self.0.insert(at, name.into());
        }
    }

    fn remove(&mut self, name: &str) {
        if let Ok(at) = self.0.binary_search_by(|n| (**n).cmp(name)) {
            self.0.remove(at);
        }
    }
}

fn key(object: &Child) -> Option<(String, String)> {
    Some((
        object.metadata.namespace.clone()?,
        object.database()?.to_string(),
    ))
}

impl ByDatabase {
    /// `object` was added or changed.
    pub fn applied(&self, object: &Child) {
        if let Some(key) = key(object) {
            self.0
                .locked()
                .entry(key)
                .or_default()
                .insert(&object.name_any());
        }
    }

    /// `object` was deleted.
    pub fn deleted(&self, object: &Child) {
        let Some(key) = key(object) else {
            return;
        };
        let mut index = self.0.locked();
        if let Some(names) = index.get_mut(&key) {
            names.remove(&object.name_any());
            if names.0.is_empty() {
                index.remove(&key);
            }
        }
    }

    /// Rebuild from `store` (after a relist replaced its contents).
    pub fn rebuild(&self, store: &Store<Child>) {
        let mut index: HashMap<(String, String), Names> = HashMap::new();
        for object in store.state() {
            if let Some(key) = key(&object) {
                index.entry(key).or_default().insert(&object.name_any());
            }
        }
        *self.0.locked() = index;
    }

    /// Names indexed under Database `database` in `namespace`.
    pub fn names(&self, namespace: &str, database: &str) -> Vec<String> {
        self.0
            .locked()
            .get(&(namespace.to_string(), database.to_string()))
            .map(|names| names.0.iter().map(|n| n.to_string()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LABEL_DATABASE;
    use serde_json::json;

    fn child(namespace: &str, database: &str, name: &str) -> Child {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": namespace,
            "labels": {LABEL_DATABASE: database}}}))
        .unwrap()
    }

    #[test]
    fn names_by_namespace_and_database_follow_applies_and_deletes() {
        let index = ByDatabase::default();
        index.applied(&child("a", "db", "db-2"));
        index.applied(&child("a", "db", "db-1"));
        index.applied(&child("a", "db", "db-2"));
        index.applied(&child("b", "db", "db-1"));
        index.applied(&child("a", "other", "other-1"));
        assert_eq!(index.names("a", "db"), ["db-1", "db-2"]);
        assert_eq!(index.names("b", "db"), ["db-1"]);
        index.deleted(&child("a", "db", "db-1"));
        assert_eq!(index.names("a", "db"), ["db-2"]);
        index.deleted(&child("a", "db", "db-2"));
        assert!(index.names("a", "db").is_empty());
        assert!(index.0.locked().get(&("a".into(), "db".into())).is_none());
        let unlabelled: Child =
            serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "a"}})).unwrap();
        index.applied(&unlabelled);
        assert_eq!(index.0.locked().len(), 2);
    }
}
