//! StoragePlugin records on the real control plane. StoragePlugins are
//! cluster-scoped: the built-ins' records are shared by every test process,
//! so one test touches them (sequentially); failure records use unique names
//! and are deleted afterwards. "Writes nothing" is checked with the API
//! server's own request counter, so each test here holds
//! [`atoll_e2e::plugin_records_exclusive`]: no other test of the process
//! makes atoll write StoragePlugins meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;

use atoll::api::{self, StoragePlugin};
use atoll::plugin::records::{self as plugin_records, Failure};
use atoll::plugin::{Limits, Registry, Runtime, Source};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const BUILTINS: [&str; 5] = ["cache", "log", "primary-backup", "raft", "redis"];

/// Write requests the API server has served on StoragePlugins (and their
/// status), from its `apiserver_request_total` metric.
async fn writes() -> u64 {
    let out = atoll_testenv::kubectl(&["get", "--raw", "/metrics"], None).await;
    assert!(out.success, "{}", out.stderr);
    out.stdout
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains(r#"resource="storageplugins""#))
        .filter(|l| {
            ["POST", "PUT", "PATCH", "APPLY", "DELETE"]
                .iter()
                .any(|verb| l.contains(&format!(r#"verb="{verb}""#)))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn setup() -> (Client, Api<StoragePlugin>) {
    let client = atoll_testenv::client().await;
    atoll_testenv::install_crds(&client, api::crds()).await;
    let api = Api::all(client.clone());
    (client, api)
}

fn registry() -> Registry {
    Registry::with_builtins(Arc::new(Runtime::new(Limits::default()).unwrap())).unwrap()
}

/// The record as raw JSON (to see which fields exist at all).
async fn raw(api: &Api<StoragePlugin>, name: &str) -> Value {
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

async fn versions(api: &Api<StoragePlugin>, names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        out.push(api.get(name).await.unwrap().resource_version().unwrap());
    }
    out
}

#[tokio::test]
async fn builtins_are_published_loaded_and_written_only_on_change() {
    let _records = atoll_e2e::plugin_records_exclusive().await;
    let (client, api) = setup().await;
    let registry = registry();
    let counts = BTreeMap::from([("raft".to_owned(), 2), ("cache".to_owned(), 1)]);
    plugin_records::publish(&client, &registry, &counts)
        .await
        .unwrap();

    for entry in registry.entries() {
        let meta = entry.plugin.metadata();
        let record = api.get(&meta.name).await.unwrap();
        assert_eq!(
            record.status.as_ref().map(|s| s.description.as_str()),
            Some(meta.description.as_str()),
            "{}",
            meta.name
        );
        assert_eq!(
            record.labels().get("app.kubernetes.io/managed-by"),
            Some(&"atoll".to_owned())
        );
        let status = record.status.clone().expect("a status");
        assert_eq!(status.state, "Loaded", "{}", meta.name);
        assert_eq!(status.source, "built-in");
        assert_eq!(status.version, meta.version);
        assert_eq!(status.digest, entry.plugin.digest().to_string());
        assert!(status.digest.starts_with("sha256:") && status.digest.len() == 71);
        assert_eq!(status.last_error, None);
        assert_eq!(
            status.databases,
            counts.get(&meta.name).copied().unwrap_or(0)
        );
        let managers: Vec<_> = record
            .managed_fields()
            .iter()
            .filter_map(|m| m.manager.clone())
            .collect();
        assert!(managers.iter().any(|m| m == "atoll"), "{managers:?}");
    }
    let names: Vec<String> = registry
        .entries()
        .iter()
        .map(|e| e.plugin.metadata().name.clone())
        .collect();
    assert_eq!(names, BUILTINS);

    // Steady state: publishing the same thing again writes nothing.
    let before = versions(&api, &BUILTINS).await;
    let sent = writes().await;
    plugin_records::publish(&client, &registry, &counts)
        .await
        .unwrap();
    assert_eq!(writes().await, sent, "an unchanged publish sent writes");
    assert_eq!(versions(&api, &BUILTINS).await, before);

    // A changed count rewrites that record's status only.
    let counts = BTreeMap::from([("raft".to_owned(), 3), ("cache".to_owned(), 1)]);
    let sent = writes().await;
    plugin_records::publish(&client, &registry, &counts)
        .await
        .unwrap();
    assert_eq!(writes().await, sent + 1, "one status write expected");
    let after = versions(&api, &BUILTINS).await;
    for (i, name) in BUILTINS.iter().enumerate() {
        assert_eq!(after[i] != before[i], *name == "raft", "{name}");
    }
    assert_eq!(api.get("raft").await.unwrap().status.unwrap().databases, 3);

    // A hand edit of the status is put right by the next publish.
    api.patch_status(
        "log",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "state": "Bogus", "version": "9.9.9" } })),
    )
    .await
    .unwrap();
    plugin_records::publish(&client, &registry, &counts)
        .await
        .unwrap();
    let log = api.get("log").await.unwrap().status.unwrap();
    assert_eq!(log.state, "Loaded");
    assert_eq!(log.version, registry.get("log").unwrap().metadata().version);

    // A failed update of a loaded plugin shows while the failure is passed on,
    // with the version that still serves; it clears once it is not.
    let failures = BTreeMap::from([(
        "cache".to_owned(),
        Failure {
            source: Source::ConfigMap {
                namespace: "plugins".into(),
                name: "cache".into(),
            },
            error: "not a component".into(),
        },
    )]);
    plugin_records::publish_with_failures(&client, &registry, &counts, &failures)
        .await
        .unwrap();
    let cache = api.get("cache").await.unwrap().status.unwrap();
    assert_eq!(cache.state, "Failed");
    assert_eq!(cache.last_error.as_deref(), Some("not a component"));
    assert_eq!(cache.source, "configmap/plugins/cache");
    assert_eq!(
        cache.digest,
        registry.get("cache").unwrap().digest().to_string()
    );
    assert_eq!(cache.databases, 1);
    let sent = writes().await;
    plugin_records::publish_with_failures(&client, &registry, &counts, &failures)
        .await
        .unwrap();
    assert_eq!(writes().await, sent, "an unchanged failure sent writes");

    plugin_records::publish(&client, &registry, &counts)
        .await
        .unwrap();
    let cache = raw(&api, "cache").await;
    assert_eq!(cache["status"]["state"], "Loaded");
    assert_eq!(cache["status"]["source"], "built-in");
    assert!(
        cache["status"].get("lastError").is_none(),
        "lastError survived a successful load: {}",
        cache["status"]
    );

    // Leave the shared records as a fresh publish with no Databases would.
    plugin_records::publish(&client, &registry, &BTreeMap::new())
        .await
        .unwrap();
}

#[tokio::test]
async fn failures_of_unknown_plugins_are_recorded_and_updated() {
    let _records = atoll_e2e::plugin_records_exclusive().await;
    let (client, api) = setup().await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("test-broken-{nanos:08x}");
    let source = Source::ConfigMap {
        namespace: "plugins".into(),
        name: "broken".into(),
    };

    plugin_records::publish_failure(&client, &name, &source, "wrong world: no export `render`")
        .await
        .unwrap();
    let record = raw(&api, &name).await;
    assert_eq!(
        record["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "atoll"
    );
    assert_eq!(
        record["status"],
        json!({
            "source": "configmap/plugins/broken",
            "version": "",
            "digest": "",
            "state": "Failed",
            "lastError": "wrong world: no export `render`",
            "databases": 0,
        })
    );
    let rv = record["metadata"]["resourceVersion"].clone();

    // The same failure again: no write.
    let sent = writes().await;
    plugin_records::publish_failure(&client, &name, &source, "wrong world: no export `render`")
        .await
        .unwrap();
    assert_eq!(writes().await, sent, "an unchanged failure sent writes");
    assert_eq!(raw(&api, &name).await["metadata"]["resourceVersion"], rv);

    // A different error replaces the last one; the rest is kept.
    plugin_records::publish_failure(&client, &name, &source, "memory limit")
        .await
        .unwrap();
    let record = raw(&api, &name).await;
    assert_ne!(record["metadata"]["resourceVersion"], rv);
    assert_eq!(record["status"]["lastError"], "memory limit");
    assert_eq!(record["status"]["state"], "Failed");

    // Failures passed to publish_with_failures get records too, next to the registry's.
    let registry = Registry::new(Arc::new(Runtime::new(Limits::default()).unwrap()));
    let failures = BTreeMap::from([(
        name.clone(),
        Failure {
            source: source.clone(),
            error: "timeout".into(),
        },
    )]);
    plugin_records::publish_with_failures(&client, &registry, &BTreeMap::new(), &failures)
        .await
        .unwrap();
    assert_eq!(raw(&api, &name).await["status"]["lastError"], "timeout");

    api.delete(&name, &DeleteParams::default()).await.unwrap();
}
