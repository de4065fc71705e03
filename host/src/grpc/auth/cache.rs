//! A small bounded cache whose entries expire: what authentication and
//! authorization remember between calls.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::sync::MutexExt;

/// At most `capacity` entries, each valid for the time it was inserted
/// with. When full, the oldest insertion goes first (expired entries are
/// dropped as they are met). Lookups and inserts are O(1) amortised.
pub struct TtlCache<K, V> {
    capacity: usize,
    inner: std::sync::Mutex<Inner<K, V>>,
}

struct Inner<K, V> {
    entries: HashMap<K, (Instant, V)>,
    /// Insertion order, for eviction; may hold keys already replaced.
    order: VecDeque<(K, Instant)>,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            capacity: capacity.max(1),
            inner: std::sync::Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// The value of `key` if it has not expired at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let mut inner = self.inner.locked();
        match inner.entries.get(key) {
            Some((expires, value)) if *expires > now => Some(value.clone()),
            Some(_) => {
                inner.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remember `value` for `key` until `now + ttl`.
    pub fn insert(&self, key: K, value: V, ttl: Duration, now: Instant) {
        let expires = now + ttl;
        let mut inner = self.inner.locked();
        while inner.entries.len() >= self.capacity && !inner.entries.contains_key(&key) {
            let Some((old, at)) = inner.order.pop_front() else {
                break;
            };
            // Only evict the entry this order slot was written for.
            if inner.entries.get(&old).is_some_and(|(e, _)| *e == at) {
                inner.entries.remove(&old);
            }
        }
        inner.entries.insert(key.clone(), (expires, value));
        inner.order.push_back((key, expires));
        // Replaced keys leave stale slots behind; keep the queue bounded.
        if inner.order.len() > 2 * self.capacity {
            let Inner { entries, order } = &mut *inner;
            order.retain(|(k, at)| entries.get(k).is_some_and(|(e, _)| e == at));
        }
    }

    /// Entries held (expired ones included until met).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.locked().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_oldest_goes_first() {
        let cache = TtlCache::new(2);
        let t0 = Instant::now();
        let long = Duration::from_secs(60);
        cache.insert("a", 1, Duration::from_secs(1), t0);
        assert_eq!(cache.get(&"a", t0), Some(1));
        assert_eq!(
            cache.get(&"a", t0 + Duration::from_secs(2)),
            None,
            "expired"
        );

        cache.insert("a", 1, long, t0);
        cache.insert("b", 2, long, t0);
        cache.insert("c", 3, long, t0);
        assert_eq!(cache.len(), 2, "bounded");
        assert_eq!(cache.get(&"a", t0), None, "the oldest was evicted");
        assert_eq!(
            (cache.get(&"b", t0), cache.get(&"c", t0)),
            (Some(2), Some(3))
        );
    }

    #[test]
    fn replacing_a_key_does_not_evict_it_early_or_grow_the_queue() {
        let cache = TtlCache::new(2);
        let t0 = Instant::now();
        let long = Duration::from_secs(60);
        for i in 0..100 {
            cache.insert("a", i, long, t0 + Duration::from_millis(i));
        }
        cache.insert("b", 0, long, t0);
        assert_eq!(cache.get(&"a", t0), Some(99));
        assert!(cache.inner.locked().order.len() <= 4);
    }
}
