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
//! The yardstick, on the same control plane in the same run, before and
//! after the reload: a plain kube client server-side applies the objects a
//! reload writes (every rendered child of every Database, with a changed
//! label, then one write of the Database, as the reload's status write), as
//! many at once as atoll (its reconcile concurrency times
//! `APPLIES_IN_FLIGHT`), timed the same way (until the watches see every
//! child changed). The bench prints atoll's reload time divided by it.
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
use atoll::controller::converge::APPLIES_IN_FLIGHT;
use atoll_e2e::Operator;
use atoll_testenv::{TestNamespace, client};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
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
                .unwrap_or_else(|_| "atoll::plugin::source=info,atoll::plugin::tier=info".into()),
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
        names_by_db(
            &Api::<PodDisruptionBudget>::namespaced(client.clone(), &n),
            &managed,
        )
        .await,
    ] {
        for db in names {
            *children.entry(db).or_default() += 1;
        }
    }

    // The yardstick before the reload: a plain client server-side applies
    // the objects atoll renders, each with a new label value (a real change,
    // as a reload's is), as many at once as atoll would.
    let yard_before = yardstick(&client, &operator, &n, &children, 1).await;

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
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &n);
    let latencies = until_labelled(&client, &n, RELEASE, &children, async {
        cms.create(&PostParams::default(), &cm).await.unwrap();
    })
    .await;
    let (requests, reads, writes, cpu) = support::ApiSnapshot::take().await.since(&reload_before);
    let reload = Latencies::of(latencies);
    println!(
        "  hot reload: ConfigMap create -> {} Databases re-applied: p50 {:.0}ms, p99 {:.0}ms, max {:.0}ms",
        reload.count, reload.p50_ms, reload.p99_ms, reload.max_ms,
    );
    println!(
        "  hot reload: API requests per Database {:.1} (reads {:.1}, writes {:.1}); API server CPU {:.1}s",
        requests as f64 / count as f64,
        reads as f64 / count as f64,
        writes as f64 / count as f64,
        cpu.as_secs_f64(),
    );
    // Let atoll's trailing status writes settle before the second yardstick.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let yard_after = yardstick(&client, &operator, &n, &children, 2).await;
    let (p99, max) = (
        (yard_before.p99_ms + yard_after.p99_ms) / 2.0,
        (yard_before.max_ms + yard_after.max_ms) / 2.0,
    );
    println!(
        "  yardstick (plain client, mean of before and after): p99 {p99:.0}ms, max {max:.0}ms; \
         ratio atoll reload / plain client: p99 {:.2}, max {:.2}",
        reload.p99_ms / p99,
        reload.max_ms / max,
    );

    operator.stop().await;
    ns.cleanup().await;
    support::wait_namespace_gone(&client, &n).await;
}

/// Percentiles of per-Database latencies.
struct Latencies {
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latencies {
    fn of(mut latencies: Vec<Duration>) -> Self {
        latencies.sort();
        let pct = |p: f64| {
            latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)]
                .as_secs_f64()
                * 1e3
        };
        Latencies {
            count: latencies.len(),
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: latencies.last().unwrap().as_secs_f64() * 1e3,
        }
    }
}

/// Run `trigger`, then wait until every child of every Database in
/// `children` carries label `selector`: per Database, the time from the
/// trigger until its last child was seen with it (watches started first).
async fn until_labelled(
    client: &kube::Client,
    n: &str,
    selector: &str,
    children: &HashMap<String, usize>,
    trigger: impl std::future::Future<Output = ()>,
) -> Vec<Duration> {
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let config = watcher::Config::default().labels(selector);
    let watches = [
        spawn_watch(
            Api::<StatefulSet>::namespaced(client.clone(), n),
            &config,
            &seen_tx,
        ),
        spawn_watch(
            Api::<Service>::namespaced(client.clone(), n),
            &config,
            &seen_tx,
        ),
        spawn_watch(
            Api::<ConfigMap>::namespaced(client.clone(), n),
            &config,
            &seen_tx,
        ),
        spawn_watch(
            Api::<PodDisruptionBudget>::namespaced(client.clone(), n),
            &config,
            &seen_tx,
        ),
    ];
    // The watches' initial (empty) lists, before the first write.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    trigger.await;
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
            _ = &mut deadline => panic!("only {done} of {} Databases labelled {selector} in 300s", children.len()),
        }
    }
    watches.iter().for_each(|w| w.abort());
    labelled.values().map(|(_, t)| *t).collect()
}

/// The yardstick: a plain kube client server-side applies, with its own
/// field manager, the objects atoll renders now for every Database (the
/// rendered children, as a reload writes them), each labelled
/// `atoll.dev/yardstick=<round>`, `concurrency` Databases at a time and
/// [`APPLIES_IN_FLIGHT`] applies at a time within one, as atoll's
/// reconciles do. Then, as a reload ends each Database's reconcile with a
/// status write recording the new component, one more write of the
/// Database itself (an annotation, which no render reads), so the plain
/// client writes as many objects per Database as the reload. Timed like a
/// reload: until the watches saw every child with the label. atoll keeps
/// running (its watches see these writes and reconcile, writing nothing:
/// the label and the annotation are not its fields).
async fn yardstick(
    client: &kube::Client,
    operator: &Operator,
    n: &str,
    children: &HashMap<String, usize>,
    round: u32,
) -> Latencies {
    let dbs: Vec<Database> = Api::<Database>::namespaced(client.clone(), n)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let renderer = &operator.ctx.renderer;
    let value = round.to_string();
    let objects: Vec<(String, Vec<serde_json::Value>)> = dbs
        .iter()
        .map(|db| {
            let mut objects = renderer.render(db).unwrap().objects;
            for o in &mut objects {
                o["metadata"]["labels"]["atoll.dev/yardstick"] = value.clone().into();
            }
            (db.name_any(), objects)
        })
        .collect();
    let applies: usize = objects.iter().map(|(_, o)| o.len() + 1).sum();
    let marked = serde_json::json!({
        "apiVersion": atoll::api::API_VERSION,
        "kind": "Database",
        "metadata": {"annotations": {"atoll.dev/yardstick": value}},
    });
    let marked = &marked;
    let concurrency = usize::from(operator.ctx.concurrency);
    let selector = format!("atoll.dev/yardstick={round}");
    let before = support::ApiSnapshot::take().await;
    let latencies = until_labelled(client, n, &selector, children, async {
        futures::stream::iter(objects)
            .for_each_concurrent(concurrency, |(db, objects)| async move {
                futures::stream::iter(objects)
                    .for_each_concurrent(APPLIES_IN_FLIGHT, |o| async move {
                        apply(client, n, &o).await;
                    })
                    .await;
                let mut marked = marked.clone();
                marked["metadata"]["name"] = db.into();
                apply(client, n, &marked).await;
            })
            .await;
    })
    .await;
    let (requests, _, writes, cpu) = support::ApiSnapshot::take().await.since(&before);
    let l = Latencies::of(latencies);
    println!(
        "  yardstick {round}: {applies} applies by a plain client, children and one write of each Database ({concurrency} Databases x {APPLIES_IN_FLIGHT} at once): p50 {:.0}ms, p99 {:.0}ms, max {:.0}ms; API requests per Database {:.1} (writes {:.1}); API server CPU {:.1}s",
        l.p50_ms,
        l.p99_ms,
        l.max_ms,
        requests as f64 / dbs.len() as f64,
        writes as f64 / dbs.len() as f64,
        cpu.as_secs_f64(),
    );
    l
}

/// Server-side apply `object` as field manager `yardstick`, forced.
async fn apply(client: &kube::Client, namespace: &str, object: &serde_json::Value) {
    let (group, version) = object["apiVersion"]
        .as_str()
        .unwrap()
        .split_once('/')
        .unwrap_or(("", object["apiVersion"].as_str().unwrap()));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap());
    let resource = kube::discovery::ApiResource::from_gvk(&gvk);
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &resource);
    api.patch(
        object["metadata"]["name"].as_str().unwrap(),
        &PatchParams::apply("yardstick").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap();
}

/// The `atoll.dev/database` label of every listed object the plugin
/// rendered (not the host's partition-group Service, named after the
/// Database, which carries no plugin label).
async fn names_by_db<K>(api: &Api<K>, params: &ListParams) -> Vec<String>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(params)
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|o| {
            let db = o.labels().get("atoll.dev/database")?;
            (*db != o.name_any()).then(|| db.clone())
        })
        .collect()
}

/// Send `(database, kind/name)` for every object the watch shows.
fn spawn_watch<K>(
    api: Api<K>,
    config: &watcher::Config,
    tx: &tokio::sync::mpsc::UnboundedSender<(String, String)>,
) -> tokio::task::JoinHandle<()>
where
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
    })
}
