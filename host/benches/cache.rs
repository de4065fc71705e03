//! Bytes the controller's watch caches hold per child, counted by the
//! allocator: `cargo bench -p atoll --bench cache`.
//!
//! The children are what the API server returned for one converged raft
//! Database (1 partition, 1 cluster, 1 replica: the Databases of the
//! memory benchmark, `scripts/bench-memory.sh`), captured with
//! `kubectl get -o json` into `benches/fixtures/children.json` and renamed
//! for each of 1,000 Databases. Each goes the way a watch event does:
//! decoded from JSON text into an `observe::Child`, applied to its kind's
//! reflector store, indexed by Database.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use atoll::controller::by_database::ByDatabase;
use atoll::controller::observe::{Child, Kind};
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// Audited: forwards to the system allocator unchanged, only counting sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const DATABASES: usize = 1_000;
/// The captured Database's name and uid, replaced in each copy.
const NAME: &str = "m-0001";

fn main() {
    let fixture = include_str!("fixtures/children.json");
    let list: serde_json::Value = serde_json::from_str(fixture).expect("fixture is JSON");
    let objects = list["items"].as_array().expect("a kubectl List");
    let uid = objects[0]["metadata"]["ownerReferences"][0]["uid"]
        .as_str()
        .expect("children are owned by their Database")
        .to_owned();
    // One store and index per kind, as the controller keeps them.
    let mut caches: BTreeMap<String, (Kind, Writer<Child>, ByDatabase)> = BTreeMap::new();
    let mut texts = Vec::new();
    for object in objects {
        let kind = Kind::new(
            object["apiVersion"].as_str().expect("apiVersion"),
            object["kind"].as_str().expect("kind"),
        );
        let name = kind.resource.kind.clone();
        caches.entry(name.clone()).or_insert_with(|| {
            let writer = Writer::new(Arc::clone(&kind.resource));
            (kind, writer, ByDatabase::default())
        });
        texts.push((name, object.to_string()));
    }

    let mut per_kind = BTreeMap::new();
    let mut total = 0isize;
    for (kind, text) in &texts {
        let (_, writer, index) = caches.get_mut(kind).expect("a cache per kind");
        let before = LIVE.load(Ordering::Relaxed);
        for i in 1..=DATABASES {
            let text = text
                .replace(NAME, &format!("m-{i:04}"))
                .replace(&uid, &format!("{i:08}-0000-4000-8000-000000000000"));
            let child: Child = serde_json::from_str(&text).expect("a child decodes");
            index.applied(&child);
            writer.apply_watcher_event(&watcher::Event::Apply(child));
        }
        let bytes = LIVE.load(Ordering::Relaxed) - before;
        total += bytes;
        let entry = per_kind.entry(kind.clone()).or_insert((0, 0isize));
        entry.0 += DATABASES;
        entry.1 += bytes;
    }
    let children = texts.len() * DATABASES;
    println!(
        "watch caches over {DATABASES} Databases ({children} children, {} per Database):",
        texts.len()
    );
    for (kind, (count, bytes)) in &per_kind {
        println!(
            "  {kind:<24} {:>6} bytes per child",
            bytes / *count as isize
        );
    }
    println!(
        "  all                      {:>6} bytes per child; {:.1} MiB in all",
        total / children as isize,
        total as f64 / (1 << 20) as f64
    );
}
