//! Shared by the operator tests: an in-process controller scoped to one test
//! namespace, and helpers to apply examples and wait for conditions.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use atoll::api::{self, Database};
use atoll::controller::{self, Context};
use atoll::policy::OutputPolicy;
use atoll::registry::Registry;
use atoll::render::Renderer;
use atoll::runtime::{Limits, Runtime};
use atoll_testenv::{kubectl, wait_for};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::Api;

/// Built-ins compiled once per test binary.
pub fn renderer() -> Arc<Renderer> {
    static RENDERER: OnceLock<Arc<Renderer>> = OnceLock::new();
    Arc::clone(RENDERER.get_or_init(|| {
        let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
        Arc::new(Renderer {
            registry: Arc::new(Registry::with_builtins(runtime).unwrap()),
            policy: OutputPolicy::default(),
            cluster_domain: "cluster.local".into(),
        })
    }))
}

/// A controller reconciling only `namespace`, stopped on drop.
pub struct Operator {
    pub ctx: Arc<Context>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    source: Option<tokio::task::JoinHandle<()>>,
}

impl Operator {
    pub async fn start(client: &Client, namespace: &str) -> Self {
        Self::start_with(client, namespace, renderer(), false).await
    }

    /// A controller with its own registry of built-ins that also loads plugin
    /// ConfigMaps from `namespace`, as `atoll run --plugin-namespace` does;
    /// returns once the ConfigMaps present were loaded.
    pub async fn start_with_plugin_source(client: &Client, namespace: &str) -> Self {
        Self::start_with_plugin_source_opts(client, namespace, false).await
    }

    /// [`Operator::start_with_plugin_source`]; `listing` observes children
    /// with LIST requests rather than the watch caches (benches compare).
    pub async fn start_with_plugin_source_opts(
        client: &Client,
        namespace: &str,
        listing: bool,
    ) -> Self {
        let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
        let renderer = Arc::new(Renderer {
            registry: Arc::new(Registry::with_builtins(runtime).unwrap()),
            policy: OutputPolicy::default(),
            cluster_domain: "cluster.local".into(),
        });
        let mut operator = Self::start_with(client, namespace, renderer, listing).await;
        let (synced_tx, mut synced) = tokio::sync::watch::channel(false);
        let (_, leader) = tokio::sync::watch::channel(true);
        let source = atoll::source::PluginSource::new(
            Arc::clone(&operator.ctx),
            Some(namespace.to_string()),
            Some(namespace.to_string()),
            leader,
        );
        operator.source = Some(tokio::spawn(source.run(synced_tx)));
        tokio::time::timeout(Duration::from_secs(30), synced.wait_for(|s| *s))
            .await
            .expect("plugin ConfigMaps load within 30s")
            .unwrap();
        operator
    }

    pub async fn start_with(
        client: &Client,
        namespace: &str,
        renderer: Arc<Renderer>,
        listing: bool,
    ) -> Self {
        atoll_testenv::install_crds(client, api::crds()).await;
        let ctx = Arc::new(Context::new(client.clone(), renderer));
        ctx.observe_by_listing
            .store(listing, std::sync::atomic::Ordering::Relaxed);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let ns = namespace.to_string();
        let run_ctx = Arc::clone(&ctx);
        let task = tokio::spawn(async move {
            controller::run(run_ctx, Some(&ns), async {
                let _ = stopped.await;
            })
            .await
        });
        Operator {
            ctx,
            stop: Some(stop),
            task: Some(task),
            source: None,
        }
    }

    /// Stop gracefully and wait until in-flight reconciles finish.
    pub async fn stop(mut self) {
        if let Some(source) = self.source.take() {
            source.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("controller stops within 30s")
                .unwrap();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(source) = &self.source {
            source.abort();
        }
    }
}

/// A raft Database `name` with 3 partitions on `clusters` clusters of one
/// replica each: small, for tests and benches that create many.
pub fn raft_database(name: &str, clusters: u32) -> atoll::api::Database {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "atoll.dev/v1alpha1",
        "kind": "Database",
        "metadata": {"name": name},
        "spec": {"partitions": 3, "storage": {"plugin": "raft",
            "config": {"clusters": clusters, "replicas": 1}}},
    }))
    .unwrap()
}

/// `examples/<name>.yaml`, as text.
pub fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../examples/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// `kubectl <args> -n <ns>` that must succeed; returns stdout.
pub async fn k(ns: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-n", ns]);
    let out = kubectl(&all, stdin).await;
    assert!(out.success, "kubectl {all:?} failed: {}", out.stderr);
    out.stdout
}

/// Merge-patch Database `name` with `patch` (JSON).
pub async fn patch_database(ns: &str, name: &str, patch: &str) {
    k(
        ns,
        &["patch", "db", name, "--type", "merge", "-p", patch],
        None,
    )
    .await;
}

/// Wait until Database `name` is Ready with every partition ready.
pub async fn wait_ready(client: &Client, ns: &str, name: &str) -> Database {
    let api: Api<Database> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("Database {ns}/{name} to be Ready"),
        Duration::from_secs(90),
        || {
            let api = api.clone();
            async move {
                let db = api.get(name).await.map_err(|e| e.to_string())?;
                let status = db.status.clone().unwrap_or_default();
                let ready = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if ready && status.ready_partitions == db.spec.partitions {
                    Ok(db)
                } else {
                    Err(format!("{:?}", status.conditions))
                }
            }
        },
    )
    .await
}

/// Wait until condition `type_` of Database `name` is True with `reason`;
/// returns its message.
pub async fn wait_condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    reason: &str,
) -> String {
    let api: Api<Database> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("Database {ns}/{name} condition {type_}=True ({reason})"),
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let db = api.get(name).await.map_err(|e| e.to_string())?;
                let conditions = db.status.map(|s| s.conditions).unwrap_or_default();
                conditions
                    .iter()
                    .find(|c| c.type_ == type_ && c.status == "True" && c.reason == reason)
                    .map(|c| c.message.clone())
                    .ok_or_else(|| format!("{conditions:?}"))
            }
        },
    )
    .await
}

/// Names of `kind` objects labelled for Database `db` in `ns`, sorted.
pub async fn children(ns: &str, kind: &str, db: &str) -> Vec<String> {
    names(ns, kind, &format!("atoll.dev/database={db}")).await
}

/// Names of `kind` objects in `ns` matching label `selector`, sorted.
pub async fn names(ns: &str, kind: &str, selector: &str) -> Vec<String> {
    let out = k(ns, &["get", kind, "-l", selector, "-o", "name"], None).await;
    let mut names: Vec<String> = out
        .lines()
        .map(|l| l.rsplit('/').next().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// The kinds atoll's built-in plugins render, and Partitions.
const MANAGED_KINDS: &str = "statefulsets,services,configmaps,poddisruptionbudgets,partitions";

/// `kubectl get` of every child atoll manages in `ns`, printed as `output`.
async fn get_managed(ns: &str, output: &str) -> String {
    let selector = "app.kubernetes.io/managed-by=atoll";
    k(
        ns,
        &["get", MANAGED_KINDS, "-l", selector, "-o", output],
        None,
    )
    .await
}

/// Children atoll manages in `ns`, as `kind/name`.
pub async fn managed(ns: &str) -> Vec<String> {
    let out = get_managed(ns, "name").await;
    out.lines().map(str::to_string).collect()
}

/// Metadata of every child atoll manages in `ns` (the kinds of [`managed`]),
/// by `Kind/name`. Through the client rather than kubectl, so a test can poll
/// it quickly; the uids of two of these show objects deleted and created
/// again under the same name.
pub async fn managed_metadata(
    client: &Client,
    ns: &str,
) -> Result<std::collections::BTreeMap<String, ObjectMeta>, String> {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let (a, b, c, d, e) = futures::try_join!(
        metadata_of::<StatefulSet>(client, ns),
        metadata_of::<Service>(client, ns),
        metadata_of::<ConfigMap>(client, ns),
        metadata_of::<PodDisruptionBudget>(client, ns),
        metadata_of::<api::Partition>(client, ns),
    )?;
    Ok([a, b, c, d, e].into_iter().flatten().collect())
}

/// `(Kind/name, metadata)` of the `K`s in `ns` labelled as managed by atoll.
async fn metadata_of<K>(client: &Client, ns: &str) -> Result<Vec<(String, ObjectMeta)>, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let params = kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=atoll");
    let list = Api::<K>::namespaced(client.clone(), ns)
        .list_metadata(&params)
        .await
        .map_err(|e| format!("listing {}: {e}", K::kind(&())))?;
    Ok(list
        .items
        .into_iter()
        .map(|o| {
            let name = o.metadata.name.clone().unwrap_or_default();
            (format!("{}/{name}", K::kind(&())), o.metadata)
        })
        .collect())
}

/// Every Database in `ns` has exactly the children its plugin renders (no
/// duplicates, none missing, none extra) and every managed child is owned
/// by a live Database (no orphans).
pub async fn assert_exactly_rendered(client: &Client, ns: &str) {
    if let Err(e) = exactly_rendered(client, ns).await {
        panic!("{e}");
    }
}

/// [`assert_exactly_rendered`], as a result for [`wait_for`].
pub async fn exactly_rendered(client: &Client, ns: &str) -> Result<(), String> {
    use kube::ResourceExt;
    use std::collections::{BTreeMap, BTreeSet};
    let api: Api<Database> = Api::namespaced(client.clone(), ns);
    let mut expected = BTreeSet::new();
    let mut uids = BTreeMap::new();
    for db in api.list(&Default::default()).await.unwrap() {
        let desired = renderer().render(&db).unwrap();
        for p in renderer().partition_objects(&db, &desired) {
            expected.insert(format!("partition.atoll.dev/{}", p.name_any()));
        }
        for o in &desired.objects {
            let kind = o["kind"].as_str().unwrap().to_lowercase();
            let group = match kind.as_str() {
                "statefulset" => ".apps",
                "poddisruptionbudget" => ".policy",
                _ => "",
            };
            expected.insert(format!(
                "{kind}{group}/{}",
                o["metadata"]["name"].as_str().unwrap()
            ));
        }
        uids.insert(db.uid().unwrap(), db.name_any());
    }
    let actual: BTreeSet<String> = managed(ns).await.into_iter().collect();
    if actual != expected {
        let missing: Vec<_> = expected.difference(&actual).collect();
        let extra: Vec<_> = actual.difference(&expected).collect();
        return Err(format!(
            "children of the Databases in {ns}: missing {missing:?}, extra {extra:?}"
        ));
    }

    let out = get_managed(
        ns,
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.ownerReferences[?(@.controller==true)].uid}{\"\\n\"}{end}",
    )
    .await;
    for line in out.lines() {
        let (name, owner) = line.split_once(' ').unwrap_or((line, ""));
        if !uids.contains_key(owner) {
            return Err(format!("{name} is an orphan (owner {owner:?})"));
        }
    }
    Ok(())
}

/// A child process killed when dropped, so a failing test leaves no atoll
/// running behind it.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `atoll run` (this build's binary) reconciling `ns` and loading plugin
/// ConfigMaps from it, on ephemeral loopback ports, logs discarded.
pub fn start_atoll(ns: &str) -> std::process::Child {
    atoll_command(ns).spawn().unwrap()
}

/// The command [`start_atoll`] runs, for a test that wants its log.
pub fn atoll_command(ns: &str) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_atoll"));
    command
        .args(["run", "--namespace", ns, "--plugin-namespace", ns])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", atoll_testenv::kubeconfig_env())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}
