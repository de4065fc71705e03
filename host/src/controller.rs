//! The Database controller: render through the plugin, guard against data
//! loss, apply and prune children, keep Partitions, and write honest status.
//!
//! One reconcile:
//! 1. render (plugin call on a blocking thread) and observe owned children;
//! 2. on a render error: status `Degraded` with the reason, an Event, no
//!    change to children;
//! 3. refuse (Degraded + Event) if pruning would destroy data — fewer
//!    partitions, a StatefulSet with volumes, a PVC — unless the Database is
//!    annotated `atoll.dev/allow-data-loss: "true"`;
//! 4. apply what drifted, prune what is no longer rendered;
//! 5. readiness from the plugin's `status` over the observed children;
//!    Partition and Database status written only when they change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::api::{API_VERSION, Database, DatabaseStatus, Partition, PartitionStatus};
use crate::apply::{self, FIELD_MANAGER, Key, Kind, Live};
use crate::error::RenderError;
use crate::metrics::Metrics;
use crate::policy::LABEL_MANAGED_BY;
use crate::render::{Renderer, plugin_input};
use crate::status::{self, Outcome};

/// How often an unchanged Database is reconciled anyway (a resync).
pub const RESYNC: Duration = Duration::from_secs(300);

/// A reconcile that could not finish; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("a plugin call panicked the worker thread: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub renderer: Arc<Renderer>,
    pub recorder: Recorder,
    /// Kinds atoll observes and prunes: the policy's allowed kinds and Partition.
    pub kinds: Vec<Kind>,
    pub metrics: Metrics,
    /// Databases to reconcile now (a hot-reloaded plugin, for example); see
    /// [`Context::requeue`].
    requeue: tokio::sync::broadcast::Sender<ObjectRef<Database>>,
    /// The watch caches of children while [`run`] runs; reconciles outside
    /// it (tests, tools) list children instead.
    children: std::sync::RwLock<Option<Arc<apply::Children>>>,
    /// Writes to children not yet seen by the caches.
    written: Arc<apply::Written>,
    /// Database status written, by namespace and name, with the
    /// resourceVersion it made: a reconcile holding an older Database (its
    /// watch event is on the way) compares with this rather than rewriting.
    status_written: std::sync::Mutex<HashMap<(String, String), (u64, DatabaseStatus)>>,
    /// Observe children with a LIST per kind and reconcile, as before the
    /// caches existed: only to measure what the caches save.
    #[doc(hidden)]
    pub observe_by_listing: std::sync::atomic::AtomicBool,
}

impl Context {
    pub fn new(client: Client, renderer: Arc<Renderer>) -> Self {
        let mut kinds: Vec<Kind> = renderer
            .policy
            .allowed_kinds
            .iter()
            .map(|k| Kind::new(&k.api_version, &k.kind))
            .collect();
        kinds.push(Kind::new(API_VERSION, "Partition"));
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "atoll".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Context {
            client,
            renderer,
            recorder,
            kinds,
            metrics: Metrics::default(),
            // Sized for a hot reload touching thousands of Databases at once;
            // a lagging controller falls back to reconciling every Database.
            requeue: tokio::sync::broadcast::channel(16_384).0,
            children: std::sync::RwLock::new(None),
            written: Arc::default(),
            status_written: Default::default(),
            observe_by_listing: Default::default(),
        }
    }

    /// Reconcile `db` as soon as possible, whatever its resync time. A no-op
    /// while no controller runs.
    pub fn requeue(&self, db: ObjectRef<Database>) {
        let _ = self.requeue.send(db);
    }
}

/// The requests of [`Context::requeue`] as a stream of reconcile triggers for
/// one controller, plus one "reconcile everything" trigger after any lag.
fn requeues(
    ctx: &Context,
) -> (
    impl futures::Stream<Item = ObjectRef<Database>> + Send + 'static,
    impl futures::Stream<Item = ()> + Send + 'static,
) {
    use tokio::sync::broadcast::error::RecvError;
    let (lagged_tx, lagged_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let triggers = futures::stream::unfold(
        (ctx.requeue.subscribe(), lagged_tx),
        |(mut rx, lagged)| async move {
            loop {
                match rx.recv().await {
                    Ok(db) => return Some((db, (rx, lagged))),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "requeue requests overflowed; reconciling every Database"
                        );
                        let _ = lagged.send(());
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    let all = futures::stream::unfold(lagged_rx, |mut rx| async move {
        rx.recv().await.map(|()| ((), rx))
    });
    (triggers, all)
}

/// Run the controller over Databases in `namespace` (all when `None`) until
/// `shutdown` resolves; reconciles in flight finish first.
///
/// One watch per owned kind feeds both a cache of children (what reconciles
/// observe, so a reconcile lists nothing) and the triggers that reconcile a
/// Database when one of its children changes. Nothing is reconciled before
/// every cache holds its initial list.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    if ctx
        .observe_by_listing
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return run_listing(ctx, namespace, shutdown).await;
    }
    let client = ctx.client.clone();
    let shutdown = shutdown.shared();
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}=atoll"));
    let (child_tx, child_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut children = Vec::new();
    let mut watches = Vec::new();
    for kind in &ctx.kinds {
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &kind.resource),
            None => Api::all_with(client.clone(), &kind.resource),
        };
        let writer = reflector::store::Writer::new(kind.resource.clone());
        children.push((kind.clone(), writer.as_reader()));
        watches.push(tokio::spawn(watch_children(
            kind.resource.kind.clone(),
            api,
            owned.clone(),
            writer,
            Arc::clone(&ctx.written),
            child_tx.clone(),
        )));
    }
    drop(child_tx);
    let stores: Vec<&Store<DynamicObject>> = children.iter().map(|(_, s)| s).collect();
    let ready = futures::future::join_all(stores.iter().map(|s| s.wait_until_ready()));
    tokio::select! {
        _ = ready => {}
        _ = shutdown.clone() => {
            watches.iter().for_each(|w| w.abort());
            return;
        }
    }
    *ctx.children.write().unwrap() = Some(Arc::from(children));

    let databases: Api<Database> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // The Database cache without managedFields: they are never read.
    let (reader, writer) = reflector::store();
    let database_events = reflector(
        writer,
        watcher(databases, watcher::Config::default())
            .default_backoff()
            .modify(|db: &mut Database| db.managed_fields_mut().clear()),
    )
    .applied_objects();
    let (requeues, reconcile_all) = requeues(&ctx);
    let shutdown = shutdown_after_ready(shutdown, reader.clone());
    Controller::for_stream(database_events, reader)
        .reconcile_on(requeues)
        .reconcile_on(tokio_stream::wrappers::UnboundedReceiverStream::new(
            child_rx,
        ))
        .reconcile_all_on(reconcile_all)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::clone(&ctx))
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(database = %object, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    watches.iter().for_each(|w| w.abort());
    *ctx.children.write().unwrap() = None;
}

/// [`run`] as before the caches of children: owned kinds are watched for
/// metadata only and every reconcile lists its children. For benchmarks.
async fn run_listing(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let databases: Api<Database> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}=atoll"));
    let (requeues, reconcile_all) = requeues(&ctx);
    let mut controller = Controller::new(databases, watcher::Config::default())
        .reconcile_on(requeues)
        .reconcile_all_on(reconcile_all);
    for kind in &ctx.kinds {
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &kind.resource),
            None => Api::all_with(client.clone(), &kind.resource),
        };
        controller = controller.owns_with(api, kind.resource.clone(), owned.clone());
    }
    let shutdown = shutdown_after_ready(shutdown, controller.store());
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

/// kube-runtime holds its runner until the Database store is ready; a
/// shutdown that ends the watch before that (a SIGTERM in the first
/// milliseconds) would leave the runner waiting forever. So shut down only
/// once the store is ready, or after a bound if the API is down.
async fn shutdown_after_ready(
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    store: Store<Database>,
) {
    shutdown.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), store.wait_until_ready()).await;
}

/// Keep one kind's cache of children and send the Database owning each
/// child that changed or was deleted (a hand edit is repaired this way).
async fn watch_children(
    kind: String,
    api: Api<DynamicObject>,
    config: watcher::Config,
    writer: reflector::store::Writer<DynamicObject>,
    written: Arc<apply::Written>,
    owners: tokio::sync::mpsc::UnboundedSender<ObjectRef<Database>>,
) {
    let events = reflector(
        writer,
        watcher(api, config)
            .default_backoff()
            // managedFields are often half of an object and never read.
            .modify(|o: &mut DynamicObject| o.managed_fields_mut().clear()),
    )
    .touched_objects();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let object = match event {
            Ok(object) => object,
            Err(e) => {
                tracing::warn!(error = %e, "watching children failed; retrying");
                continue;
            }
        };
        written.seen(&kind, &object);
        let namespace = object.namespace();
        for owner in object.owner_references() {
            if owner.kind == "Database" && owner.api_version == API_VERSION {
                let mut db = ObjectRef::new(&owner.name);
                if let Some(ns) = &namespace {
                    db = db.within(ns);
                }
                if owners.send(db).is_err() {
                    return;
                }
            }
        }
    }
}

fn error_policy(db: Arc<Database>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(database = %db.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Reconcile one Database, recording duration and errors per plugin.
pub async fn reconcile(db: Arc<Database>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let plugin = db.spec.storage.plugin.clone();
    let result = reconcile_inner(db, Arc::clone(&ctx)).await;
    ctx.metrics.reconciled(&plugin, started.elapsed());
    if result.is_err() {
        ctx.metrics.reconcile_error(&plugin, "ApiError");
    }
    result
}

async fn reconcile_inner(db: Arc<Database>, ctx: Arc<Context>) -> Result<Action, Error> {
    if db.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the children through their owner
        // references; applying now would recreate what it just deleted.
        return Ok(Action::await_change());
    }
    let namespace = db.namespace().unwrap_or_default();
    let name = db.name_any();
    let uid = db.uid().unwrap_or_default();
    let cached = ctx.children.read().unwrap().clone();
    let caching = cached.is_some();
    let live = match cached {
        Some(children) => apply::observe_cached(&children, &ctx.written, &namespace, &name, &uid),
        None => apply::observe(&ctx.client, &namespace, &name, &uid, &ctx.kinds).await?,
    };

    let rendered = {
        let (renderer, db) = (Arc::clone(&ctx.renderer), Arc::clone(&db));
        let started = std::time::Instant::now();
        let rendered = tokio::task::spawn_blocking(move || renderer.render(&db)).await?;
        let plugin = &rendered.as_ref().map_or("", |d| d.plugin.name.as_str());
        ctx.metrics.plugin_call(plugin, "render", started.elapsed());
        rendered
    };
    let desired = match rendered {
        Ok(desired) => desired,
        Err(e) => {
            let reason = render_reason(&e);
            ctx.metrics.reconcile_error(&db.spec.storage.plugin, reason);
            degrade(&db, &ctx, reason, e.to_string(), None).await?;
            // Invalid specs wait for the user; plugin trouble may pass.
            let retry = matches!(
                e,
                RenderError::Plugin(_) | RenderError::UnknownPlugin { .. }
            );
            return Ok(Action::requeue(if retry {
                Duration::from_secs(30)
            } else {
                RESYNC
            }));
        }
    };

    let plan = crate::plan::plan(&db, &ctx.renderer, &desired, &live);
    if let Some(message) = plan.refused {
        ctx.metrics
            .reconcile_error(&desired.plugin.name, "DataLossRefused");
        degrade(&db, &ctx, "DataLossRefused", message, Some(desired.plugin)).await?;
        return Ok(Action::requeue(RESYNC));
    }
    let (wanted, prune) = (plan.wanted, plan.prune);

    for object in &wanted {
        let drifted = live
            .get(&apply::key(object))
            .is_none_or(|l| !apply::contains(&l.object, object));
        if !drifted {
            continue;
        }
        let (kind, obj) = apply::key(object);
        match apply::apply(&ctx.client, &namespace, object).await {
            Ok(stored) => {
                if caching {
                    ctx.written.record(&kind, stored);
                }
            }
            Err(e) => {
                let message = format!("applying {kind} {obj} failed: {e}");
                degrade(&db, &ctx, "ApplyFailed", message, Some(desired.plugin)).await?;
                return Err(e.into());
            }
        }
        ctx.metrics.applied(&kind);
    }
    for l in &prune {
        apply::delete(&ctx.client, &namespace, l).await?;
        let name = l.object["metadata"]["name"].as_str().unwrap_or_default();
        ctx.written.forget(&l.kind.resource.kind, &namespace, name);
        ctx.metrics.pruned(&l.kind.resource.kind);
    }

    // Readiness from the children as observed (this reconcile's applies show
    // up through the watches and trigger the next one).
    let plugin = Arc::clone(&desired.component);
    let observed: Vec<String> = live
        .values()
        .filter(|l| l.kind.resource.kind != "Partition")
        .map(|l| l.object.to_string())
        .collect();
    let input = plugin_input(&db, &ctx.renderer.cluster_domain);
    let started = std::time::Instant::now();
    let report = tokio::task::spawn_blocking(move || plugin.status(&input, &observed)).await?;
    ctx.metrics
        .plugin_call(&desired.plugin.name, "status", started.elapsed());
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            degrade(
                &db,
                &ctx,
                "PluginError",
                e.to_string(),
                Some(desired.plugin),
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let ready: BTreeSet<u32> = report.ready_partitions.into_iter().collect();
    let partitions: Vec<PartitionStatus> = desired
        .partitions
        .iter()
        .map(|b| PartitionStatus {
            id: b.partition,
            service: b.service.clone(),
            endpoint: ctx.renderer.endpoint(&namespace, b),
            ready: ready.contains(&b.partition),
        })
        .collect();
    write_partition_status(&ctx, &namespace, &name, &live, &partitions, caching).await?;
    let outcome = Outcome::Converged {
        plugin: desired.plugin,
        partitions,
        message: report.message,
    };
    write_status(&db, &ctx, outcome).await?;
    Ok(Action::requeue(RESYNC))
}

fn render_reason(e: &RenderError) -> &'static str {
    match e {
        RenderError::Invalid(_) => "InvalidSpec",
        RenderError::UnknownPlugin { .. } => "UnknownPlugin",
        RenderError::VersionMismatch { .. } => "PluginVersionMismatch",
        RenderError::Failed { .. } => "RenderFailed",
        RenderError::Plugin(_) => "PluginError",
        RenderError::Policy { .. } => "PolicyViolation",
    }
}

/// Record a problem: an Event (when the status changes) and a Degraded status.
async fn degrade(
    db: &Database,
    ctx: &Context,
    reason: &str,
    message: String,
    plugin: Option<crate::api::PluginRef>,
) -> Result<(), Error> {
    let outcome = Outcome::Degraded {
        reason: reason.to_string(),
        message: message.clone(),
        plugin,
    };
    if write_status(db, ctx, outcome).await? {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_string(),
            note: Some(message.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &db.object_ref(&())).await {
            tracing::warn!(error = %e, "could not publish an Event");
        }
    }
    Ok(())
}

/// Write Database status if it changed; returns whether it did.
async fn write_status(db: &Database, ctx: &Context, outcome: Outcome) -> Result<bool, Error> {
    let key = (db.namespace().unwrap_or_default(), db.name_any());
    let rv = |o: &Database| o.resource_version().and_then(|v| v.parse::<u64>().ok());
    let previous = {
        let mut written = ctx.status_written.lock().unwrap();
        match written.get(&key) {
            Some((w, status)) if rv(db).is_none_or(|r| r < *w) => Some(status.clone()),
            Some(_) => {
                written.remove(&key);
                db.status.clone()
            }
            None => db.status.clone(),
        }
    };
    let next = status::database_status(
        previous.as_ref(),
        db.metadata.generation,
        db.spec.partitions,
        outcome,
    );
    if !status::differs(previous.as_ref(), &next) {
        return Ok(false);
    }
    let api: Api<Database> = Api::namespaced(ctx.client.clone(), &key.0);
    let patch = json!({"apiVersion": API_VERSION, "kind": "Database", "status": next});
    let stored = api
        .patch_status(
            &key.1,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    if let (Some(w), Some(status)) = (rv(&stored), stored.status) {
        ctx.status_written.lock().unwrap().insert(key, (w, status));
    }
    Ok(true)
}

/// Write each Partition's status if it changed.
async fn write_partition_status(
    ctx: &Context,
    namespace: &str,
    database: &str,
    live: &BTreeMap<Key, Live>,
    partitions: &[PartitionStatus],
    caching: bool,
) -> Result<(), Error> {
    let api: Api<Partition> = Api::namespaced(ctx.client.clone(), namespace);
    for p in partitions {
        let name = format!("{database}-{}", p.id);
        let status = json!({"ready": p.ready, "endpoints": [p.endpoint]});
        let current = live
            .get(&("Partition".to_string(), name.clone()))
            .map(|l| &l.object["status"]);
        if current == Some(&status) {
            continue;
        }
        let patch = json!({"apiVersion": API_VERSION, "kind": "Partition", "status": status});
        let stored = api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        if caching && let Ok(stored) = serde_json::to_value(stored).and_then(serde_json::from_value)
        {
            ctx.written.record("Partition", stored);
        }
    }
    Ok(())
}
