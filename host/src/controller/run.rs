//! Running the controller: the watches that keep the caches of children and
//! trigger reconciles, and kube-runtime's `Controller` over Databases.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};

use super::by_database::ByDatabase;
use super::observe::{Child, Kind};
use super::written::Written;
use super::{Context, Error, reconcile};
use crate::api::{API_VERSION, Database, LABEL_MANAGED_BY};

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
                    Ok(db) => return Some(((*db).clone(), (rx, lagged))),
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
    #[cfg(feature = "observe-by-listing")]
    if ctx.observe_by_listing {
        return run_listing(ctx, namespace, shutdown).await;
    }
    let client = ctx.client.clone();
    let shutdown = shutdown.shared();
    let (child_tx, child_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut children = Vec::new();
    let mut watches = Vec::new();
    for kind in &ctx.kinds {
        let api: Api<Child> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &kind.resource),
            None => Api::all_with(client.clone(), &kind.resource),
        };
        let writer = reflector::store::Writer::new(kind.resource.clone());
        let index = Arc::new(ByDatabase::default());
        children.push((kind.clone(), writer.as_reader(), Arc::clone(&index)));
        watches.push(tokio::spawn(watch_children(
            kind.resource.kind.clone(),
            api,
            owned(kind),
            (writer, index),
            Arc::clone(&ctx.written),
            child_tx.clone(),
        )));
    }
    drop(child_tx);
    let stores: Vec<&Store<Child>> = children.iter().map(|(_, s, _)| s).collect();
    let ready = futures::future::join_all(stores.iter().map(|s| s.wait_until_ready()));
    tokio::select! {
        _ = ready => {}
        _ = shutdown.clone() => {
            watches.iter().for_each(|w| w.abort());
            return;
        }
    }
    ctx.set_caches(Some(Arc::from(children)));

    let databases: Api<Database> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // The Database cache without managedFields and kubectl's copy of the
    // last applied spec (`kubectl apply` without --server-side): never read,
    // and often most of a small Database's metadata.
    let (reader, writer) = reflector::store();
    let database_events = reflector(
        writer,
        watcher(databases, watcher::Config::default())
            .default_backoff()
            .modify(|db: &mut Database| {
                db.managed_fields_mut().clear();
                db.annotations_mut().remove(KUBECTL_LAST_APPLIED);
            }),
    )
    .applied_objects();
    ctx.set_databases(Some(reader.clone()));
    let (requeues, reconcile_all) = requeues(&ctx);
    let shutdown = shutdown_after_ready(shutdown, reader.clone());
    Controller::for_stream(database_events, reader)
        .with_config(controller::Config::default().concurrency(ctx.concurrency))
        .reconcile_on(requeues)
        .reconcile_on(tokio_stream::wrappers::UnboundedReceiverStream::new(
            child_rx,
        ))
        .reconcile_all_on(reconcile_all)
        .graceful_shutdown_on(shutdown)
        .run(fenced_reconcile, error_policy, Arc::clone(&ctx))
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(database = %object, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    watches.iter().for_each(|w| w.abort());
    ctx.set_caches(None);
    ctx.set_databases(None);
}

/// The annotation `kubectl apply` (client-side) keeps the applied object in.
const KUBECTL_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// [`run`] as before the caches of children: owned kinds are watched for
/// metadata only and every reconcile lists its children. For benchmarks.
#[cfg(feature = "observe-by-listing")]
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
    let (requeues, reconcile_all) = requeues(&ctx);
    let mut controller = Controller::new(databases, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(ctx.concurrency))
        .reconcile_on(requeues)
        .reconcile_all_on(reconcile_all);
    for kind in &ctx.kinds {
        let api: Api<kube::api::DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &*kind.resource),
            None => Api::all_with(client.clone(), &*kind.resource),
        };
        controller = controller.owns_with(api, (*kind.resource).clone(), owned(kind));
    }
    let shutdown = shutdown_after_ready(shutdown, controller.store());
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

/// What the watch of `kind` selects: objects labelled as atoll's. For
/// EndpointSlices only atoll's own (the partition-group Service's):
/// Kubernetes' EndpointSlice controller copies a Service's labels, atoll's
/// included, onto the slices it makes for it, and caching those would
/// double the Services' share of the caches for nothing.
fn owned(kind: &Kind) -> watcher::Config {
    let mut selector = format!("{LABEL_MANAGED_BY}=atoll");
    if kind.resource.kind == "EndpointSlice" {
        selector.push_str(&format!(
            ",endpointslice.kubernetes.io/managed-by={}",
            super::discovery::SLICE_MANAGER
        ));
    }
    watcher::Config::default().labels(&selector)
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

/// Keep one kind's cache of children and its index by Database, and send
/// the Database owning each child that changed or was deleted (a hand edit
/// is repaired this way).
async fn watch_children(
    kind: String,
    api: Api<Child>,
    config: watcher::Config,
    (writer, index): (reflector::store::Writer<Child>, Arc<ByDatabase>),
    written: Arc<Written>,
    owners: tokio::sync::mpsc::UnboundedSender<ObjectRef<Database>>,
) {
    let store = writer.as_reader();
    // `Child` drops managedFields and keeps the rest as text. The reflector
    // has updated the store when an event arrives here.
    let events = reflector(writer, watcher(api, config).default_backoff());
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let object = match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                index.applied(&object);
                object
            }
            Ok(watcher::Event::Delete(object)) => {
                index.deleted(&object);
                object
            }
            Ok(watcher::Event::Init) => continue,
            Ok(watcher::Event::InitDone) => {
                index.rebuild(&store);
                continue;
            }
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

/// [`reconcile`], cancelled where it stands when the leader fence falls:
/// its writes would be refused anyway, and a reconcile waiting on a plugin
/// call or a slow API answer should not hold the controller's shutdown.
async fn fenced_reconcile(db: Arc<Database>, ctx: Arc<Context>) -> Result<Action, Error> {
    let fence = ctx.fence.clone();
    let name = db.name_any();
    tokio::select! {
        biased;
        () = fence.lapsed() => {
            tracing::warn!(database = %name, "reconcile cancelled: the leader fence fell");
            Err(Error::Fenced)
        }
        result = reconcile(db, ctx) => result,
    }
}

fn error_policy(db: Arc<Database>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(database = %db.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}
