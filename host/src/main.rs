//! The `atoll` command.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kube::ResourceExt;

use atoll::policy::{AllowedKind, OutputPolicy};
use atoll::registry::Registry;
use atoll::render::Renderer;
use atoll::runtime::{Limits, Runtime};

/// jemalloc, returning freed memory to the system within about a second (a
/// background thread purges pages unused for 1 s). glibc's malloc kept what
/// compiling plugins and bursts of reconciles once used, per thread arena:
/// with 1,000 Databases atoll sat at 88–117 MiB with glibc and 65–77 MiB
/// with this (BENCHMARKS.md, "Memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main` (its `malloc_conf` global; the
/// symbol is prefixed because the allocator does not replace `malloc`).
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[derive(Parser)]
#[command(
    name = "atoll",
    version,
    about = "Run databases on Kubernetes through WebAssembly storage plugins"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the objects atoll would apply for Database manifests, without a cluster.
    Render(RenderArgs),
    /// List or inspect storage plugins.
    #[command(subcommand)]
    Plugins(PluginsCmd),
    /// Print the CustomResourceDefinitions of the atoll.dev API as YAML.
    Crds,
    /// Run the operator: reconcile Databases against the cluster in KUBECONFIG
    /// (or the in-cluster service account) until SIGINT or SIGTERM.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Reconcile only Databases in this namespace (default: all namespaces).
    #[arg(long)]
    namespace: Option<String>,
    /// Cluster DNS domain used in host names and partition endpoints.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Database reconciles in flight at once (0: unbounded).
    #[arg(long, value_name = "N", default_value_t = atoll::controller::DEFAULT_CONCURRENCY)]
    max_concurrent_reconciles: u16,
    /// Address serving /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, env = "ATOLL_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Run several replicas safely: only the holder of a coordination.k8s.io
    /// Lease reconciles; the others wait to take over.
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the Lease (atoll's own namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "atoll-system")]
    leader_election_namespace: String,
    /// Name of the Lease.
    #[arg(long, default_value = "atoll")]
    leader_election_lease: String,
    /// How long a Lease holder stays leader without renewing, e.g. 15s.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// How often the holder renews, e.g. 5s (less than half the lease duration).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    renew_period: Duration,
    /// Namespace watched for plugin ConfigMaps (labelled atoll.dev/plugin=<name>,
    /// binaryData plugin.wasm or plugin.wasm.gz); default: atoll's own
    /// namespace, as for the Lease.
    #[arg(long, value_name = "NAMESPACE")]
    plugin_namespace: Option<String>,
    /// Watch plugin ConfigMaps in every namespace (needs cluster-wide
    /// ConfigMap read access).
    #[arg(long, conflicts_with = "plugin_namespace")]
    plugin_all_namespaces: bool,
    #[command(flatten)]
    grpc: GrpcArgs,
    #[command(flatten)]
    plugins: PluginArgs,
}

/// The gRPC API (served by every replica, leader or not).
#[derive(Args)]
struct GrpcArgs {
    /// Address serving the gRPC API (Atomix database, membership and
    /// primitive services; plugins; health; reflection).
    #[arg(long, env = "ATOLL_GRPC_ADDR", default_value = "0.0.0.0:5679")]
    grpc_addr: std::net::SocketAddr,
    /// PEM certificate (chain) to serve gRPC over TLS; needs --grpc-tls-key.
    #[arg(long, value_name = "FILE", requires = "grpc_tls_key")]
    grpc_tls_cert: Option<PathBuf>,
    /// PEM private key of --grpc-tls-cert.
    #[arg(long, value_name = "FILE", requires = "grpc_tls_cert")]
    grpc_tls_key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum PluginsCmd {
    /// List loaded plugins: the built-ins plus any from --plugin-dir.
    List(PluginArgs),
    /// Load one .wasm file and print its metadata and config schema.
    Inspect {
        /// The plugin component (.wasm).
        file: PathBuf,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
}

/// Options for plugin calls.
#[derive(Args, Clone)]
struct SandboxArgs {
    /// Deadline for each plugin call, e.g. 1s or 250ms; a call over it is stopped.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    plugin_timeout: Duration,
    /// Memory cap for each plugin call, in MiB; a call growing past it is stopped.
    #[arg(long, default_value_t = 64)]
    plugin_memory_mib: usize,
    /// Directory keeping compiled plugins across restarts (keyed by digest and
    /// wasmtime build); default $XDG_CACHE_HOME/atoll/components or
    /// ~/.cache/atoll/components. A corrupt file there is ignored.
    #[arg(long, env = "ATOLL_PLUGIN_CACHE_DIR", value_name = "DIR")]
    plugin_cache_dir: Option<PathBuf>,
    /// Compile plugins at every start instead of keeping them on disk.
    #[arg(long, conflicts_with = "plugin_cache_dir")]
    no_plugin_cache: bool,
    /// Plugin instances alive at once; more calls wait for a free slot
    /// (default: twice the CPUs, at least 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    plugin_concurrency: Option<u16>,
}

impl SandboxArgs {
    fn runtime(&self) -> Result<Arc<Runtime>> {
        let limits = Limits {
            call_timeout: self.plugin_timeout,
            memory_bytes: self.plugin_memory_mib << 20,
            concurrent_calls: self
                .plugin_concurrency
                .map_or(Limits::default().concurrent_calls, usize::from),
            ..Limits::default()
        };
        let mut runtime = Runtime::new(limits)?;
        let default_dir = || {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("atoll").join("components"))
        };
        if !self.no_plugin_cache
            && let Some(dir) = self.plugin_cache_dir.clone().or_else(default_dir)
        {
            runtime = runtime.with_disk_cache(dir);
        }
        Ok(Arc::new(runtime))
    }
}

/// Where plugins come from.
#[derive(Args, Clone)]
struct PluginArgs {
    /// Directory of .wasm plugins loaded after the built-ins; a plugin with a
    /// built-in's name replaces it.
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
    /// Call the built-in plugins' code compiled into atoll, without the
    /// WebAssembly sandbox: only to measure what WebAssembly costs.
    #[cfg(feature = "native-plugins")]
    #[arg(long, hide = true)]
    native_plugins: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

impl PluginArgs {
    fn registry(&self) -> Result<Arc<Registry>> {
        let runtime = self.sandbox.runtime()?;
        #[cfg(feature = "native-plugins")]
        let registry = if self.native_plugins {
            Registry::with_native_builtins(runtime)?
        } else {
            Registry::with_builtins(runtime)?
        };
        #[cfg(not(feature = "native-plugins"))]
        let registry = Registry::with_builtins(runtime)?;
        if let Some(dir) = &self.plugin_dir {
            registry.load_dir(dir)?;
        }
        Ok(Arc::new(registry))
    }
}

#[derive(Args)]
struct RenderArgs {
    /// Database manifest (YAML or JSON, several documents allowed); `-` reads
    /// standard input. Repeat for several files.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    files: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Yaml)]
    output: Format,
    /// Cluster DNS domain used in host names and partition endpoints.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Kinds plugins may render, as <apiVersion>/<Kind>; repeat to list
    /// several. Defaults to StatefulSet, Deployment, Service, ConfigMap,
    /// PodDisruptionBudget, PersistentVolumeClaim, Secret and ServiceAccount.
    #[arg(long = "allow-kind", value_name = "API_VERSION/KIND")]
    allowed_kinds: Vec<AllowedKind>,
    #[command(flatten)]
    plugins: PluginArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Multi-document YAML.
    Yaml,
    /// One JSON array.
    Json,
}

fn main() {
    let cli = Cli::parse();
    // The operator logs its work; one-shot commands only warn.
    let (json, default_level) = match &cli.cmd {
        Cmd::Run(args) => (args.log_json, "info"),
        _ => (false, "warn"),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_level.into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Render(args) => render(args),
        Cmd::Plugins(PluginsCmd::List(args)) => list(args),
        Cmd::Plugins(PluginsCmd::Inspect { file, sandbox }) => inspect(&file, sandbox),
        Cmd::Run(args) => operate(args),
        Cmd::Crds => {
            let crds: Vec<serde_json::Value> = atoll::api::crds()
                .into_iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?;
            emit(&yaml_documents(&crds)?)
        }
    }
}

/// A uid for offline renders, so owner references are complete; the
/// operator uses the Database's real uid.
const OFFLINE_UID: &str = "00000000-0000-0000-0000-000000000000";

fn render(args: RenderArgs) -> Result<()> {
    let mut databases = Vec::new();
    for file in &args.files {
        let text = if file == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading standard input")?;
            s
        } else {
            std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
        };
        let origin = if file == "-" {
            "<stdin>"
        } else {
            file.as_str()
        };
        for mut db in atoll::manifest::parse_databases(origin, &text)? {
            db.metadata.uid.get_or_insert_with(|| OFFLINE_UID.into());
            databases.push((origin.to_string(), db));
        }
    }

    let mut policy = OutputPolicy::default();
    if !args.allowed_kinds.is_empty() {
        policy.allowed_kinds = args.allowed_kinds;
    }
    let renderer = Renderer {
        registry: args.plugins.registry()?,
        policy,
        cluster_domain: args.cluster_domain,
    };

    let mut objects = Vec::new();
    for (origin, db) in &databases {
        let id = format!("{}/{}", db.namespace().unwrap_or_default(), db.name_any());
        let desired = renderer
            .render(db)
            .with_context(|| format!("{origin}: Database {id}"))?;
        eprintln!(
            "# Database {id}: plugin {} {}, {} objects, {} partitions",
            desired.plugin.name,
            desired.plugin.version,
            desired.objects.len(),
            desired.partitions.len()
        );
        for partition in renderer.partition_objects(db, &desired) {
            objects.push(serde_json::to_value(partition)?);
        }
        objects.extend(desired.objects);
    }

    emit(&match args.output {
        Format::Json => serde_json::to_string_pretty(&objects)? + "\n",
        Format::Yaml => yaml_documents(&objects)?,
    })
}

fn yaml_documents(objects: &[serde_json::Value]) -> Result<String> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(object)?);
    }
    Ok(out)
}

/// Write to stdout; a closed pipe (`atoll render ... | head`) is not an error.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn operate(args: RunArgs) -> Result<()> {
    let renderer = Arc::new(Renderer {
        registry: args.plugins.registry()?,
        policy: OutputPolicy::default(),
        cluster_domain: args.cluster_domain.clone(),
    });
    tokio::runtime::Runtime::new()?.block_on(operate_async(args, renderer))
}

async fn operate_async(args: RunArgs, renderer: Arc<Renderer>) -> Result<()> {
    use atoll::{controller, leader::LeaderElection, serve};
    use tokio::sync::watch;

    let identity = atoll::leader::default_identity();
    let mut config = kube::Config::infer()
        .await
        .context("cannot reach the Kubernetes API (set KUBECONFIG, or run in a pod)")?;
    // Every request names this replica, so the API server's audit log tells
    // replicas apart (the failover test checks that only the leader writes).
    let agent = format!("atoll/{} ({identity})", env!("CARGO_PKG_VERSION"));
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&agent)
            .context("the replica identity is not a header value")?,
    ));
    let client = kube::Client::try_from(config).context("cannot build a Kubernetes client")?;
    client
        .apiserver_version()
        .await
        .context("the Kubernetes API does not answer")?;
    let mut ctx = controller::Context::new(client.clone(), Arc::clone(&renderer));
    ctx.concurrency = args.max_concurrent_reconciles;
    let ctx = Arc::new(ctx);

    // One signal fans out to the HTTP server, the elector and the controller.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // Ready means able to serve: plugins loaded (ConfigMaps included) and the
    // API reachable, on standby replicas too (or rollouts would stall on them).
    let (ready_tx, ready_rx) = watch::channel(false);
    // Bound here so a taken port fails the start, rather than leaving a
    // process that never answers its probes.
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {}", args.metrics_addr))?;
    let http = tokio::spawn(serve::serve_on(
        metrics_listener,
        ctx.metrics.clone(),
        ready_rx.clone(),
        stopped(stop_rx.clone()),
    ));

    let grpc = tokio::spawn(
        serve_grpc(
            &args.grpc,
            client.clone(),
            Arc::clone(&renderer),
            ctx.metrics.clone(),
            ready_rx.clone(),
            stopped(stop_rx.clone()),
        )
        .await?,
    );

    let (leader_tx, mut leader_rx) = watch::channel(!args.leader_elect);
    let (elector_stop_tx, elector_stop_rx) = watch::channel(false);
    // Without election this process leads for its whole life: keep the
    // sender, or watchers would see it closed and stop at once.
    let _always_leader = (!args.leader_elect).then(|| leader_tx.clone());
    // Every replica loads plugin ConfigMaps, so a new leader serves the same
    // plugins at once; only the leader reports (Events, StoragePlugins).
    let plugin_namespace = match (&args.plugin_namespace, args.plugin_all_namespaces) {
        (_, true) => None,
        (Some(ns), false) => Some(ns.clone()),
        (None, false) => Some(args.leader_election_namespace.clone()),
    };
    tracing::info!(namespace = ?plugin_namespace, "watching plugin ConfigMaps");
    let (synced_tx, mut synced_rx) = watch::channel(false);
    let source = atoll::source::PluginSource::new(
        Arc::clone(&ctx),
        plugin_namespace,
        args.namespace.clone(),
        leader_rx.clone(),
    );
    tokio::spawn(source.run(synced_tx));
    {
        let ready_tx = ready_tx.clone();
        let mut synced_rx = synced_rx.clone();
        tokio::spawn(async move {
            if synced_rx.wait_for(|s| *s).await.is_ok() {
                let _ = ready_tx.send(true);
            }
        });
    }

    let elector = args.leader_elect.then(|| {
        let mut election = LeaderElection::new(
            client.clone(),
            &args.leader_election_namespace,
            &args.leader_election_lease,
            identity.clone(),
        );
        election.lease_duration = args.lease_duration;
        election.renew_period = args.renew_period;
        tokio::spawn(election.run(leader_tx, stopped(elector_stop_rx)))
    });

    let mut stop = stop_rx.clone();
    tokio::select! {
        _ = async { let _ = synced_rx.wait_for(|s| *s).await; let _ = leader_rx.wait_for(|l| *l).await; } => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    let mut lost = false;
    if *leader_rx.borrow() && !*stop_rx.borrow() {
        tracing::info!(namespace = ?args.namespace, "leading: reconciling Databases");
        let records = tokio::spawn(publish_records(Arc::clone(&ctx), args.namespace.clone()));
        let mut leader = leader_rx.clone();
        let mut stop = stop_rx.clone();
        let (lost_tx, mut lost_rx) = watch::channel(false);
        controller::run(Arc::clone(&ctx), args.namespace.as_deref(), async move {
            tokio::select! {
                Ok(_) = leader.wait_for(|l| !*l) => { let _ = lost_tx.send(true); }
                _ = stop.wait_for(|s| *s) => {}
            }
        })
        .await;
        records.abort();
        lost = *lost_rx.borrow_and_update();
    }
    let _ = ready_tx.send(false);
    // Release the Lease only after the controller stopped writing.
    let _ = elector_stop_tx.send(true);
    if let Some(elector) = elector {
        elector.await??;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    match tokio::time::timeout(Duration::from_secs(5), grpc).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server failed"),
        Err(_) => tracing::warn!("gRPC server did not stop within 5s"),
        _ => {}
    }
    if lost {
        // Like client-go: a replica that lost the Lease exits, so it can never
        // write alongside the new leader; Kubernetes restarts it as a candidate.
        bail!("lost the leader Lease; exiting so only the new leader writes");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Bind the gRPC address now (so a taken port fails `atoll run` at once) and
/// return the server's future, which runs until `shutdown`.
async fn serve_grpc<F: std::future::Future<Output = ()> + Send + 'static>(
    args: &GrpcArgs,
    client: kube::Client,
    renderer: Arc<Renderer>,
    metrics: atoll::metrics::Metrics,
    ready: tokio::sync::watch::Receiver<bool>,
    shutdown: F,
) -> Result<impl std::future::Future<Output = Result<(), atoll::grpc::ServeError>> + use<F>> {
    let listener = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", args.grpc_addr))?;
    // The bound address: with port 0 the kernel picked one.
    let addr = listener.local_addr().unwrap_or(args.grpc_addr);
    tracing::info!(%addr, tls = args.grpc_tls_cert.is_some(), "serving gRPC");
    let tls = args
        .grpc_tls_cert
        .clone()
        .zip(args.grpc_tls_key.clone())
        .map(|(cert, key)| atoll::grpc::TlsFiles { cert, key });
    let server = atoll::grpc::Server {
        client,
        renderer,
        ready,
        tls,
        metrics,
    };
    Ok(server.serve(listener, shutdown))
}

/// Keep one StoragePlugin record per plugin, with how many Databases use it
/// (the leader only; a steady state writes nothing). Hot reloads publish at
/// once; this catches Database counts and lost writes.
async fn publish_records(ctx: Arc<atoll::controller::Context>, namespace: Option<String>) {
    loop {
        let registry = &ctx.renderer.registry;
        let result =
            atoll::plugin_records::publish_registry(&ctx.client, registry, namespace.as_deref())
                .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not publish StoragePlugin records");
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

/// Resolves on SIGINT or SIGTERM (what Kubernetes sends before killing a pod).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn list(args: PluginArgs) -> Result<()> {
    let registry = args.registry()?;
    println!(
        "{:<16} {:<9} {:>9}  {:<20} SOURCE",
        "NAME", "VERSION", "SIZE", "DIGEST"
    );
    for entry in registry.entries() {
        let p = &entry.plugin;
        let digest = p.digest().to_string();
        println!(
            "{:<16} {:<9} {:>9}  {:<20} {}",
            p.metadata().name,
            p.metadata().version,
            p.size(),
            &digest[..digest.len().min(19)],
            entry.source
        );
    }
    Ok(())
}

fn inspect(file: &Path, sandbox: SandboxArgs) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let plugin = sandbox
        .runtime()?
        .load(&file.display().to_string(), &bytes)?;
    let m = plugin.metadata();
    let Ok(schema) = serde_json::from_str::<serde_json::Value>(&m.config_schema) else {
        bail!("{}: config schema is not JSON", file.display());
    };
    let info = serde_json::json!({
        "name": m.name,
        "version": m.version,
        "description": m.description,
        "digest": plugin.digest().to_string(),
        "size": plugin.size(),
        "configSchema": schema,
    });
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}
