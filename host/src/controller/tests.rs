//! Reconcile scenarios against the in-memory API ([`super::fixtures`]), with
//! the real built-in plugins: what one reconcile writes, keeps and refuses.
//! Each scenario's expectations are written out by hand (object names from
//! the raft plugin's documented layout), not derived from the code under
//! test.

use std::sync::{Arc, OnceLock};

use http::Method;
use serde_json::{Value, json};

use super::fixtures::{FakeApi, Seen};
use super::{Context, reconcile};
use crate::api::Database;
use crate::plugin::{Limits, Registry, Runtime};
use crate::policy::OutputPolicy;
use crate::render::Renderer;

const NS: &str = "shop";
const UID: &str = "5e1f0c2a-0000-4000-8000-000000000001";

/// The built-ins, compiled once for every scenario.
fn renderer() -> Arc<Renderer> {
    static RENDERER: OnceLock<Arc<Renderer>> = OnceLock::new();
    Arc::clone(RENDERER.get_or_init(|| {
        let runtime = Arc::new(Runtime::new(Limits::default()).expect("engine"));
        Arc::new(Renderer {
            registry: Arc::new(Registry::with_builtins(runtime).expect("built-ins load")),
            policy: OutputPolicy::default(),
            cluster_domain: "cluster.local".into(),
        })
    }))
}

/// A raft Database `db` with `partitions` on one cluster of one replica.
fn database(partitions: u32, replicas: u32) -> Database {
    serde_json::from_value(json!({
        "apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
        "metadata": {"name": "db", "namespace": NS, "uid": UID, "generation": 1,
            "resourceVersion": "1"},
        "spec": {"partitions": partitions, "storage": {"plugin": "raft",
            "config": {"clusters": 1, "replicas": replicas}}},
    }))
    .expect("a Database")
}

/// The Database as stored by the fake (with the status atoll wrote).
fn stored(api: &FakeApi, db: &Database) -> Database {
    let mut db = db.clone();
    if let Some(stored) = api.get("databases", NS, "db") {
        db.status = serde_json::from_value(stored["status"].clone()).expect("a status");
        db.metadata.resource_version = stored["metadata"]["resourceVersion"]
            .as_str()
            .map(String::from);
    }
    db
}

async fn run(api: &FakeApi, db: &Database) {
    let ctx = Arc::new(Context::new(api.client(), renderer()));
    reconcile(Arc::new(db.clone()), ctx)
        .await
        .expect("the reconcile finishes");
}

fn writes(api: &FakeApi) -> Vec<Seen> {
    api.seen().into_iter().filter(Seen::is_write).collect()
}

/// `(METHOD, last two path segments)` of each write, sorted.
fn summary(seen: &[Seen]) -> Vec<String> {
    let mut out: Vec<String> = seen
        .iter()
        .map(|s| {
            let tail: Vec<&str> = s.path.rsplit('/').take(2).collect();
            format!("{} {}/{}", s.method, tail[1], tail[0])
        })
        .collect();
    out.sort();
    out
}

fn condition(api: &FakeApi, type_: &str) -> Value {
    let db = api.get("databases", NS, "db").expect("status written");
    db["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or_default()
}

/// A Database the fake holds, as the user created it.
fn seed(api: &FakeApi, db: &Database) {
    api.put("databases", serde_json::to_value(db).expect("json"));
}

/// `database(3, 1)` created and reconciled once; the requests seen so far
/// are forgotten, and the Database is returned as stored (with status).
async fn converged() -> (FakeApi, Database) {
    let api = FakeApi::default();
    let db = database(3, 1);
    seed(&api, &db);
    run(&api, &db).await;
    api.clear_seen();
    let db = stored(&api, &db);
    (api, db)
}

#[tokio::test]
async fn create_applies_every_rendered_child_and_writes_status() {
    let api = FakeApi::default();
    let db = database(3, 1);
    seed(&api, &db);
    run(&api, &db).await;

    let mut children = api.names(NS);
    children.retain(|(plural, _)| plural != "databases");
    let expected = [
        ("configmaps", "db-1"),
        // The partition-group Service and its EndpointSlice (discovery).
        ("endpointslices", "db"),
        ("partitions", "db-1"),
        ("partitions", "db-2"),
        ("partitions", "db-3"),
        ("services", "db"),
        ("services", "db-1-hs"),
        ("services", "db-p1"),
        ("services", "db-p2"),
        ("services", "db-p3"),
        ("statefulsets", "db-1"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(p, n)| (p.to_string(), n.to_string()))
        .collect();
    assert_eq!(children, expected);
    let patches: Vec<Seen> = writes(&api)
        .into_iter()
        .filter(|w| w.method == Method::PATCH)
        .collect();
    // 11 children, 3 Partition statuses and the Database status.
    assert_eq!(patches.len(), 15, "{:?}", summary(&patches));
    for w in &patches {
        assert!(w.query.contains("fieldManager=atoll"), "{w:?}");
        assert!(w.query.contains("force=true"), "{w:?}");
    }
    let sts = api.get("statefulsets", NS, "db-1").expect("applied");
    assert_eq!(
        sts["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "atoll"
    );
    assert_eq!(sts["metadata"]["ownerReferences"][0]["uid"], UID);
    assert_eq!(sts["metadata"]["ownerReferences"][0]["controller"], true);
    // Volumes outlive the Database by default; scale-downs keep claims.
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    // No pod is ready (nothing runs them here): honest status.
    assert_eq!(condition(&api, "Ready")["status"], "False");
    assert_eq!(condition(&api, "Ready")["reason"], "PartitionsNotReady");
    assert_eq!(condition(&api, "Degraded")["status"], "False");
    let partition = api.get("partitions", NS, "db-2").expect("a Partition");
    assert_eq!(
        partition["status"]["endpoints"][0],
        "db-p2.shop.svc.cluster.local:5678"
    );
}

#[tokio::test]
async fn an_unchanged_database_sends_no_write() {
    let (api, db) = converged().await;
    run(&api, &db).await;
    assert_eq!(summary(&writes(&api)), Vec::<String>::new());
    assert!(
        !api.seen().is_empty(),
        "the reconcile observed (listed) children"
    );
}

#[tokio::test]
async fn drift_is_restored_and_nothing_else_is_written() {
    let (api, db) = converged().await;
    let mut sts = api.get("statefulsets", NS, "db-1").expect("applied");
    let rendered = sts["spec"]["replicas"].clone();
    sts["spec"]["replicas"] = json!(7);
    api.put("statefulsets", sts);
    run(&api, &db).await;
    assert_eq!(summary(&writes(&api)), ["PATCH statefulsets/db-1"]);
    let sts = api.get("statefulsets", NS, "db-1").expect("kept");
    assert_eq!(sts["spec"]["replicas"], rendered);
    assert_eq!(rendered, json!(1));
}

#[tokio::test]
async fn owned_children_no_longer_rendered_are_pruned_and_others_kept() {
    let (api, db) = converged().await;
    let child = |name: &str, uid: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NS,
                "labels": {"app.kubernetes.io/managed-by": "atoll", "atoll.dev/database": "db"},
                "ownerReferences": [{"apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
                    "name": "db", "uid": uid, "controller": true}]},
            "data": {"k": "v"}})
    };
    api.put("configmaps", child("db-stale", UID));
    // Same labels, another owner (a Database of the same name, recreated):
    // not this Database's, so never touched.
    api.put("configmaps", child("db-foreign", "another-uid"));
    run(&api, &db).await;
    assert_eq!(summary(&writes(&api)), ["DELETE configmaps/db-stale"]);
    assert!(api.get("configmaps", NS, "db-foreign").is_some());
}

#[tokio::test]
async fn fewer_partitions_are_refused_and_nothing_is_deleted() {
    let (api, db) = converged().await;
    let mut fewer = db;
    fewer.spec.partitions = 2;
    fewer.metadata.generation = Some(2);
    run(&api, &fewer).await;

    let writes = writes(&api);
    assert!(
        writes.iter().all(|w| w.method != Method::DELETE),
        "{writes:?}"
    );
    assert_eq!(summary(&writes), ["PATCH db/status", "POST shop/events"]);
    assert!(api.get("partitions", NS, "db-3").is_some());
    let degraded = condition(&api, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "DataLossRefused");
    assert!(
        degraded["message"]
            .as_str()
            .is_some_and(|m| m.contains("Partition db-3") && m.contains("allow-data-loss")),
        "{degraded}"
    );
    let event = &writes
        .iter()
        .find(|w| w.method == Method::POST)
        .and_then(|w| w.body.clone())
        .expect("an Event");
    assert_eq!(event["reason"], "DataLossRefused");
    assert_eq!(event["type"], "Warning");
}

#[tokio::test]
async fn an_invalid_spec_degrades_and_touches_no_child() {
    let api = FakeApi::default();
    let db = database(3, 4);
    seed(&api, &db);
    run(&api, &db).await;
    assert_eq!(
        summary(&writes(&api)),
        ["PATCH db/status", "POST shop/events"]
    );
    let degraded = condition(&api, "Degraded");
    assert_eq!(degraded["reason"], "InvalidSpec");
    assert!(
        degraded["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.storage.config.replicas")),
        "{degraded}"
    );

    // The same problem again: status unchanged, so no write and no Event.
    api.clear_seen();
    run(&api, &stored(&api, &db)).await;
    assert_eq!(summary(&writes(&api)), Vec::<String>::new());
}

#[tokio::test]
async fn an_unknown_plugin_names_what_is_available() {
    let api = FakeApi::default();
    let mut db = database(3, 1);
    db.spec.storage.plugin = "cassandra".into();
    seed(&api, &db);
    run(&api, &db).await;
    let degraded = condition(&api, "Degraded");
    assert_eq!(degraded["reason"], "UnknownPlugin");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cassandra") && message.contains("raft"),
        "{message}"
    );
    assert!(api.names(NS).iter().all(|(p, _)| p == "databases"));
}

#[tokio::test]
async fn an_approval_lets_exactly_its_generation_through() {
    let (api, db) = converged().await;
    let annotate = |db: &mut Database, value: &str| {
        db.metadata
            .annotations
            .get_or_insert_default()
            .insert("atoll.dev/allow-data-loss".into(), value.into());
    };
    let mut fewer = db;
    fewer.spec.partitions = 2;
    fewer.metadata.generation = Some(2);
    annotate(&mut fewer, "true");
    run(&api, &fewer).await;
    let message = condition(&api, "Degraded")["message"].clone();
    let message = message.as_str().unwrap_or_default();
    assert!(
        message.contains("\"true\", which approves nothing"),
        "{message}"
    );
    assert!(
        message.contains(
            "kubectl annotate database db -n shop atoll.dev/allow-data-loss=2 --overwrite"
        ),
        "{message}"
    );
    assert!(api.get("partitions", NS, "db-3").is_some());

    annotate(&mut fewer, "2");
    api.clear_seen();
    run(&api, &fewer).await;
    assert!(summary(&writes(&api)).contains(&"DELETE partitions/db-3".to_string()));
    assert!(api.get("partitions", NS, "db-3").is_none());
    assert_eq!(condition(&api, "Degraded")["status"], "False");

    // The next change that loses data is guarded again.
    let mut fewest = stored(&api, &fewer);
    fewest.spec.partitions = 1;
    fewest.metadata.generation = Some(3);
    api.clear_seen();
    run(&api, &fewest).await;
    assert!(
        summary(&writes(&api))
            .iter()
            .all(|w| !w.starts_with("DELETE"))
    );
    assert!(api.get("partitions", NS, "db-2").is_some());
    assert_eq!(condition(&api, "Degraded")["reason"], "DataLossRefused");
}

#[tokio::test]
async fn a_name_taken_by_someone_else_is_never_adopted() {
    let api = FakeApi::default();
    let precious = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "db-1", "namespace": NS},
        "data": {"mine": "do not touch"}});
    api.put("configmaps", precious.clone());
    let other = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db-p2", "namespace": NS,
            "ownerReferences": [{"apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
                "name": "db-p", "uid": "other-uid", "controller": true}]}});
    api.put("services", other);
    let db = database(3, 1);
    seed(&api, &db);
    run(&api, &db).await;

    assert_eq!(
        summary(&writes(&api)),
        ["PATCH db/status", "POST shop/events"]
    );
    let kept = api.get("configmaps", NS, "db-1").expect("kept");
    assert_eq!(kept["data"], precious["data"]);
    assert!(kept["metadata"]["ownerReferences"].is_null());
    let degraded = condition(&api, "Degraded");
    assert_eq!(degraded["reason"], "NameConflict");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("ConfigMap db-1 already exists (created outside atoll)"),
        "{message}"
    );
    assert!(
        message.contains("Service db-p2 already exists (controlled by Database db-p)"),
        "{message}"
    );
}

#[tokio::test]
async fn a_new_plugin_version_that_drops_a_child_prunes_nothing_until_approved() {
    let (api, db) = converged().await;
    // What an older version of the plugin rendered and this one no longer
    // does: a ConfigMap owned by the Database, last converged by "v0".
    api.put(
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "db-legacy", "namespace": NS,
                "labels": {"app.kubernetes.io/managed-by": "atoll", "atoll.dev/database": "db"},
                "ownerReferences": [{"apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
                    "name": "db", "uid": UID, "controller": true}]}}),
    );
    let mut db = db;
    let status = db.status.as_mut().expect("status");
    let plugin = status.plugin.as_mut().expect("plugin");
    let serving = plugin.digest.clone();
    plugin.digest = "sha256:0ld".into();
    plugin.version = "0.0.9".into();
    run(&api, &db).await;

    assert!(api.get("configmaps", NS, "db-legacy").is_some());
    let degraded = condition(&api, "Degraded");
    assert_eq!(degraded["reason"], "PruneRefused");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no longer renders ConfigMap db-legacy"),
        "{message}"
    );
    assert!(message.contains("raft 0.0.9 (sha256:0ld)"), "{message}");
    // The plugin that last converged it is still the one on record.
    let stored_plugin = api.get("databases", NS, "db").expect("db")["status"]["plugin"].clone();
    assert_eq!(stored_plugin["digest"], "sha256:0ld");

    // Approved for this generation: pruned, and the new version recorded.
    let mut approved = stored(&api, &db);
    approved
        .metadata
        .annotations
        .get_or_insert_default()
        .insert("atoll.dev/allow-data-loss".into(), "1".into());
    run(&api, &approved).await;
    assert!(api.get("configmaps", NS, "db-legacy").is_none());
    let stored_plugin = api.get("databases", NS, "db").expect("db")["status"]["plugin"].clone();
    assert_eq!(stored_plugin["digest"], json!(serving));
}

mod day2;
mod discovery;
mod memo;
mod moves;

/// The StoragePlugin publisher counts Databases in the controller's cache
/// instead of listing them all, but only once the cache holds the initial
/// list: counting a cache still filling would publish too few.
#[tokio::test]
async fn the_database_cache_is_offered_only_once_it_holds_the_initial_list() {
    use kube::runtime::watcher::Event;
    let api = FakeApi::default();
    let ctx = Context::new(api.client(), renderer());
    assert!(ctx.databases().is_none(), "no controller runs");
    let (reader, mut writer) = kube::runtime::reflector::store::<Database>();
    ctx.set_databases(Some(reader));
    writer.apply_watcher_event(&Event::Init);
    writer.apply_watcher_event(&Event::InitApply(database(1, 1)));
    assert!(
        ctx.databases().is_none(),
        "the initial list is not complete"
    );
    writer.apply_watcher_event(&Event::InitDone);
    let store = ctx.databases().expect("offered once the list is complete");
    let counts = crate::plugin::records::Counts::of(store.state().iter().map(AsRef::as_ref));
    assert_eq!(counts.by_plugin.get("raft"), Some(&1));
    ctx.set_databases(None);
    assert!(ctx.databases().is_none(), "gone with the controller");
}
