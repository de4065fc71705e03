//! Watch caches of the records the gRPC API lists: Databases, Partitions and
//! Primitives, one watch each, shared by every call.
//!
//! `GetDatabases` and `GetPrimitives` with an empty namespace used to be
//! cluster-wide LISTs against the API server on every call, so any caller
//! could make atoll load the API server at its own request rate. Answered
//! from these caches, a call costs atoll memory and CPU only; the watches
//! cost the API server the same whatever the call rate.
//!
//! Guarantees and caveats:
//! - A list reflects the API server as of the last watch event, usually a
//!   few milliseconds behind; a call right after a write may not see it
//!   (like `kubectl get` served from the watch cache). Calls that name one
//!   object (`GetDatabase`, `GetPrimitive`) still read it from the API server,
//!   so a Database that exists is never reported missing; its partitions come
//!   from the cache, and discovery is all or nothing, so a lagging cache
//!   makes the call `UNAVAILABLE` (retried by Atomix clients), never wrong.
//! - Until a cache has listed once (at start-up, or while the API server
//!   refuses the watch), calls that need it wait up to [`SYNC_WAIT`] and
//!   then fail `UNAVAILABLE`, rather than answer with an empty list.
//! - managedFields and annotations are dropped from every cached object,
//!   and a cached Database keeps only what discovery reads (metadata and
//!   `spec.partitions`; no status, labels or plugin config): calls that
//!   answer from these caches never read the rest, and over 1,000
//!   Databases it is memory held twice (the controller caches them too).
//! - The watches cover the namespace atoll manages (`--namespace`), or every
//!   namespace; records outside it are never listed.

use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::error::GrpcError;
use crate::api::{Database, LABEL_DATABASE, Partition, Primitive};

/// How long a call waits for a cache that has not listed yet.
pub const SYNC_WAIT: Duration = Duration::from_secs(5);

/// The caches; their watches stop when this is dropped.
pub struct Caches {
    pub(super) databases: Store<Database>,
    pub(super) partitions: Store<Partition>,
    pub(super) primitives: Store<Primitive>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Caches {
    /// Start the watches of `namespace` (every namespace if `None`).
    pub fn start(client: &Client, namespace: Option<&str>) -> Caches {
        let mut tasks = Vec::new();
        let all = watcher::Config::default;
        let databases = cache(client, namespace, all(), trim_database, &mut tasks);
        // Only Partitions atoll made (it labels each with its Database).
        let labelled = all().labels(LABEL_DATABASE);
        let partitions = cache(
            client,
            namespace,
            labelled,
            |_: &mut Partition| {},
            &mut tasks,
        );
        let primitives = cache(client, namespace, all(), |_: &mut Primitive| {}, &mut tasks);
        Caches {
            databases,
            partitions,
            primitives,
            tasks,
        }
    }

    /// `store` once it has listed, waiting up to [`SYNC_WAIT`].
    pub(super) async fn synced<'a, K>(
        &self,
        store: &'a Store<K>,
        what: &str,
    ) -> Result<&'a Store<K>, GrpcError>
    where
        K: Resource + Clone + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        match tokio::time::timeout(SYNC_WAIT, store.wait_until_ready()).await {
            Ok(Ok(())) => Ok(store),
            _ => Err(GrpcError::Unavailable(format!(
                "atoll has not listed {what} yet (its watch is starting or the Kubernetes API \
                 refuses it; see atoll's log); retry"
            ))),
        }
    }
}

impl Drop for Caches {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

/// What discovery reads of a Database: metadata (name, namespace, uid,
/// deletion) and `spec.partitions`.
pub(super) fn trim_database(db: &mut Database) {
    db.metadata.labels = None;
    db.status = None;
    db.spec.storage.config = None;
    db.spec.pod = None;
}

/// A store of `K` in `namespace` fed by its own watch task; `trim` drops
/// what the API never reads of each object (managedFields and annotations
/// are always dropped).
fn cache<K>(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
    trim: fn(&mut K),
    tasks: &mut Vec<tokio::task::AbortHandle>,
) -> Store<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).to_string();
    let events = reflector(
        writer,
        watcher(api, config)
            .default_backoff()
            .modify(move |o: &mut K| {
                o.managed_fields_mut().clear();
                o.meta_mut().annotations = None;
                trim(o);
            }),
    );
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            if let Err(e) = event {
                tracing::warn!(%kind, error = %e, "gRPC watch cache: watching; retrying");
            }
        }
    });
    tasks.push(task.abort_handle());
    reader
}
