//! Hot reload at scale, on the local control plane: create N raft Databases
//! (default 200, 3 partitions each), wait until all are Ready, then load a new
//! raft release from a ConfigMap and time, per Database, from the ConfigMap
//! create until every one of its children carries the new release's label.
//!
//! ```sh
//! cargo xtask cluster up && export KUBECONFIG=...
//! cargo bench -p atoll-e2e --features observe-by-listing --bench hot_reload   # ATOLL_BENCH_DATABASES=N to change N
//! ```
//!
//! Prints the time to converge, then p50, p99 and max of the reload latency,
//! with API requests per Database and API server CPU for both phases. The
//! controller runs in this process (release build), like `atoll run`.
//!
//! Runs twice, interleaved in one run, each in a fresh namespace:
//! `list` (every reconcile lists its children, as before the caches) and
//! `cache` (children observed from the controller's watch caches).
//! `ATOLL_BENCH_MODES=cache` runs one mode only.

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use atoll::api::Database;
use atoll_e2e::Operator;
use atoll_testenv::{TestNamespace, client};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

const LABELLED: &str = env!("ATOLL_TEST_RAFT_LABELLED_WASM");
const RELEASE: &str = "atoll.dev/test-release=labelled";

fn database(i: usize) -> Database {
    atoll_e2e::raft_database(&format!("db-{i:04}"), 1)
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("ATOLL_BENCH_DATABASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "atoll::plugin::source=info".into()),
        )
        .init();
    let modes = std::env::var("ATOLL_BENCH_MODES").unwrap_or_else(|_| "list,cache".into());
    for mode in modes.split(',') {
        let listing = match mode {
            "list" => true,
            "cache" => false,
            other => panic!("unknown mode {other:?}: list or cache"),
        };
        println!("mode {mode}:");
        scenario(count, listing).await;
    }
}

async fn scenario(count: usize, listing: bool) {
    let client = client().await;
    let ns = TestNamespace::new(&client, "bench-reload").await;
    let n = ns.name().to_string();
    let operator = Operator::start_with_plugin_source_opts(&client, &n, listing).await;
    let dbs: Api<Database> = Api::namespaced(client.clone(), &n);

    let api_before = support::ApiSnapshot::take().await;
    let started = Instant::now();
    support::create_and_wait_ready(&dbs, count, database).await;
    let converge = started.elapsed();
    let (requests, reads, writes, cpu) = support::ApiSnapshot::take().await.since(&api_before);
    println!(
        "  converge: {count} raft Databases x 3 partitions Ready in {:.1}s; API requests per Database {:.1} (reads {:.1}, writes {:.1}, all clients); API server CPU {:.1}s",
        converge.as_secs_f64(),
        requests as f64 / count as f64,
        reads as f64 / count as f64,
        writes as f64 / count as f64,
        cpu.as_secs_f64(),
    );

    // Children per Database, to know when each is fully re-applied.
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=atoll");
    let mut children: HashMap<String, usize> = HashMap::new();
    for names in [
        names_by_db(
            &Api::<StatefulSet>::namespaced(client.clone(), &n),
            &managed,
        )
        .await,
        names_by_db(&Api::<Service>::namespaced(client.clone(), &n), &managed).await,
        names_by_db(&Api::<ConfigMap>::namespaced(client.clone(), &n), &managed).await,
    ] {
        for db in names {
            *children.entry(db).or_default() += 1;
        }
    }

    // Watch for the new release's label before loading it.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let config = watcher::Config::default().labels(RELEASE);
    spawn_watch(
        Api::<StatefulSet>::namespaced(client.clone(), &n),
        &config,
        &seen_tx,
    );
    spawn_watch(
        Api::<Service>::namespaced(client.clone(), &n),
        &config,
        &seen_tx,
    );
    spawn_watch(
        Api::<ConfigMap>::namespaced(client.clone(), &n),
        &config,
        &seen_tx,
    );

    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("raft-next".into());
    cm.metadata.labels = Some([("atoll.dev/plugin".to_string(), "raft".to_string())].into());
    cm.binary_data = Some(
        [(
            "plugin.wasm".to_string(),
            ByteString(std::fs::read(LABELLED).unwrap()),
        )]
        .into(),
    );
    let reload_before = support::ApiSnapshot::take().await;
    let t0 = Instant::now();
    Api::<ConfigMap>::namespaced(client.clone(), &n)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();

    let mut labelled: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
    let mut seen_objects = std::collections::HashSet::new();
    let mut done = 0;
    let deadline = tokio::time::sleep(Duration::from_secs(300));
    tokio::pin!(deadline);
    while done < children.len() {
        tokio::select! {
            Some((db, object)) = seen_rx.recv() => {
                if !seen_objects.insert(object) { continue; }
                let entry = labelled.entry(db.clone()).or_insert((0, Duration::ZERO));
                entry.0 += 1;
                entry.1 = t0.elapsed();
                if Some(&entry.0) == children.get(&db) { done += 1; }
            }
            _ = &mut deadline => panic!("only {done} of {} Databases re-applied in 300s", children.len()),
        }
    }
    let (requests, reads, writes, cpu) = support::ApiSnapshot::take().await.since(&reload_before);
    let mut latencies: Vec<Duration> = labelled.values().map(|(_, t)| *t).collect();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "  hot reload: ConfigMap create -> {} Databases re-applied: p50 {:.0}ms, p99 {:.0}ms, max {:.0}ms",
        latencies.len(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );
    println!(
        "  hot reload: API requests per Database {:.1} (reads {:.1}, writes {:.1}); API server CPU {:.1}s",
        requests as f64 / count as f64,
        reads as f64 / count as f64,
        writes as f64 / count as f64,
        cpu.as_secs_f64(),
    );

    operator.stop().await;
    ns.cleanup().await;
    support::wait_namespace_gone(&client, &n).await;
}

/// The `atoll.dev/database` label of every listed object.
async fn names_by_db<K>(api: &Api<K>, params: &ListParams) -> Vec<String>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(params)
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|o| o.labels().get("atoll.dev/database").cloned())
        .collect()
}

/// Send `(database, kind/name)` for every object the watch shows.
fn spawn_watch<K>(
    api: Api<K>,
    config: &watcher::Config,
    tx: &tokio::sync::mpsc::UnboundedSender<(String, String)>,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let tx = tx.clone();
    let stream = watcher(api, config.clone()).applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(object)) = stream.next().await {
            if let Some(db) = object.labels().get("atoll.dev/database") {
                let key = format!("{}/{}", K::kind(&()), object.name_any());
                let _ = tx.send((db.clone(), key));
            }
        }
    });
}
