//! The operator as one value: built from a [`Config`] (which `atoll run`'s
//! flags fill, and tests and benchmarks fill the same way), then run until a
//! shutdown signal.
//!
//! [`Operator::run`] starts, in order: the `/metrics` and health server, the
//! gRPC server (both bound first, so a taken port fails the start), the
//! plugin ConfigMap source, leader election, and — once plugins are loaded
//! and this replica leads — the Database controller. Every replica loads
//! plugins and serves gRPC; only the leader reconciles and reports.
//!
//! Guarantees:
//! - Nothing is reconciled before the plugin ConfigMaps present at start-up
//!   were loaded (no replica reconciles with a built-in a ConfigMap
//!   overrides), and `/readyz` turns ready only then.
//! - A replica that loses the Lease stops its controller and returns
//!   [`OperatorError::LostLease`] (so the process exits and restarts as a
//!   candidate, like client-go); the Lease is released only after the
//!   controller stopped writing.
//! - A replica that cannot know it lost (paused, cut off) stops writing
//!   anyway: the controller's writes go through a fence that falls
//!   `lease_duration − renew_period` after the last successful renewal
//!   started, before a rival may take over; reconciles in flight are
//!   cancelled then ([`crate::leader::fence`]).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;

use crate::controller::{self, Context};
use crate::grpc::TlsFiles;
use crate::leader::fence::{Fence, fenced_client};
use crate::leader::{LeaderElection, LeaderError};
use crate::plugin::source::Scope;
use crate::plugin::{Limits, PluginSource, Registry, Runtime, records};
use crate::policy::OutputPolicy;
use crate::render::Renderer;
use crate::{PluginError, serve};

/// Everything `atoll run` can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Reconcile only Databases in this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// Cluster DNS domain used in host names and partition endpoints.
    pub cluster_domain: String,
    /// Database reconciles in flight at once (0: unbounded).
    pub max_concurrent_reconciles: u16,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`None`: not).
    pub metrics_addr: Option<SocketAddr>,
    /// The gRPC API (`None`: not served).
    pub grpc: Option<GrpcConfig>,
    /// Compete for a Lease and reconcile only while holding it (`None`:
    /// this process leads for its whole life).
    pub leader_election: Option<LeaderElectionConfig>,
    /// Load plugins from labelled ConfigMaps (`None`: built-ins and
    /// `plugins.dir` only).
    pub plugin_configmaps: Option<PluginConfigMaps>,
    /// Keep the cluster-scoped StoragePlugin records up to date every 30 s
    /// (leader only; hot reloads publish at once either way).
    pub publish_plugin_records: bool,
    /// How plugins are loaded and sandboxed.
    pub plugins: PluginConfig,
    /// What plugins may render (kinds, bounds, pod security).
    pub policy: OutputPolicy,
    /// Observe children by listing rather than from watch caches: only to
    /// measure what the caches save.
    #[cfg(feature = "observe-by-listing")]
    pub observe_by_listing: bool,
}

impl Config {
    /// A controller over `namespace` and nothing else: no servers, no
    /// election, no plugin ConfigMaps (tests and benchmarks add what they
    /// need).
    pub fn for_namespace(namespace: &str) -> Self {
        Config {
            namespace: Some(namespace.to_string()),
            cluster_domain: "cluster.local".into(),
            max_concurrent_reconciles: controller::DEFAULT_CONCURRENCY,
            metrics_addr: None,
            grpc: None,
            leader_election: None,
            plugin_configmaps: None,
            publish_plugin_records: false,
            plugins: PluginConfig::default(),
            policy: OutputPolicy::default(),
            #[cfg(feature = "observe-by-listing")]
            observe_by_listing: false,
        }
    }
}

/// The gRPC server's address and optional TLS.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// Who may call.
    pub auth: crate::grpc::AuthConfig,
    /// Connections, streams and call rates at most.
    pub limits: crate::grpc::GrpcLimits,
    /// The instance Lease of this process (in atoll's own namespace) and the
    /// sweep of Member records of instances that are gone.
    pub liveness: crate::grpc::Liveness,
}

/// The Lease replicas compete for.
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    pub lease: String,
    pub lease_duration: Duration,
    pub renew_period: Duration,
}

/// Where plugin ConfigMaps are watched.
#[derive(Debug, Clone)]
pub struct PluginConfigMaps {
    /// `None`: every namespace (needs cluster-wide ConfigMap reads).
    pub namespace: Option<String>,
}

/// How plugins are loaded and sandboxed.
#[derive(Debug, Clone, Default)]
pub struct PluginConfig {
    /// `.wasm` plugins loaded after the built-ins (a name replaces one).
    pub dir: Option<PathBuf>,
    /// Deadline, memory cap and instances per call.
    pub limits: Limits,
    /// Compiled components kept across restarts (`None`: compile each start).
    pub cache_dir: Option<PathBuf>,
    /// Key sealing the disk cache (`None`: a random key per process).
    pub cache_key_file: Option<PathBuf>,
    /// Fit the plugin slots into the container's memory limit, keeping this
    /// much for the host (`None`: use the slots as given).
    pub host_reserve_bytes: Option<u64>,
    /// Call the built-ins' native code instead of WebAssembly (measurement).
    #[cfg(feature = "native-plugins")]
    pub native: bool,
}

impl PluginConfig {
    /// The registry: built-ins, then `dir`.
    ///
    /// # Errors
    /// The engine cannot start, or a plugin in `dir` does not load.
    pub fn registry(&self) -> Result<Arc<Registry>, PluginError> {
        let mut limits = self.limits.clone();
        if let Some(reserve) = self.host_reserve_bytes {
            let limit = crate::plugin::budget::cgroup_memory_limit();
            let fitted = crate::plugin::budget::fit(
                limits.concurrent_calls,
                limits.memory_bytes as u64,
                reserve,
                limit,
            )?;
            if fitted.slots < limits.concurrent_calls {
                tracing::warn!(
                    memory_limit_mib = limit.map(|l| l >> 20),
                    reserve_mib = reserve >> 20,
                    call_cap_mib = limits.memory_bytes >> 20,
                    wanted = limits.concurrent_calls,
                    slots = fitted.slots,
                    "lowered plugin concurrency so that slots × the per-call memory cap fit the container's memory limit"
                );
            } else {
                tracing::info!(
                    memory_limit_mib = limit.map(|l| l >> 20),
                    reserve_mib = reserve >> 20,
                    call_cap_mib = limits.memory_bytes >> 20,
                    slots = fitted.slots,
                    "plugin memory budget"
                );
            }
            limits.concurrent_calls = fitted.slots;
        }
        let mut runtime = Runtime::new(limits)?;
        if let Some(path) = &self.cache_key_file {
            runtime = runtime.with_seal_key(crate::plugin::SealKey::from_file(path)?);
        }
        if let Some(dir) = &self.cache_dir {
            runtime = runtime.with_disk_cache(dir.clone());
        }
        let runtime = Arc::new(runtime);
        #[cfg(feature = "native-plugins")]
        let registry = if self.native {
            Registry::with_native_builtins(runtime)?
        } else {
            Registry::with_builtins(runtime)?
        };
        #[cfg(not(feature = "native-plugins"))]
        let registry = Registry::with_builtins(runtime)?;
        if let Some(dir) = &self.dir {
            registry.load_dir(dir)?;
        }
        Ok(Arc::new(registry))
    }

    /// A renderer over [`PluginConfig::registry`] with the default policy.
    ///
    /// # Errors
    /// As [`PluginConfig::registry`].
    pub fn renderer(&self, cluster_domain: &str) -> Result<Arc<Renderer>, PluginError> {
        self.renderer_with(cluster_domain, OutputPolicy::default())
    }

    /// A renderer over [`PluginConfig::registry`] enforcing `policy`.
    ///
    /// # Errors
    /// As [`PluginConfig::registry`].
    pub fn renderer_with(
        &self,
        cluster_domain: &str,
        policy: OutputPolicy,
    ) -> Result<Arc<Renderer>, PluginError> {
        Ok(Arc::new(Renderer {
            registry: self.registry()?,
            policy,
            cluster_domain: cluster_domain.to_string(),
        }))
    }
}

/// Why the operator could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("cannot reach the Kubernetes API (set KUBECONFIG, or run in a pod): {0}")]
    KubeConfig(#[from] kube::config::InferConfigError),
    #[error("the replica identity {0:?} is not a valid User-Agent header value")]
    Identity(String),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("the Kubernetes API does not answer: {0}")]
    Unreachable(#[source] kube::Error),
    #[error("loading plugins: {0}")]
    Plugins(#[from] PluginError),
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Leader(#[from] LeaderError),
    #[error("lost the leader Lease; exiting so only the new leader writes")]
    LostLease,
}

/// The operator, built and ready to [`run`](Operator::run).
pub struct Operator {
    config: Config,
    /// Unfenced: for the servers, the elector and the plugin source.
    client: kube::Client,
    ctx: Arc<Context>,
    identity: String,
    ready: watch::Sender<bool>,
}

impl Operator {
    /// Connect to the cluster in `KUBECONFIG` (or the pod's service account)
    /// and load the plugins `config` names. Every request names this replica
    /// in its User-Agent, `atoll/<version> (<identity>)`, so the API server's
    /// audit log tells replicas apart.
    ///
    /// # Errors
    /// No Kubernetes configuration, an API server that does not answer, or
    /// plugins that do not load.
    pub async fn new(config: Config) -> Result<Self, OperatorError> {
        let identity = crate::leader::default_identity();
        let renderer = config
            .plugins
            .renderer_with(&config.cluster_domain, config.policy.clone())?;
        let mut kube_config = kube::Config::infer().await?;
        let agent = format!("atoll/{} ({identity})", env!("CARGO_PKG_VERSION"));
        let agent = http::HeaderValue::from_str(&agent)
            .map_err(|_| OperatorError::Identity(identity.clone()))?;
        kube_config.headers.push((http::header::USER_AGENT, agent));
        let client = kube::Client::try_from(kube_config.clone()).map_err(OperatorError::Client)?;
        client
            .apiserver_version()
            .await
            .map_err(OperatorError::Unreachable)?;
        let fence = Fence::for_election(config.leader_election.is_some());
        let fenced = crate::leader::wire::client(kube_config, fence.clone())
            .map_err(OperatorError::Client)?;
        Ok(Self::assemble(config, client, fenced, fence, renderer).with_identity(identity))
    }

    /// An operator over an existing client and renderer (tests and
    /// benchmarks share one renderer across operators this way).
    ///
    /// With leader election the controller writes through
    /// [`fenced_client`]: its writes stop at the fence, before a rival may
    /// take the Lease; the gRPC server, the elector and the plugin source
    /// keep the plain client (every replica serves and renews). The fence is
    /// checked before the request enters `client`; [`Operator::new`] checks
    /// it on the wire instead ([`crate::leader::wire`]).
    pub fn with_client(config: Config, client: kube::Client, renderer: Arc<Renderer>) -> Self {
        let fence = Fence::for_election(config.leader_election.is_some());
        let fenced = fenced_client(client.clone(), fence.clone());
        Self::assemble(config, client, fenced, fence, renderer)
    }

    /// The operator whose controller writes through `fenced`, which
    /// checks `fence`.
    fn assemble(
        config: Config,
        client: kube::Client,
        fenced: kube::Client,
        fence: Fence,
        renderer: Arc<Renderer>,
    ) -> Self {
        #[cfg_attr(not(feature = "observe-by-listing"), allow(unused_mut))]
        let mut ctx = Context::new(fenced, renderer);
        ctx.fence = fence;
        ctx.concurrency = config.max_concurrent_reconciles;
        #[cfg(feature = "observe-by-listing")]
        {
            ctx.observe_by_listing = config.observe_by_listing;
        }
        Operator {
            config,
            client,
            ctx: Arc::new(ctx),
            identity: crate::leader::default_identity(),
            ready: watch::channel(false).0,
        }
    }

    fn with_identity(mut self, identity: String) -> Self {
        self.identity = identity;
        self
    }

    /// What every reconcile shares: the client, renderer and metrics.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Turns true once plugins are loaded (ConfigMaps included) and false
    /// when the operator stops: what `/readyz` and gRPC health report.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Run until `shutdown` resolves (or the Lease is lost); reconciles in
    /// flight finish first.
    ///
    /// # Errors
    /// A port is taken, leader election is misconfigured, or the Lease was
    /// lost ([`OperatorError::LostLease`]).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), OperatorError> {
        let Operator {
            config,
            client,
            ctx,
            identity,
            ready,
        } = self;
        // One signal fans out to the servers, the elector and the controller.
        let stop = shutdown.shared();
        // The servers also stop when the run ends for another reason (the
        // Lease lost): nothing else would tell them to drain.
        let (ending_tx, ending_rx) = watch::channel(false);
        let drain = {
            let stop = stop.clone();
            let mut ending = ending_rx;
            async move {
                tokio::select! {
                    () = stop => {}
                    _ = ending.wait_for(|e| *e) => {}
                }
            }
            .shared()
        };
        // If this future is dropped (aborted) rather than stopped, nothing
        // it spawned keeps running.
        let mut spawned = AbortOnDrop::default();

        let http = match config.metrics_addr {
            Some(addr) => {
                let listener = bind("metrics", addr).await?;
                let serving = serve::serve_on(
                    listener,
                    ctx.metrics.clone(),
                    ready.subscribe(),
                    drain.clone(),
                );
                Some(spawned.track(tokio::spawn(serving)))
            }
            None => None,
        };
        let grpc = match &config.grpc {
            Some(grpc) => {
                let listener = bind("gRPC", grpc.addr).await?;
                let addr = listener.local_addr().unwrap_or(grpc.addr);
                tracing::info!(%addr, tls = grpc.tls.is_some(), "serving gRPC");
                let server = crate::grpc::Server {
                    client: client.clone(),
                    renderer: Arc::clone(&ctx.renderer),
                    ready: ready.subscribe(),
                    tls: grpc.tls.clone(),
                    auth: grpc.auth.clone(),
                    limits: grpc.limits,
                    metrics: ctx.metrics.clone(),
                    liveness: grpc.liveness.clone(),
                    namespace: config.namespace.clone(),
                };
                Some(spawned.track(tokio::spawn(server.serve(listener, drain.clone()))))
            }
            None => None,
        };

        let (leader_tx, mut leader_rx) = watch::channel(config.leader_election.is_none());
        // Every replica loads plugin ConfigMaps, so a new leader serves the
        // same plugins at once; only the leader reports.
        let (synced_tx, mut synced_rx) = watch::channel(config.plugin_configmaps.is_none());
        let source = config.plugin_configmaps.as_ref().map(|cms| {
            tracing::info!(namespace = ?cms.namespace, "watching plugin ConfigMaps");
            let scope = Scope {
                plugins: cms.namespace.clone(),
                databases: config.namespace.clone(),
            };
            let registry = Arc::clone(&ctx.renderer.registry);
            let shadow = Arc::clone(&ctx) as _;
            let source = PluginSource::new(
                client.clone(),
                registry,
                shadow,
                ctx.requeue.clone(),
                scope,
                leader_rx.clone(),
            );
            spawned.track(tokio::spawn(source.run(synced_tx)))
        });
        // StoragePlugin specs are a plugin source too, on every replica: a
        // new leader serves the same versions and defaults at once.
        let (specs_tx, mut specs_rx) = watch::channel(config.plugin_configmaps.is_none());
        let driver = config.plugin_configmaps.as_ref().map(|cms| {
            let driver = crate::rollout::Driver {
                client: client.clone(),
                registry: Arc::clone(&ctx.renderer.registry),
                shadow: Arc::clone(&ctx) as _,
                requeue: ctx.requeue.clone(),
                metrics: ctx.metrics.clone(),
                database_namespace: config.namespace.clone(),
                plugin_namespace: cms.namespace.clone(),
                leader: leader_rx.clone(),
            };
            spawned.track(tokio::spawn(driver.run(specs_tx)))
        });
        let readiness = {
            let (ready, mut synced, mut specs) =
                (ready.clone(), synced_rx.clone(), specs_rx.clone());
            spawned.track(tokio::spawn(async move {
                if synced.wait_for(|s| *s).await.is_ok() && specs.wait_for(|s| *s).await.is_ok() {
                    let _ = ready.send(true);
                }
            }))
        };

        let (elector_stop_tx, mut elector_stop_rx) = watch::channel(false);
        // Without election this process leads for its whole life: keep the
        // sender (`_always_leader`), or watchers would see it closed.
        let (elector, _always_leader) = match &config.leader_election {
            Some(le) => {
                let mut election =
                    LeaderElection::new(client.clone(), &le.namespace, &le.lease, identity.clone());
                election.lease_duration = le.lease_duration;
                election.renew_period = le.renew_period;
                election.fence = Some(ctx.fence.clone());
                let stopped = async move {
                    let _ = elector_stop_rx.wait_for(|s| *s).await;
                };
                (
                    Some(spawned.track(tokio::spawn(election.run(leader_tx, stopped)))),
                    None,
                )
            }
            None => (None, Some(leader_tx)),
        };

        let mut stopped = false;
        tokio::select! {
            _ = async {
                let _ = synced_rx.wait_for(|s| *s).await;
                let _ = specs_rx.wait_for(|s| *s).await;
                let _ = leader_rx.wait_for(|l| *l).await;
            } => {}
            _ = stop.clone() => stopped = true,
        }
        let mut lost = false;
        if *leader_rx.borrow() && !stopped {
            tracing::info!(namespace = ?config.namespace, "leading: reconciling Databases");
            let records = config.publish_plugin_records.then(|| {
                spawned.track(tokio::spawn(publish_records(
                    Arc::clone(&ctx),
                    config.namespace.clone(),
                )))
            });
            let (lost_tx, lost_rx) = watch::channel(false);
            let mut leader = leader_rx.clone();
            let stop = stop.clone();
            let fence = ctx.fence.clone();
            controller::run(Arc::clone(&ctx), config.namespace.as_deref(), async move {
                tokio::select! {
                    Ok(_) = leader.wait_for(|l| !*l) => { let _ = lost_tx.send(true); }
                    () = fence.lapsed() => {
                        tracing::warn!("the leader fence fell (no renewal in lease duration − renew period): writes refused, stopping");
                        let _ = lost_tx.send(true);
                    }
                    _ = stop => {}
                }
            })
            .await;
            if let Some(records) = records {
                records.abort();
            }
            lost = *lost_rx.borrow();
        }
        readiness.abort();
        let _ = ready.send(false);
        if let Some(source) = source {
            source.abort();
        }
        if let Some(driver) = driver {
            driver.abort();
        }
        // Release the Lease only after the controller stopped writing.
        let _ = elector_stop_tx.send(true);
        if let Some(elector) = elector {
            match elector.await {
                Ok(result) => result?,
                Err(e) => tracing::warn!(error = %e, "leader election task failed"),
            }
        }
        // Both servers drain in parallel from here: one deadline for both,
        // so a stop takes at most 5 s, not 5 s each.
        let _ = ending_tx.send(true);
        let drained = tokio::time::Instant::now() + Duration::from_secs(5);
        if let Some(http) = http {
            let _ = tokio::time::timeout_at(drained, http).await;
        }
        if let Some(grpc) = grpc {
            match tokio::time::timeout_at(drained, grpc).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server failed"),
                Err(_) => tracing::warn!("gRPC server did not stop within 5s"),
                _ => {}
            }
        }
        if lost {
            return Err(OperatorError::LostLease);
        }
        tracing::info!("stopped");
        Ok(())
    }
}

async fn bind(
    what: &'static str,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, OperatorError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| OperatorError::Bind { what, addr, source })
}

/// Keep one StoragePlugin record per plugin, with how many Databases use it
/// (the leader only; a steady state writes nothing). Hot reloads publish at
/// once; this catches Database counts and lost writes. Databases are
/// counted in the controller's cache: listing them every 30 s cost the API
/// server a LIST of every Database and atoll the whole answer in memory
/// (5 MiB at 1,000 Databases); a LIST only while the cache is not ready.
async fn publish_records(ctx: Arc<Context>, namespace: Option<String>) {
    loop {
        let registry = &ctx.renderer.registry;
        let result = match ctx.databases() {
            Some(store) => {
                let counts = records::Counts::of(store.state().iter().map(AsRef::as_ref));
                records::publish_counted(&ctx.client, registry, &counts, &registry.failures()).await
            }
            None => records::publish_registry(&ctx.client, registry, namespace.as_deref()).await,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not publish StoragePlugin records");
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

/// Aborts the tasks it tracks when dropped (aborting a finished task does
/// nothing), so a dropped [`Operator::run`] leaves no servers or watchers.
#[derive(Default)]
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl AbortOnDrop {
    fn track<T>(&mut self, task: tokio::task::JoinHandle<T>) -> tokio::task::JoinHandle<T> {
        self.0.push(task.abort_handle());
        task
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
