//! The Database controller: render through the plugin, guard against data
//! loss, converge children, and write honest status.
//!
//! One reconcile ([`reconcile::reconcile`]) is these steps, one module each,
//! in the order data flows through them:
//! 1. [`observe`]: the children this Database owns, from the watch caches;
//! 2. render ([`crate::render`]): the plugin's objects (memoized:
//!    [`crate::render::memo`]) after the output
//!    policy, `spec.pod` and config checksums; an error makes the Database
//!    `Degraded` and touches no child; [`configs`] then reads the ConfigMaps
//!    and Secrets pod templates use but the render lacks, for the checksums;
//! 3. [`discovery`]: the partition-group Service and EndpointSlice that
//!    publish every partition in DNS (the host's own children);
//! 4. [`plan`]: what to apply and prune, or a refusal by the data-loss guard;
//! 5. [`converge`]: apply what drifted, prune what is no longer rendered;
//! 6. [`readiness`]: the plugin's `status` over the observed children;
//! 7. [`status`]: Partition and Database status and Events, written only
//!    when they change.
//!
//! [`run`] wires these to kube-runtime: one watch per owned kind feeds the
//! caches and the triggers, and reconciles run at most
//! [`Context::concurrency`] at a time.

pub mod by_database;
pub mod configs;
pub mod converge;
pub mod discovery;
mod moves;
pub mod observe;
pub mod plan;
pub mod readiness;
pub mod reconcile;
mod run;
pub mod status;
pub mod written;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kube::Client;
use kube::api::DynamicObject;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;

use crate::api::{API_VERSION, Database, DatabaseStatus, Reason};
use crate::metrics::Metrics;
use crate::plugin::Requeue;
use crate::render::Renderer;
use crate::render::memo::Memos;
use crate::sync::RwLockExt;
use observe::{Children, Kind};
use written::Written;

pub use reconcile::reconcile;
pub use run::run;

/// How often an unchanged Database is reconciled anyway (a resync).
pub const RESYNC: Duration = Duration::from_secs(300);

/// How soon a reconcile that met trouble that may pass (a plugin trap, an
/// unknown plugin) is retried.
pub const RETRY: Duration = Duration::from_secs(30);

/// Reconciles in flight at once, by default. Each holds its render and its
/// observed children until its applies finish; unbounded, a restart over
/// 1,000 Databases reconciled them all at once and atoll's memory peaked
/// (and stayed, the allocator keeping it) near 200 MiB. The API server is
/// the bottleneck well before this many requests are in flight.
pub const DEFAULT_CONCURRENCY: u16 = 32;

/// A reconcile that could not finish; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("a plugin call panicked the worker thread: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("cancelled: the leader fence fell (this replica may have lost the Lease)")]
    Fenced,
}

impl Error {
    /// The `reason` label of `atoll_reconcile_errors_total` for this error.
    pub fn metric_label(&self) -> Reason {
        Reason::ApiError
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub renderer: Arc<Renderer>,
    pub recorder: Recorder,
    /// Kinds atoll observes and prunes: the policy's allowed kinds,
    /// Partition, and the Service and EndpointSlice of [`discovery`].
    pub kinds: Vec<Kind>,
    pub metrics: Metrics,
    /// Reconciles in flight at once (0: unbounded).
    pub concurrency: u16,
    /// Databases to reconcile now (a hot-reloaded plugin, for example).
    pub requeue: Requeue,
    /// Plugin answers kept for unchanged inputs (`render` and `status`).
    pub memos: Memos,
    /// Whether this replica may still write as the leader: reconciles in
    /// flight are cancelled when it falls (see [`crate::leader::fence`]).
    /// `client` should be the same fence's [`fenced_client`](crate::leader::fence::fenced_client).
    pub fence: crate::leader::fence::Fence,
    /// The watch caches of children while [`run`] runs; reconciles outside
    /// it (tests, tools) list children instead.
    caches: RwLock<Option<Arc<Children>>>,
    /// The controller's cache of Databases while [`run`] keeps it.
    databases: RwLock<Option<Store<Database>>>,
    /// Writes to children not yet seen by the caches.
    written: Arc<Written>,
    /// Database status written, by namespace and name, with the
    /// resourceVersion it made: a reconcile holding an older Database (its
    /// watch event is on the way) compares with this rather than rewriting.
    status_written: std::sync::Mutex<HashMap<(String, String), (u64, DatabaseStatus)>>,
    /// Observe children with a LIST per kind and reconcile, as before the
    /// caches existed: only to measure what the caches save.
    #[cfg(feature = "observe-by-listing")]
    pub observe_by_listing: bool,
}

impl Context {
    /// A context reconciling with `client` and rendering with `renderer`.
    pub fn new(client: Client, renderer: Arc<Renderer>) -> Self {
        let mut kinds: Vec<Kind> = renderer
            .policy
            .allowed_kinds
            .iter()
            .map(|k| Kind::new(&k.api_version, &k.kind))
            .collect();
        kinds.push(Kind::new(API_VERSION, "Partition"));
        for (api_version, kind) in [("v1", "Service"), ("discovery.k8s.io/v1", "EndpointSlice")] {
            if !kinds
                .iter()
                .any(|k| k.resource.api_version == api_version && k.resource.kind == kind)
            {
                kinds.push(Kind::new(api_version, kind));
            }
        }
        let recorder = crate::api::event_recorder(client.clone());
        Context {
            client,
            renderer,
            recorder,
            kinds,
            metrics: Metrics::default(),
            concurrency: DEFAULT_CONCURRENCY,
            requeue: Requeue::default(),
            memos: Memos::default(),
            fence: crate::leader::fence::Fence::open(),
            caches: RwLock::new(None),
            databases: RwLock::new(None),
            written: Arc::default(),
            status_written: Default::default(),
            #[cfg(feature = "observe-by-listing")]
            observe_by_listing: false,
        }
    }

    /// The watch caches, while [`run`] keeps them.
    fn caches(&self) -> Option<Arc<Children>> {
        self.caches.reading().clone()
    }

    fn set_caches(&self, caches: Option<Arc<Children>>) {
        *self.caches.writing() = caches;
    }

    fn set_databases(&self, store: Option<Store<Database>>) {
        *self.databases.writing() = store;
    }

    /// The controller's cache of Databases, once it holds the initial list
    /// (`None` while no controller runs here, or before then).
    pub fn databases(&self) -> Option<Store<Database>> {
        use futures::FutureExt as _;
        let store = self.databases.reading().clone()?;
        let ready = store.wait_until_ready().now_or_never();
        matches!(ready, Some(Ok(()))).then_some(store)
    }

    /// Remember a write the caches have not seen yet (only while they exist:
    /// without caches every reconcile lists anyway).
    fn remember_write(&self, kind: &str, stored: DynamicObject) {
        if self.caches().is_some() {
            self.written.record(kind, stored);
        }
    }
}

/// Shadow renders (a hot reload's, a rollout's gate) through the
/// controller's render memo: the serving version's answers are usually
/// kept already, and the new version's are left for the reconciles the
/// swap requeues, so a reload calls the new plugin once per Database, not
/// twice. Answers are keyed by component digest, so versions never mix.
impl crate::plugin::source::ShadowRenderer for Context {
    fn render_with(
        &self,
        db: &Database,
        plugin: &Arc<crate::plugin::LoadedPlugin>,
    ) -> Result<crate::plugin::source::Rendering, String> {
        self.renderer
            .render_with_memoized(db, plugin, &self.memos.render, &self.metrics)
            .map(Into::into)
            .map_err(|e| e.to_string())
    }
}
