//! Test support for atoll's end-to-end tier: tests and benchmarks that need a
//! Kubernetes control plane (`cargo xtask cluster up`, or `cargo xtask test`
//! to start one, run everything and stop it).
//!
//! - [`Operator`]: atoll's operator in this process, reconciling one test
//!   namespace, built as `atoll run` builds it ([`atoll::Operator`] from an
//!   [`atoll::Config`]) and stopped on drop;
//! - [`atoll_command`] and [`atoll_bin`]: `atoll run` as a process;
//! - helpers to apply examples, wait for conditions and compare what is in
//!   the cluster with what the plugins render.
//!
//! Without a control plane every test fails with instructions
//! ([`atoll_testenv::client`] panics saying how to start one); none skips.
//!
//! # The `atoll` binary
//!
//! Cargo hands a package's own tests its binaries (`CARGO_BIN_EXE_atoll`),
//! but not another package's, and a build script cannot build it (the outer
//! cargo holds the lock on the target directory while build scripts run).
//! So [`atoll_bin`] has cargo build it the first time a test asks for the
//! binary: the cargo that runs the tests (`$CARGO`), from the workspace
//! root, with the profile of this test binary and the atoll features this
//! crate enables (with none, in the dev profile, as `cargo test
//! --workspace` builds it for the atoll package's tests, so that run's
//! dependencies are reused; else `cargo build -p atoll --bin atoll`), so
//! `CARGO_TARGET_DIR`, `.cargo/config.toml` and `RUSTFLAGS` apply as they
//! do to the tests (a `--target-dir` flag does not reach it: use
//! `CARGO_TARGET_DIR`). Cargo's JSON messages name the
//! executable. The first build after a change compiles the binary; when
//! it is up to date this takes about a second. Cargo releases its lock
//! before it runs tests, so the nested build never waits for the outer one.
//! The lib's own unit test builds and runs the binary with no control plane,
//! so a broken lookup shows there first.
//!
//! # Test components
//!
//! `build.rs` builds `host/test-plugins/*` exactly as `host/build.rs` does
//! (into `<target>/wasm-test`) and sets the same variables:
//! `env!("ATOLL_TEST_HOSTILE_WASM")`, `env!("ATOLL_TEST_RAFT_LABELLED_WASM")`
//! and `env!("ATOLL_TEST_OTHER_WORLD_WASM")` are their paths.
//!
//! # StoragePlugin records
//!
//! StoragePlugins are cluster-scoped, and the tests run in one process, in
//! parallel. A test that makes atoll write them (every `atoll run`, every
//! [`Operator::start_with_plugin_source`]) holds
//! [`plugin_records_shared`] while atoll runs; a test that asserts on them
//! or counts writes to them holds [`plugin_records_exclusive`].

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used)]
#![warn(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use atoll::api::{self, Database, StoragePlugin};
use atoll::controller::Context;
use atoll::operator::{Config, OperatorError, PluginConfig, PluginConfigMaps};
use atoll::policy::OutputPolicy;
use atoll::render::Renderer;
use atoll_testenv::{kubectl, wait_for};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, oneshot};
use tokio::task::JoinHandle;

/// How long an operator may take to stop, or to load plugin ConfigMaps.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The workspace root (examples in `examples/`, manifests in `deploy/`).
pub fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// A renderer over the built-in plugins and the default policy, compiled
/// once per process and shared by every [`Operator::start`].
pub fn renderer() -> Arc<Renderer> {
    static RENDERER: OnceLock<Arc<Renderer>> = OnceLock::new();
    Arc::clone(RENDERER.get_or_init(|| {
        PluginConfig::default()
            .renderer("cluster.local")
            .expect("the built-in plugins load")
    }))
}

/// atoll's operator running in this process, reconciling only one
/// namespace: [`atoll::Operator::run`] in a task, stopped on drop (the task
/// aborted) or gracefully with [`Operator::stop`].
pub struct Operator {
    /// What its reconciles share (client, renderer, metrics).
    pub ctx: Arc<Context>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), OperatorError>>>,
}

impl Operator {
    /// An operator over `namespace` with the shared [`renderer`]:
    /// [`Config::for_namespace`], no servers, no plugin ConfigMaps.
    pub async fn start(client: &Client, namespace: &str) -> Self {
        Self::start_with(client, namespace, renderer()).await
    }

    /// [`Operator::start`] with `renderer`.
    pub async fn start_with(client: &Client, namespace: &str, renderer: Arc<Renderer>) -> Self {
        Self::start_config(client, Config::for_namespace(namespace), renderer).await
    }

    /// An operator with its own registry of built-ins that also loads plugin
    /// ConfigMaps from `namespace`, as `atoll run --namespace <namespace>
    /// --plugin-namespace <namespace>` does; returns once the ConfigMaps
    /// present were loaded. Writes StoragePlugin records: hold
    /// [`plugin_records_shared`] (or exclusive) while it runs.
    pub async fn start_with_plugin_source(client: &Client, namespace: &str) -> Self {
        Self::start_with_plugin_source_policy(client, namespace, OutputPolicy::default()).await
    }

    /// [`Operator::start_with_plugin_source`] enforcing `policy` (a test
    /// plugin rendering an opt-in kind, for example).
    pub async fn start_with_plugin_source_policy(
        client: &Client,
        namespace: &str,
        policy: OutputPolicy,
    ) -> Self {
        let mut config = plugin_source_config(namespace);
        config.policy = policy;
        let renderer = own_renderer(&config);
        Self::start_config(client, config, renderer).await
    }

    /// [`Operator::start_with_plugin_source`]; `listing` observes children
    /// with LIST requests rather than the watch caches (benchmarks compare).
    #[cfg(feature = "observe-by-listing")]
    pub async fn start_with_plugin_source_opts(
        client: &Client,
        namespace: &str,
        listing: bool,
    ) -> Self {
        let mut config = plugin_source_config(namespace);
        config.observe_by_listing = listing;
        let renderer = own_renderer(&config);
        Self::start_config(client, config, renderer).await
    }

    /// The operator `config` describes, rendering with `renderer`, after
    /// installing the CRDs; when it loads plugin ConfigMaps, returns once
    /// those present were loaded.
    pub async fn start_config(client: &Client, config: Config, renderer: Arc<Renderer>) -> Self {
        atoll_testenv::install_crds(client, api::crds()).await;
        let loads_configmaps = config.plugin_configmaps.is_some();
        let operator = atoll::Operator::with_client(config, client.clone(), renderer);
        let ctx = Arc::clone(operator.context());
        let mut ready = operator.ready();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(operator.run(async {
            let _ = stopped.await;
        }));
        if loads_configmaps {
            tokio::time::timeout(TIMEOUT, ready.wait_for(|r| *r))
                .await
                .expect("plugin ConfigMaps load within 30s")
                .expect("the operator stopped before loading plugin ConfigMaps");
        }
        Operator {
            ctx,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stop gracefully and wait until in-flight reconciles finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(TIMEOUT, task)
                .await
                .expect("operator stops within 30s")
                .unwrap()
                .expect("operator ran without error");
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// [`Config::for_namespace`] plus plugin ConfigMaps (and the StoragePlugin
/// specs' versions) from `namespace`, as [`Operator::start_with_plugin_source`]
/// runs it.
pub fn plugin_source_config(namespace: &str) -> Config {
    let mut config = Config::for_namespace(namespace);
    config.plugin_configmaps = Some(PluginConfigMaps {
        namespace: Some(namespace.to_string()),
    });
    config
}

/// A renderer of its own for `config` (hot reloads change its registry).
fn own_renderer(config: &Config) -> Arc<Renderer> {
    config
        .plugins
        .renderer_with(&config.cluster_domain, config.policy.clone())
        .expect("the built-in plugins load")
}

static PLUGIN_RECORDS: RwLock<()> = RwLock::const_new(());

/// Held by a test while atoll writes StoragePlugin records (any number of
/// such tests run at once).
pub async fn plugin_records_shared() -> RwLockReadGuard<'static, ()> {
    PLUGIN_RECORDS.read().await
}

/// Held by a test that asserts on StoragePlugin records or counts writes to
/// them: no other test of this process makes atoll write them meanwhile.
pub async fn plugin_records_exclusive() -> RwLockWriteGuard<'static, ()> {
    PLUGIN_RECORDS.write().await
}

/// Clears the spec and rollout status of the cluster-scoped StoragePlugin
/// it names, now ([`ResetPlugin::now`]) and when dropped (a test that
/// declares versions holds [`plugin_records_exclusive`] and one of these).
pub struct ResetPlugin(pub &'static str);

impl ResetPlugin {
    /// Clear the spec and rollout status of StoragePlugin `name`, if any.
    pub async fn now(client: &Client, name: &str) {
        let api: Api<StoragePlugin> = Api::all(client.clone());
        if api.get_opt(name).await.ok().flatten().is_none() {
            return;
        }
        let spec = serde_json::json!({"spec": {"versions": null, "target": null, "rollout": null}});
        let _ = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&spec))
            .await;
        let status = serde_json::json!({"apiVersion": "atoll.dev/v1alpha1", "kind": "StoragePlugin",
            "metadata": {"name": name}, "status": {}});
        let _ = api
            .patch_status(
                name,
                &PatchParams::apply(atoll::rollout::driver::ROLLOUT_MANAGER).force(),
                &Patch::Apply(&status),
            )
            .await;
    }
}

impl Drop for ResetPlugin {
    fn drop(&mut self) {
        // On a thread and runtime of its own, with a client of its own: the
        // test's client is served by the test's runtime, blocked here.
        let name = self.0;
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async { ResetPlugin::now(&atoll_testenv::client().await, name).await });
        })
        .join();
    }
}

/// A suffix no other test, run or process uses (pid and wall-clock
/// nanoseconds): for registry tags and other names outside a namespace.
pub fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// The text of `atoll run`'s `/metrics` at `addr` (plain HTTP/1.1).
///
/// # Errors
/// The connection or the read failed.
pub async fn metrics_text(addr: std::net::SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("atoll's metrics at {addr}: {e}"))?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: atoll\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    conn.read_to_string(&mut text)
        .await
        .map_err(|e| e.to_string())?;
    Ok(text)
}

/// Whether `db` is `Ready` for its current generation, rendered by the
/// plugin version of `digest`.
pub fn ready_on(db: &Database, digest: &str) -> bool {
    db.status.as_ref().is_some_and(|s| {
        s.plugin.as_ref().is_some_and(|p| p.digest == digest)
            && s.observed_generation == db.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// `component` with a custom section appended until it is `total` bytes
/// long: the same plugin to wasmtime, under another digest (and, past
/// 1 MiB, too big for a ConfigMap).
pub fn padded(component: &[u8], total: usize) -> Vec<u8> {
    let name = b"atoll-e2e-padding";
    let mut out = component.to_vec();
    // Section id 0 (custom), LEB128 size (5 bytes, padded encoding), name, payload.
    let payload = total - component.len() - 1 - 5 - 1 - name.len();
    let size = u32::try_from(1 + name.len() + payload).unwrap();
    out.push(0);
    for i in 0..5 {
        let byte = ((size >> (7 * i)) & 0x7f) as u8;
        out.push(if i < 4 { byte | 0x80 } else { byte });
    }
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.resize(total, 0xa5);
    out
}

/// A raft Database `name` with 3 partitions on `clusters` clusters of one
/// replica each: small, for tests and benches that create many.
pub fn raft_database(name: &str, clusters: u32) -> Database {
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
    std::fs::read_to_string(workspace().join(format!("examples/{name}.yaml"))).unwrap()
}

/// `kubectl <args> -n <ns>` that must succeed; returns stdout.
pub async fn k(ns: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-n", ns]);
    let out = kubectl(&all, stdin).await;
    assert!(out.success, "kubectl {all:?} failed: {}", out.stderr);
    out.stdout
}

/// Run the one-time approval command a refusal message gives
/// (`kubectl annotate database … atoll.dev/allow-data-loss=<generation>
/// --overwrite`), word for word, as a user would copy it.
pub async fn approve_as_told(message: &str) {
    let start = message
        .find("kubectl annotate ")
        .unwrap_or_else(|| panic!("the refusal does not say how to approve: {message}"));
    let mut args: Vec<&str> = Vec::new();
    for word in message[start..].split_whitespace().skip(1) {
        args.push(word);
        if word == "--overwrite" {
            break;
        }
    }
    let out = kubectl(&args, None).await;
    assert!(out.success, "kubectl {args:?} failed: {}", out.stderr);
}

/// Names of the Events in `ns` with `reason`.
pub async fn events(ns: &str, reason: &str) -> Vec<String> {
    let selector = format!("reason={reason}");
    let out = k(
        ns,
        &["get", "events", "--field-selector", &selector, "-o", "name"],
        None,
    )
    .await;
    out.lines().map(str::to_string).collect()
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

/// The kinds atoll's built-in plugins render, and Partitions. (Not
/// EndpointSlices: Kubernetes copies a Service's labels, atoll's included,
/// onto the slices it makes for it; [`exactly_rendered`] checks atoll's own.)
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
///
/// # Errors
/// A LIST failed, as text.
pub async fn managed_metadata(
    client: &Client,
    ns: &str,
) -> Result<BTreeMap<String, ObjectMeta>, String> {
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
///
/// # Errors
/// What differs between the render and the cluster, as text.
pub async fn exactly_rendered(client: &Client, ns: &str) -> Result<(), String> {
    use kube::ResourceExt;
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
        // The host's partition-group Service.
        expected.insert(format!("service/{}", db.name_any()));
        uids.insert(db.uid().unwrap(), db.name_any());
    }
    // And its EndpointSlice, named after the Database, owned by it.
    let slices = k(
        ns,
        &[
            "get",
            "endpointslices",
            "-l",
            "endpointslice.kubernetes.io/managed-by=atoll.dev",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.ownerReferences[?(@.controller==true)].uid}{\"\\n\"}{end}",
        ],
        None,
    )
    .await;
    let slices: BTreeMap<String, String> = slices
        .lines()
        .map(|l| {
            let (name, owner) = l.split_once(' ').unwrap_or((l, ""));
            (name.to_string(), owner.to_string())
        })
        .collect();
    let wanted: BTreeMap<String, String> = uids
        .iter()
        .map(|(uid, name)| (name.clone(), uid.clone()))
        .collect();
    if slices != wanted {
        return Err(format!(
            "atoll's EndpointSlices in {ns} (name, owner uid): {slices:?}, expected {wanted:?}"
        ));
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
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `atoll run` (this workspace's binary) reconciling `ns` and loading plugin
/// ConfigMaps from it, on ephemeral loopback ports, logs discarded. Writes
/// StoragePlugin records: hold [`plugin_records_shared`] while it runs.
pub fn start_atoll(ns: &str) -> Child {
    atoll_command(ns).spawn().unwrap()
}

/// The command [`start_atoll`] runs, for a test that wants its log.
pub fn atoll_command(ns: &str) -> Command {
    let mut command = Command::new(atoll_bin());
    command
        .args(["run", "--namespace", ns, "--plugin-namespace", ns])
        // Compatibility mode: the tests' clients send no credentials.
        .args(["--grpc-anonymous-namespaces", ns])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", atoll_testenv::kubeconfig_env())
        // atoll's own namespace: its instance Lease goes there (and the
        // leader Lease, with --leader-elect).
        .env("POD_NAMESPACE", ns)
        // One compiled-plugin cache for every `atoll run` of the tests, so
        // each start does not compile the built-ins again.
        .envs(plugin_cache_env())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// [`atoll_testenv::plugin_cache::env`] in a directory beside the atoll
/// binary (`<target>/<profile>/e2e-plugin-cache`).
pub fn plugin_cache_env() -> [(&'static str, PathBuf); 2] {
    static ENV: OnceLock<[(&str, PathBuf); 2]> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = atoll_bin()
            .parent()
            .expect("the atoll binary is in a directory")
            .join("e2e-plugin-cache");
        atoll_testenv::plugin_cache::env(&dir)
    })
    .clone()
}

/// The address `atoll run --log-json` logged with `message` (e.g. `serving
/// gRPC`) in `log`, once it has.
pub fn logged_addr(log: &str, message: &str) -> Option<std::net::SocketAddr> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == message)
        .and_then(|l| l["fields"]["addr"].as_str()?.parse().ok())
}

/// The `atoll` binary of this workspace, built by `cargo build -p atoll
/// --bin atoll` on the first call of the process (see the crate docs).
/// Panics with cargo's output when the build fails.
pub fn atoll_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(build_atoll)
}

fn build_atoll() -> PathBuf {
    // Without this test's package variables, which would make cargo rerun
    // ring's build script and rebuild what is built on it.
    let mut command = atoll_testenv::nested_cargo();
    command.current_dir(workspace());
    let features: Vec<&str> = [
        ("native-plugins", cfg!(feature = "native-plugins")),
        ("observe-by-listing", cfg!(feature = "observe-by-listing")),
    ]
    .into_iter()
    .filter_map(|(feature, on)| on.then_some(feature))
    .collect();
    let profile = profile();
    if features.is_empty() && profile == "dev" {
        // The binary `cargo test --workspace` (`cargo xtask test`) builds
        // for the atoll package's own tests: resolved for the whole
        // workspace with its dev-dependencies, so its dependencies have
        // the features that run gave them and nothing is compiled again.
        // `cargo build -p atoll` would build most of them a second time.
        command.args(["test", "--workspace", "--no-run", "--test", "all"]);
    } else {
        command
            .args(["build", "--package", "atoll", "--bin", "atoll"])
            .args(["--profile", &profile]);
        if !features.is_empty() {
            command.args(["--features", &features.join(",")]);
        }
    }
    command.args(["--message-format", "json-render-diagnostics"]);
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the atoll binary: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{command:?} failed; run `cargo build -p atoll` to see why:\n{stderr}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| {
            m["reason"] == "compiler-artifact"
                && m["target"]["name"] == "atoll"
                && m["target"]["kind"] == serde_json::json!(["bin"])
                && m["profile"]["test"] == false
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("{command:?} named no atoll executable:\n{stderr}"))
}

/// The cargo profile this test binary was built with, from its directory
/// (`<target>/<profile dir>/deps/<test>`): `debug` is `dev`, any other
/// directory is named after its profile.
fn profile() -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .filter(|deps| deps.ends_with("deps"))
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|d| d.to_str());
    match dir {
        Some("debug") | None => "dev".to_string(),
        Some(dir) => dir.to_string(),
    }
}

#[cfg(test)]
mod tests {
    /// The harness finds (and if need be builds) the binary with no control
    /// plane, so a broken lookup shows here rather than in every test.
    #[test]
    fn atoll_bin_is_built_and_runs() {
        let bin = super::atoll_bin();
        let out = std::process::Command::new(bin).arg("--version").output();
        let out = out.unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
        assert!(out.status.success(), "{}: {out:?}", bin.display());
        let version = String::from_utf8_lossy(&out.stdout);
        assert!(version.starts_with("atoll "), "{version}");
    }
}
