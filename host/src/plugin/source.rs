//! Plugins from ConfigMaps, hot-reloaded without a restart.
//!
//! A ConfigMap labelled `atoll.dev/plugin=<plugin name>` whose `binaryData`
//! holds `plugin.wasm` (or `plugin.wasm.gz`, gzip, for components that would
//! not otherwise fit in a ConfigMap's 1 MiB) adds or overrides that plugin:
//!
//! ```sh
//! kubectl create configmap raft-v2 --from-file=plugin.wasm=raft.wasm
//! kubectl label configmap raft-v2 atoll.dev/plugin=raft
//! ```
//!
//! On add or change: decode, hash, compile (or reuse the component compiled
//! for that digest, in memory or on disk; a new one starts on baseline
//! code: `plugin/tier.rs`) and call `metadata()` off the reconcile path;
//! check the name against the label; render every Database that uses the
//! plugin with the serving and the new version (the shadow render, on every
//! core, through the controller's render memo so the reconciles that follow
//! reuse it; reported in the StoragePlugin status and an Event); then swap
//! atomically — calls in flight finish on the old version — and requeue
//! those Databases.
//!
//! Guarantees:
//! - A ConfigMap that does not load (no component, not wasm, another world or
//!   version, `metadata()` trapping or timing out, name mismatch) changes
//!   nothing that serves: the last good version keeps serving; the plugin's
//!   StoragePlugin record says `Failed` with the reason and the ConfigMap
//!   gets a Warning Event.
//! - Deleting the ConfigMap falls back to the built-in plugin of that name;
//!   with none, the plugin is gone and its Databases become `Degraded` with
//!   a reason naming the deleted ConfigMap.
//! - [`PluginSource::run`] reports the initial sync once every labelled
//!   ConfigMap present at start-up was processed, so the controller never
//!   reconciles with a built-in that a ConfigMap overrides.
//! - Only the leader writes Events and StoragePlugin records; every replica
//!   loads, so a new leader serves the same plugins at once.
//!
//! Caveat: ConfigMaps rendered by plugins carry `atoll.dev/plugin` too (the
//! output policy adds it); they are told apart by
//! `app.kubernetes.io/managed-by=atoll` and never treated as plugins.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

use super::configmap::{decode, truncate};
use super::registry::{Failure, Registry, Removal, Source};
use super::runtime::LoadedPlugin;
use crate::api::{Database, LABEL_MANAGED_BY, LABEL_PLUGIN, ShadowRender};
use crate::contract::Digest;

pub use super::reload::{Rendering, Requeue, ShadowRenderer};

/// Where a [`PluginSource`] looks.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Namespace of plugin ConfigMaps; `None` watches every namespace.
    pub plugins: Option<String>,
    /// Namespace of the Databases atoll reconciles; `None` for all.
    pub databases: Option<String>,
}

/// Watches plugin ConfigMaps and keeps the registry in step with them.
pub struct PluginSource {
    client: Client,
    registry: Arc<Registry>,
    shadow: Arc<dyn ShadowRenderer>,
    requeue: Requeue,
    /// Namespace of plugin ConfigMaps; `None` watches every namespace.
    plugin_namespace: Option<String>,
    /// Namespace of the Databases atoll reconciles; `None` for all.
    database_namespace: Option<String>,
    /// Whether this replica writes Events and StoragePlugin records.
    leader: watch::Receiver<bool>,
    recorder: Recorder,
    /// What each plugin ConfigMap last held.
    seen: HashMap<ObjectRef<ConfigMap>, Seen>,
}

/// The last content of a ConfigMap processed, loaded or not.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    /// The plugin name its label gives.
    plugin: String,
    /// Digest of its component (`None`: no decodable component).
    digest: Option<Digest>,
}

impl PluginSource {
    /// A source loading into `registry`, shadow-rendering with `shadow`
    /// and asking for reconciles through `requeue`; it watches
    /// `scope.plugins` for ConfigMaps, and `leader` says whether this
    /// replica reports (Events, StoragePlugin records).
    pub fn new(
        client: Client,
        registry: Arc<Registry>,
        shadow: Arc<dyn ShadowRenderer>,
        requeue: Requeue,
        scope: Scope,
        leader: watch::Receiver<bool>,
    ) -> Self {
        let recorder = crate::api::event_recorder(client.clone());
        let Scope {
            plugins: plugin_namespace,
            databases: database_namespace,
        } = scope;
        PluginSource {
            client,
            registry,
            shadow,
            requeue,
            plugin_namespace,
            database_namespace,
            leader,
            recorder,
            seen: HashMap::new(),
        }
    }

    /// Watch plugin ConfigMaps until the watch stream ends (never, in
    /// practice: errors are retried with backoff). `synced` turns true once
    /// the ConfigMaps present at start-up were processed.
    pub async fn run(mut self, synced: watch::Sender<bool>) {
        let client = self.client.clone();
        let api: Api<ConfigMap> = match &self.plugin_namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        let selector = format!("{LABEL_PLUGIN},{LABEL_MANAGED_BY}!=atoll");
        let config = watcher::Config::default().labels(&selector);
        let mut events = watcher(api, config).default_backoff().boxed();
        let mut initial = HashSet::new();
        loop {
            let event = match events.try_next().await {
                Ok(Some(event)) => event,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "watching plugin ConfigMaps failed; retrying");
                    continue;
                }
            };
            match event {
                watcher::Event::Init => initial.clear(),
                watcher::Event::InitApply(cm) => {
                    initial.insert(ObjectRef::from_obj(&cm));
                    self.apply(&cm).await;
                }
                watcher::Event::InitDone => {
                    // Deleted while the watch was down: gone from the relist.
                    let gone: Vec<_> = self
                        .seen
                        .keys()
                        .filter(|k| !initial.contains(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        self.delete(&key).await;
                    }
                    synced.send_replace(true);
                }
                watcher::Event::Apply(cm) => self.apply(&cm).await,
                watcher::Event::Delete(cm) => self.delete(&ObjectRef::from_obj(&cm)).await,
            }
        }
    }

    /// A plugin ConfigMap was added or changed.
    async fn apply(&mut self, cm: &ConfigMap) {
        let key = ObjectRef::from_obj(cm);
        let source = source_of(&key);
        let plugin = cm.labels().get(LABEL_PLUGIN).cloned().unwrap_or_default();
        let bytes = decode(cm);
        let seen = Seen {
            plugin: plugin.clone(),
            digest: bytes.as_ref().ok().map(|b| Digest::of(b)),
        };
        if self.seen.get(&key) == Some(&seen) {
            return; // a resync, or a change that is not the component's
        }
        if let Some(previous) = self.seen.insert(key.clone(), seen)
            && previous.plugin != plugin
        {
            // Relabelled: it no longer provides the plugin it did.
            self.withdraw(&previous.plugin, &source).await;
        }
        let started = std::time::Instant::now();
        let result = match bytes {
            Ok(bytes) => self.load(&source, &plugin, bytes).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(loaded) => {
                let load_ms = started.elapsed().as_millis();
                let shadow = self.shadow_render(&plugin, &loaded).await;
                let m = loaded.metadata();
                let note = format!(
                    "loaded {} {} ({}): {} of {} Databases change, {} fail to render, {} would lose objects (kept until each Database approves)",
                    m.name,
                    m.version,
                    loaded.digest(),
                    shadow.changed,
                    shadow.databases,
                    shadow.failed,
                    shadow.prunes
                );
                tracing::info!(
                    configmap = %source,
                    load_ms,
                    shadow_render_ms = started.elapsed().as_millis() - load_ms,
                    "{note}"
                );
                self.registry
                    .insert_arc(Arc::clone(&loaded), source, Some(shadow));
                // Reconciles first: the Event is a write they need not wait for.
                self.requeue(&plugin).await;
                self.event(cm, EventType::Normal, "PluginLoaded", note)
                    .await;
            }
            Err(error) => {
                tracing::warn!(configmap = %source, plugin, %error, "refused a plugin");
                let name = if plugin.is_empty() {
                    key.name.clone()
                } else {
                    plugin.clone()
                };
                let failure = Failure {
                    source,
                    error: error.clone(),
                };
                self.registry.record_failure(&name, failure);
                self.event(cm, EventType::Warning, "PluginRejected", error)
                    .await;
            }
        }
        self.publish().await;
    }

    /// A plugin ConfigMap was deleted.
    async fn delete(&mut self, key: &ObjectRef<ConfigMap>) {
        let Some(seen) = self.seen.remove(key) else {
            return;
        };
        let source = source_of(key);
        if seen.plugin.is_empty() {
            // Its failure was recorded under the ConfigMap's name.
            self.registry.clear_failure(&key.name, &source);
        }
        self.withdraw(&seen.plugin, &source).await;
        self.publish().await;
    }

    /// `source` no longer provides `plugin`: fall back or mark it gone, and
    /// requeue its Databases.
    async fn withdraw(&mut self, plugin: &str, source: &Source) {
        let registry = &self.registry;
        registry.clear_failure(plugin, source);
        match registry.remove(plugin, source) {
            Removal::NotServing => return,
            Removal::Dropped => tracing::info!(
                configmap = %source,
                plugin,
                "plugin ConfigMap removed; the versions it held are no longer served"
            ),
            Removal::FellBack(builtin) => tracing::info!(
                configmap = %source,
                plugin,
                version = %builtin.metadata().version,
                "plugin ConfigMap removed; the built-in plugin serves again"
            ),
            Removal::Gone => tracing::warn!(
                configmap = %source,
                plugin,
                "plugin ConfigMap removed and there is no built-in plugin of that name"
            ),
        }
        self.requeue(plugin).await;
    }

    /// Compile (or reuse) and check a component, on a blocking thread.
    async fn load(
        &self,
        source: &Source,
        plugin: &str,
        bytes: Vec<u8>,
    ) -> Result<Arc<LoadedPlugin>, String> {
        if plugin.is_empty() {
            return Err(format!(
                "{source}: label {LABEL_PLUGIN} is empty; set it to the plugin's name, e.g. `kubectl label configmap {} {LABEL_PLUGIN}=<name> --overwrite`",
                source_name(source)
            ));
        }
        let runtime = Arc::clone(self.registry.runtime());
        let origin = source.to_string();
        let loaded = tokio::task::spawn_blocking(move || runtime.load_tiered(&origin, &bytes))
            .await
            .map_err(|e| format!("{source}: loading panicked: {e}"))?
            .map_err(|e| e.to_string())?;
        let name = &loaded.metadata().name;
        if name != plugin {
            return Err(format!(
                "{source} is labelled {LABEL_PLUGIN}={plugin} but holds plugin {name:?}; fix the label or the component"
            ));
        }
        Ok(Arc::new(loaded))
    }

    /// Render every Database using `plugin` with the serving version and with
    /// `new`, and count the differences.
    async fn shadow_render(&self, plugin: &str, new: &Arc<LoadedPlugin>) -> ShadowRender {
        let shadow = Arc::clone(&self.shadow);
        let current = self.registry.get(plugin);
        let from = current
            .as_ref()
            .map(|c| format!("{} {}", c.metadata().version, c.digest()))
            .unwrap_or_default();
        let databases = self.databases_using(plugin).await;
        let new = Arc::clone(new);
        let counted = tokio::task::spawn_blocking(move || {
            let mut report = ShadowRender {
                from,
                databases: databases.len() as u32,
                ..ShadowRender::default()
            };
            // One share per core: the reload waits for this. Calls still
            // queue for the runtime's slots, so the plugin memory budget
            // holds.
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            let share = databases.len().div_ceil(cores).max(1);
            std::thread::scope(|scope| {
                let shares: Vec<_> = databases
                    .chunks(share)
                    .map(|dbs| scope.spawn(|| compare(&*shadow, dbs, current.as_ref(), &new)))
                    .collect();
                for share in shares {
                    match share.join() {
                        Ok((changed, failed, prunes)) => {
                            report.changed += changed;
                            report.failed += failed;
                            report.prunes += prunes;
                        }
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
            });
            report
        })
        .await;
        counted.unwrap_or_else(|e| {
            tracing::error!(plugin, error = %e, "shadow render panicked");
            ShadowRender::default()
        })
    }

    /// Databases in scope whose `spec.storage.plugin` is `plugin`.
    async fn databases_using(&self, plugin: &str) -> Vec<Database> {
        let client = self.client.clone();
        let api: Api<Database> = match &self.database_namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        match api.list(&Default::default()).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter(|db| db.spec.storage.plugin == plugin)
                .collect(),
            Err(e) => {
                tracing::warn!(plugin, error = %e, "cannot list Databases");
                Vec::new()
            }
        }
    }

    /// Reconcile every Database using `plugin` now. Lists again rather than
    /// reusing the shadow render's list: a Database created meanwhile may
    /// have been reconciled with the version just replaced.
    async fn requeue(&self, plugin: &str) {
        for db in self.databases_using(plugin).await {
            self.requeue.send(ObjectRef::from_obj(&db));
        }
    }

    /// Refresh the StoragePlugin records (leader only).
    async fn publish(&self) {
        if !*self.leader.borrow() {
            return;
        }
        let registry = &self.registry;
        let result = super::records::publish_registry(
            &self.client,
            registry,
            self.database_namespace.as_deref(),
        )
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot publish StoragePlugin records");
        }
    }

    /// An Event on the ConfigMap (leader only).
    async fn event(&self, cm: &ConfigMap, type_: EventType, reason: &str, note: String) {
        if !*self.leader.borrow() {
            return;
        }
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, 1024)),
            action: "LoadPlugin".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &cm.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot record an Event on a plugin ConfigMap");
        }
    }
}

/// Render each of `databases` with `current` (the serving version) and
/// `new`: how many change, fail with `new` only, and would lose objects.
fn compare(
    shadow: &dyn ShadowRenderer,
    databases: &[Database],
    current: Option<&Arc<LoadedPlugin>>,
    new: &Arc<LoadedPlugin>,
) -> (u32, u32, u32) {
    let (mut changed, mut failed, mut prunes) = (0, 0, 0);
    for db in databases {
        let old = current.map(|c| shadow.render_with(db, c));
        match (old, shadow.render_with(db, new)) {
            (Some(Ok(old)), Ok(new)) => {
                if old != new {
                    changed += 1;
                }
                if old.drops_objects_of(&new) {
                    prunes += 1;
                }
            }
            (Some(Ok(_)), Err(_)) => failed += 1,
            // It did not render before; any outcome is a change.
            (_, Ok(_)) => changed += 1,
            (_, Err(_)) => {}
        }
    }
    (changed, failed, prunes)
}

fn source_of(key: &ObjectRef<ConfigMap>) -> Source {
    Source::ConfigMap {
        namespace: key.namespace.clone().unwrap_or_default(),
        name: key.name.clone(),
    }
}

fn source_name(source: &Source) -> &str {
    match source {
        Source::ConfigMap { name, .. } => name,
        _ => "",
    }
}
