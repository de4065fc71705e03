//! Memoized plugin calls: `render` and `status` are pure functions of their
//! input (the contract requires plugins to be deterministic), so an answer
//! is kept and given again when the same component is called with the same
//! input. A resync, a requeue, or a reconcile triggered by a child whose
//! change does not reach the input, then calls no plugin.
//!
//! The key of a `render` is the SHA-256 of the component's digest and every
//! field of the WIT `database` record the plugin receives (name, namespace,
//! uid, generation, labels, partitions, config text, cluster domain). The
//! generation is part of it because the plugin sees it: a spec edit that
//! changes nothing else costs one call. Host-side steps after the plugin
//! (output policy, `spec.pod`, deletion policy, config checksums) are not
//! memoized: they run on every reconcile, so nothing but the plugin's own
//! answer is reused. The key of a `status` adds the observed objects' JSON
//! text, in the order the plugin receives them.
//!
//! Guarantees: an answer is only reused for the same component digest (a
//! reloaded or different version never sees another's answers); traps,
//! deadlines and memory faults are never memoized (they may pass), the
//! plugin's own answers (objects, `invalid`, `failed`, a status report) are.
//! Memory is bounded: least recently used entries go first once either the
//! entry count or the byte total (the answers' text, deflated: see
//! [`KeptRender`]) is over its bound.
//!
//! Caveat: with more Databases than the bounds hold, a resync (which visits
//! every Database in turn) evicts each entry before it is used again and
//! misses every time; raise the bounds then (see [`Memos::new`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::contract::{Digest, PluginDatabase, PluginRenderError, Rendered, StatusReport};
use crate::sync::MutexExt;

/// A memo key: SHA-256 of the call's identity and input.
pub type Key = [u8; 32];

/// Bytes of rendered text kept by default (deflated, several times smaller):
/// a one-partition raft Database renders ~6 KB of text, so well over 2,500
/// Databases fit.
pub const DEFAULT_RENDER_BYTES: usize = 16 << 20;

/// Status reports kept by default (each a few hundred bytes).
pub const DEFAULT_STATUS_ENTRIES: usize = 16_384;

/// A plugin's answer to `render`.
pub type RenderAnswer = Result<Rendered, PluginRenderError>;

/// The memos of one controller: renders and status reports.
pub struct Memos {
    pub render: Memo<KeptRender>,
    pub status: Memo<StatusReport>,
}

impl Default for Memos {
    fn default() -> Self {
        Memos::new(DEFAULT_RENDER_BYTES, DEFAULT_STATUS_ENTRIES)
    }
}

impl Memos {
    /// Keep at most `render_bytes` of rendered text and `status_entries`
    /// status reports (0 turns either memo off).
    pub fn new(render_bytes: usize, status_entries: usize) -> Self {
        Memos {
            render: Memo::new(usize::MAX, render_bytes),
            status: Memo::new(status_entries, usize::MAX),
        }
    }
}

/// A bounded least-recently-used map from [`Key`] to shared answers.
pub struct Memo<V> {
    inner: Mutex<Lru<V>>,
    max_entries: usize,
    max_bytes: usize,
}

struct Lru<V> {
    entries: HashMap<Key, Entry<V>>,
    /// Last use → key; the first is the next to evict.
    order: BTreeMap<u64, Key>,
    clock: u64,
    bytes: usize,
}

struct Entry<V> {
    value: Arc<V>,
    bytes: usize,
    used: u64,
}

impl<V> Memo<V> {
    /// At most `max_entries` entries and `max_bytes` bytes (as given to
    /// [`Memo::insert`]).
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Memo {
            inner: Mutex::new(Lru {
                entries: HashMap::new(),
                order: BTreeMap::new(),
                clock: 0,
                bytes: 0,
            }),
            max_entries,
            max_bytes,
        }
    }

    /// The answer kept under `key`, now the most recently used.
    pub fn get(&self, key: &Key) -> Option<Arc<V>> {
        let mut lru = self.inner.locked();
        lru.clock += 1;
        let now = lru.clock;
        let entry = lru.entries.get_mut(key)?;
        let before = std::mem::replace(&mut entry.used, now);
        let value = Arc::clone(&entry.value);
        lru.order.remove(&before);
        lru.order.insert(now, *key);
        Some(value)
    }

    /// Keep `value` (`bytes` large) under `key`, evicting the least
    /// recently used entries over the bounds. A value larger than the byte
    /// bound is not kept.
    pub fn insert(&self, key: Key, value: Arc<V>, bytes: usize) {
        if self.max_entries == 0 || bytes > self.max_bytes {
            return;
        }
        let mut lru = self.inner.locked();
        lru.clock += 1;
        let now = lru.clock;
        if let Some(old) = lru.entries.insert(
            key,
            Entry {
                value,
                bytes,
                used: now,
            },
        ) {
            lru.order.remove(&old.used);
            lru.bytes -= old.bytes;
        }
        lru.order.insert(now, key);
        lru.bytes += bytes;
        while lru.entries.len() > self.max_entries || lru.bytes > self.max_bytes {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            if let Some(gone) = lru.entries.remove(&oldest) {
                lru.bytes -= gone.bytes;
            }
        }
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.inner.locked().entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes kept (as given to [`Memo::insert`]).
    pub fn bytes(&self) -> usize {
        self.inner.locked().bytes
    }
}

/// Feeds length-prefixed fields into SHA-256, so no two different inputs
/// give the same byte stream.
struct KeyHasher(Sha256);

impl KeyHasher {
    fn new(function: &str, digest: Digest) -> Self {
        let mut h = KeyHasher(Sha256::new());
        h.field(function.as_bytes());
        h.field(&digest.0);
        h
    }

    fn field(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn database(&mut self, db: &PluginDatabase) {
        self.field(db.name.as_bytes());
        self.field(db.namespace.as_bytes());
        self.field(db.uid.as_bytes());
        self.field(&db.generation.to_le_bytes());
        self.field(&(db.labels.len() as u64).to_le_bytes());
        for (k, v) in &db.labels {
            self.field(k.as_bytes());
            self.field(v.as_bytes());
        }
        self.field(&db.partitions.to_le_bytes());
        self.field(db.config.as_bytes());
        self.field(db.cluster_domain.as_bytes());
    }

    fn finish(self) -> Key {
        self.0.finalize().into()
    }
}

/// The key of `render(db)` on the component with `digest`.
pub fn render_key(digest: Digest, db: &PluginDatabase) -> Key {
    let mut h = KeyHasher::new("render", digest);
    h.database(db);
    h.finish()
}

/// The key of `status(db, observed)` on the component with `digest`.
pub fn status_key(digest: Digest, db: &PluginDatabase, observed: &[String]) -> Key {
    let mut h = KeyHasher::new("status", digest);
    h.database(db);
    h.field(&(observed.len() as u64).to_le_bytes());
    for object in observed {
        h.field(object.as_bytes());
    }
    h.finish()
}

/// A render answer as the memo keeps it: the objects' JSON text deflated
/// together, each preceded by its length (a few times smaller; a hit parses
/// the objects anyway, and inflating them costs a fraction of that).
pub struct KeptRender {
    objects: Box<[u8]>,
    rest: Result<Vec<crate::contract::PartitionBinding>, PluginRenderError>,
}

impl KeptRender {
    /// `answer`, deflated.
    pub fn keep(answer: &RenderAnswer) -> Self {
        use std::io::Write as _;
        let Ok(rendered) = answer else {
            return KeptRender {
                objects: Box::default(),
                rest: answer.as_ref().map(|_| Vec::new()).map_err(Clone::clone),
            };
        };
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        let deflated = rendered
            .objects
            .iter()
            .try_for_each(|o| {
                encoder.write_all(&(o.len() as u64).to_le_bytes())?;
                encoder.write_all(o.as_bytes())
            })
            .and_then(|()| encoder.finish())
            .expect("deflating into memory cannot fail");
        KeptRender {
            objects: deflated.into_boxed_slice(),
            rest: Ok(rendered.partitions.clone()),
        }
    }

    /// The answer kept.
    ///
    /// # Errors
    /// The plugin's own refusal, as it answered.
    pub fn answer(&self) -> RenderAnswer {
        use std::io::Read as _;
        let partitions = self.rest.clone()?;
        let mut bytes = Vec::new();
        flate2::read::DeflateDecoder::new(&self.objects[..])
            .read_to_end(&mut bytes)
            .expect("a kept render is what we deflated");
        let mut objects = Vec::new();
        let mut rest = &bytes[..];
        while let Some((len, tail)) = rest.split_first_chunk::<8>() {
            let (object, tail) = tail.split_at(u64::from_le_bytes(*len) as usize);
            objects.push(String::from_utf8_lossy(object).into_owned());
            rest = tail;
        }
        Ok(Rendered {
            objects,
            partitions,
        })
    }

    /// What it weighs in the memo: the deflated text and the bindings.
    pub fn bytes(&self) -> usize {
        const OVERHEAD: usize = 64;
        self.objects.len()
            + match &self.rest {
                Ok(bindings) => bindings.iter().map(|b| b.service.len() + OVERHEAD).sum(),
                Err(PluginRenderError::Invalid(v)) => v
                    .iter()
                    .map(|v| v.field.len() + v.message.len() + OVERHEAD)
                    .sum(),
                Err(PluginRenderError::Failed(message)) => message.len() + OVERHEAD,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(generation: i64, config: &str) -> PluginDatabase {
        PluginDatabase {
            name: "orders".into(),
            namespace: "shop".into(),
            uid: "u1".into(),
            generation,
            labels: vec![("team".into(), "a".into())],
            partitions: 3,
            config: config.into(),
            cluster_domain: "cluster.local".into(),
        }
    }

    #[test]
    fn keys_differ_by_component_and_by_every_input_field() {
        let (a, b) = (Digest([1; 32]), Digest([2; 32]));
        let base = render_key(a, &db(1, "{}"));
        assert_eq!(base, render_key(a, &db(1, "{}")), "deterministic");
        assert_ne!(base, render_key(b, &db(1, "{}")), "another component");
        assert_ne!(base, render_key(a, &db(2, "{}")), "generation");
        assert_ne!(base, render_key(a, &db(1, "{\"a\":1}")), "config");
        let mut labelled = db(1, "{}");
        labelled.labels.push(("x".into(), String::new()));
        assert_ne!(base, render_key(a, &labelled), "labels");
        // Length prefixes: moving a byte between fields changes the key.
        let mut shifted = db(1, "{}");
        shifted.name = "order".into();
        shifted.namespace = "sshop".into();
        assert_ne!(base, render_key(a, &shifted));
        let observed = ["{\"kind\":\"Service\"}".to_string()];
        assert_ne!(
            status_key(a, &db(1, "{}"), &observed),
            status_key(a, &db(1, "{}"), &[])
        );
        assert_ne!(
            status_key(a, &db(1, "{}"), &[]),
            base,
            "status is not render"
        );
    }

    #[test]
    fn least_recently_used_goes_first_when_over_either_bound() {
        let memo: Memo<u32> = Memo::new(3, 100);
        for i in 0..3u8 {
            memo.insert([i; 32], Arc::new(u32::from(i)), 10);
        }
        assert_eq!(
            memo.get(&[0; 32]).as_deref(),
            Some(&0),
            "0 is now the newest"
        );
        memo.insert([3; 32], Arc::new(3), 10);
        assert!(
            memo.get(&[1; 32]).is_none(),
            "1 was the least recently used"
        );
        assert_eq!(memo.len(), 3);
        // 95 bytes push out 0, 2 and 3 (30 + 95 > 100, then 20 + 95, 10 + 95).
        memo.insert([4; 32], Arc::new(4), 95);
        assert_eq!((memo.len(), memo.bytes()), (1, 95));
        assert_eq!(memo.get(&[4; 32]).as_deref(), Some(&4));
        memo.insert([5; 32], Arc::new(5), 101);
        assert!(
            memo.get(&[5; 32]).is_none(),
            "larger than the bound: not kept"
        );
        // Replacing an entry does not count its bytes twice.
        memo.insert([4; 32], Arc::new(40), 50);
        assert_eq!((memo.len(), memo.bytes()), (1, 50));
        let off: Memo<u32> = Memo::new(0, 100);
        off.insert([0; 32], Arc::new(0), 1);
        assert!(off.is_empty());
    }

    #[test]
    fn a_kept_render_gives_back_the_same_answer_in_fewer_bytes() {
        use crate::contract::{PartitionBinding, Placement, Violation};
        let object = |i: usize| {
            format!(
                r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"orders-p{i}","labels":{{"app":"é\n"}}}},"spec":{{"ports":[{{"name":"api","port":5678}}]}}}}"#
            )
        };
        let rendered = Rendered {
            objects: (1..=32).map(object).chain([String::new()]).collect(),
            partitions: vec![PartitionBinding {
                partition: 1,
                service: "orders-p1".into(),
                port: 5678,
                placement: Placement::Nowhere,
            }],
        };
        let text: usize = rendered.objects.iter().map(String::len).sum();
        let kept = KeptRender::keep(&Ok(rendered.clone()));
        let back = kept.answer().unwrap();
        assert_eq!(back.objects, rendered.objects);
        assert_eq!(back.partitions.len(), 1);
        assert_eq!(back.partitions[0].service, "orders-p1");
        assert!(kept.bytes() < text / 4, "{} of {text} bytes", kept.bytes());
        let invalid = Err(PluginRenderError::Invalid(vec![Violation {
            field: "spec.partitions".into(),
            message: "must be at least 1".into(),
        }]));
        let kept = KeptRender::keep(&invalid);
        assert!(
            matches!(kept.answer(), Err(PluginRenderError::Invalid(v)) if v[0].field == "spec.partitions")
        );
    }
}
