//! The `atoll` command line: flags, parsed by clap, become an
//! [`operator::Config`](crate::operator::Config) (`atoll run`) or run one of
//! the offline commands in [`offline`].

// The doc comments of the argument types are clap's `--help` text, shown
// verbatim: `<name>` there is a placeholder, not HTML.
#![allow(rustdoc::invalid_html_tags)]

pub mod diff;
pub mod offline;
pub mod plugin_new;
pub mod plugin_test;
pub mod push;
pub mod python_sdk;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::PluginError;
use crate::grpc::{GrpcLimits, Liveness, TlsFiles};
use crate::operator::{Config, GrpcConfig, LeaderElectionConfig, PluginConfig, PluginConfigMaps};
use crate::plugin::{CompileLimits, CompileWorker, Limits, Runtime, SealKey};
use crate::policy::{AllowedKind, OutputPolicy, PodPolicy, PodSecurityLevel};

#[derive(Parser)]
#[command(
    name = "atoll",
    version,
    about = "Run databases on Kubernetes through WebAssembly storage plugins"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Print the objects atoll would apply for Database manifests, without a cluster.
    Render(RenderArgs),
    /// Show what applying Database manifests would change in the cluster in
    /// KUBECONFIG (objects created, changed, pruned, or refused by the
    /// data-loss guard), touching nothing. Exit code: 0 no change, 1
    /// changes, 3 refused, 2 error.
    Diff(diff::DiffArgs),
    /// List, inspect, test or scaffold storage plugins (`atoll plugin ...`
    /// works too).
    #[command(subcommand, alias = "plugin")]
    Plugins(PluginsCmd),
    /// Print the CustomResourceDefinitions of the atoll.dev API as YAML.
    Crds,
    /// Run the operator: reconcile Databases against the cluster in KUBECONFIG
    /// (or the in-cluster service account) until SIGINT or SIGTERM.
    Run(Box<RunArgs>),
    /// Internal: compile one plugin component read from stdin, under an
    /// rlimit, for `atoll run` (see `plugin/compile.rs`).
    #[command(name = "compile-plugin", hide = true)]
    CompilePlugin {
        /// Address-space limit of this process, in bytes.
        #[arg(long)]
        memory_bytes: u64,
        /// Which compiler, how urgently: optimize, baseline or tier-up.
        #[arg(long, default_value = "optimize")]
        job: String,
    },
}

#[derive(Args)]
pub struct RunArgs {
    /// Reconcile only Databases in this namespace (default: all namespaces).
    #[arg(long)]
    namespace: Option<String>,
    /// Cluster DNS domain used in host names and partition endpoints.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
    /// Database reconciles in flight at once (0: unbounded).
    #[arg(long, value_name = "N", default_value_t = crate::controller::DEFAULT_CONCURRENCY)]
    max_concurrent_reconciles: u16,
    /// Address serving /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, env = "ATOLL_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Run several replicas safely: only the holder of a coordination.k8s.io
    /// Lease reconciles; the others wait to take over.
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the Lease (atoll's own namespace in a cluster); each
    /// replica's instance Lease (`atoll-instance-<id>`, which ties the
    /// Member records of its JoinGroup streams to it) is kept there too,
    /// with or without --leader-elect.
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
    #[command(flatten)]
    policy: PolicyArgs,
}

/// What plugins may render: the output policy (see docs/plugins.md,
/// "Output policy"). The defaults allow what the built-in plugins render
/// and pods meeting Pod Security `baseline`; each flag relaxes one rule.
#[derive(Args, Clone)]
pub struct PolicyArgs {
    /// A kind plugins may render besides the defaults (StatefulSet,
    /// Deployment, Service, ConfigMap, PodDisruptionBudget), as
    /// <apiVersion>/<Kind>, e.g. v1/Secret, v1/ServiceAccount or
    /// v1/PersistentVolumeClaim; repeat for several. atoll needs RBAC to
    /// write and watch each.
    #[arg(long = "allow-kind", value_name = "API_VERSION/KIND")]
    allowed_kinds: Vec<AllowedKind>,
    /// Pod Security Standards level rendered pods must meet: restricted,
    /// baseline (no host namespaces, privileged containers, hostPath,
    /// hostPort or added capabilities beyond baseline's list) or privileged
    /// (no pod checks).
    #[arg(long, value_name = "LEVEL", default_value = "baseline", value_parser = pod_security_level)]
    pod_security: PodSecurityLevel,
    /// A capability containers may add beyond the level's list, e.g.
    /// SYS_RESOURCE; repeat for several.
    #[arg(long = "allow-capability", value_name = "CAPABILITY")]
    allowed_capabilities: Vec<String>,
    /// A Service type plugins may render besides ClusterIP (headless
    /// included): NodePort, LoadBalancer or ExternalName; repeat for several.
    #[arg(long = "allow-service-type", value_name = "TYPE", value_parser = ["NodePort", "LoadBalancer", "ExternalName"])]
    allowed_service_types: Vec<String>,
    /// A ServiceAccount rendered pods may run as besides `default` and those
    /// the same render creates; repeat for several.
    #[arg(long = "allow-service-account", value_name = "NAME")]
    allowed_service_accounts: Vec<String>,
}

fn pod_security_level(s: &str) -> Result<PodSecurityLevel, String> {
    s.parse()
}

impl PolicyArgs {
    /// The output policy these flags describe.
    pub fn policy(&self) -> OutputPolicy {
        let mut policy = OutputPolicy::default().allowing(self.allowed_kinds.iter().cloned());
        policy.pods = PodPolicy {
            level: self.pod_security,
            extra_capabilities: self.allowed_capabilities.clone(),
            service_types: self.allowed_service_types.clone(),
            service_accounts: self.allowed_service_accounts.clone(),
        };
        policy
    }
}

/// The gRPC API (served by every replica, leader or not).
#[derive(Args)]
pub struct GrpcArgs {
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
    /// PEM CA certificate(s) whose client certificates identify callers
    /// (mutual TLS: the subject CN is the user, each O a group); callers may
    /// still present a bearer token instead. Needs --grpc-tls-cert.
    #[arg(long, value_name = "FILE", requires = "grpc_tls_cert")]
    grpc_client_ca: Option<PathBuf>,
    /// Namespaces where callers without credentials (legacy Atomix clients,
    /// which send none) may act, with the verbs an authorized caller would
    /// need; everywhere else a call needs a bearer token or a client
    /// certificate, and RBAC decides. Comma-separated.
    #[arg(
        long,
        env = "ATOLL_GRPC_ANONYMOUS_NAMESPACES",
        value_name = "NS[,NS...]",
        value_delimiter = ',',
        value_parser = namespace_name
    )]
    grpc_anonymous_namespaces: Vec<String>,
    /// Open gRPC connections at most; more wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = GrpcLimits::default().max_connections, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    grpc_max_connections: usize,
    /// Concurrent streams (calls, JoinGroup streams included) per gRPC
    /// connection.
    #[arg(long, value_name = "N", default_value_t = GrpcLimits::default().max_streams_per_connection, value_parser = clap::value_parser!(u32).range(1..))]
    grpc_max_streams_per_connection: u32,
    /// Sustained gRPC calls per second per caller (a verified user, or the
    /// address of a caller without credentials); 0 turns the limit off.
    #[arg(long, value_name = "PER_SECOND", default_value_t = GrpcLimits::default().requests_per_second)]
    grpc_rate_limit: u32,
    /// gRPC calls a caller may make at once above its sustained rate.
    #[arg(long, value_name = "N", default_value_t = GrpcLimits::default().burst, value_parser = clap::value_parser!(u32).range(1..))]
    grpc_rate_burst: u32,
}

/// A namespace name as `--grpc-anonymous-namespaces` takes it.
fn namespace_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    let valid = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    valid.then(|| s.to_string()).ok_or_else(|| {
        format!("{s:?} is not a namespace name (a DNS label: lowercase letters, digits and '-')")
    })
}

#[derive(Subcommand)]
pub enum PluginsCmd {
    /// List loaded plugins: the built-ins plus any from --plugin-dir.
    List(PluginArgs),
    /// Load one .wasm file and print its metadata and config schema.
    Inspect {
        /// The plugin component (.wasm).
        file: PathBuf,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Check that a .wasm file loads as a plugin, then push it to an OCI
    /// registry (the CNCF wasm artifact layout) and print its digests.
    Push(Box<push::PushArgs>),
    /// Run a plugin's golden cases (validate, render, status) through the
    /// sandbox and output policy `atoll run` uses; exit 1 when one fails.
    Test(plugin_test::TestArgs),
    /// Scaffold a plugin whose build and tests pass as generated.
    New(plugin_new::NewArgs),
}

/// Options for plugin calls.
#[derive(Args, Clone)]
pub struct SandboxArgs {
    /// Deadline for each plugin call, e.g. 1s or 250ms; a call over it is stopped.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    plugin_timeout: Duration,
    /// Memory cap for each plugin call (all its memories and tables together),
    /// in MiB; a call growing past it is stopped.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    plugin_memory_mib: u16,
    /// Memory atoll keeps for itself, in MiB, when fitting plugin calls into
    /// the container's memory limit (read from the cgroup): the slots
    /// (--plugin-concurrency) are lowered until slots × --plugin-memory-mib
    /// fit the limit minus this; atoll refuses to start if not one fits.
    #[arg(long, value_name = "MIB", default_value_t = 96)]
    plugin_host_reserve_mib: u64,
    /// Key (at least 32 bytes, e.g. a mounted Secret) sealing the compiled
    /// plugin cache, so restarts and replicas reuse it. Without it each
    /// process draws a random key and refuses (recompiles) files of earlier
    /// processes.
    #[arg(long, env = "ATOLL_PLUGIN_CACHE_KEY_FILE", value_name = "FILE")]
    plugin_cache_key_file: Option<PathBuf>,
    /// Most bytes of compiled plugins kept on disk, in MiB (least recently
    /// used removed first).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    plugin_cache_disk_mib: u64,
    /// Largest plugin component compiled, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    plugin_max_component_mib: usize,
    /// Deadline for compiling one plugin component; over it the compiler
    /// is stopped and the plugin refused.
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    plugin_compile_timeout: Duration,
    /// Address-space limit of the plugin compiler process (`atoll run`
    /// compiles in a child process), in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    plugin_compile_memory_mib: u64,
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
    fn limits(&self) -> Limits {
        let defaults = Limits::default();
        Limits {
            call_timeout: self.plugin_timeout,
            memory_bytes: usize::from(self.plugin_memory_mib) << 20,
            concurrent_calls: self
                .plugin_concurrency
                .map_or(defaults.concurrent_calls, usize::from),
            disk_cache_bytes: self.plugin_cache_disk_mib << 20,
            compile: CompileLimits {
                max_component_bytes: self.plugin_max_component_mib << 20,
                timeout: self.plugin_compile_timeout,
                ..defaults.compile.clone()
            },
            ..defaults
        }
    }

    /// `--plugin-cache-dir`, else `$XDG_CACHE_HOME/atoll/components` or
    /// `~/.cache/atoll/components`; none with `--no-plugin-cache`.
    fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_plugin_cache {
            return None;
        }
        self.plugin_cache_dir.clone().or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("atoll").join("components"))
        })
    }

    /// The runtime for one component (`atoll plugins inspect`).
    ///
    /// # Errors
    /// The engine cannot start.
    pub fn runtime(&self) -> Result<Arc<Runtime>, PluginError> {
        let mut runtime = Runtime::new(self.limits())?;
        if let Some(path) = &self.plugin_cache_key_file {
            runtime = runtime.with_seal_key(SealKey::from_file(path)?);
        }
        if let Some(dir) = self.cache_dir() {
            runtime = runtime.with_disk_cache(dir);
        }
        Ok(Arc::new(runtime))
    }
}

/// Where plugins come from.
#[derive(Args, Clone)]
pub struct PluginArgs {
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
    /// What these flags say about plugins.
    pub fn config(&self) -> PluginConfig {
        PluginConfig {
            dir: self.plugin_dir.clone(),
            limits: self.sandbox.limits(),
            cache_dir: self.sandbox.cache_dir(),
            cache_key_file: self.sandbox.plugin_cache_key_file.clone(),
            host_reserve_bytes: None,
            #[cfg(feature = "native-plugins")]
            native: self.native_plugins,
        }
    }

    /// As [`PluginArgs::config`], for `atoll run`: components compile in a
    /// child process (this binary), and plugin slots are fitted to the
    /// container's memory limit.
    pub fn run_config(&self) -> PluginConfig {
        let mut config = self.config();
        if let Ok(exe) = std::env::current_exe() {
            config.limits.compile.worker = CompileWorker::Process {
                exe,
                memory_bytes: self.sandbox.plugin_compile_memory_mib << 20,
            };
        }
        config.host_reserve_bytes = Some(self.sandbox.plugin_host_reserve_mib << 20);
        config
    }
}

impl RunArgs {
    /// The operator's configuration from `atoll run`'s flags.
    pub fn config(&self) -> Config {
        let plugin_namespace = match (&self.plugin_namespace, self.plugin_all_namespaces) {
            (_, true) => None,
            (Some(ns), false) => Some(ns.clone()),
            (None, false) => Some(self.leader_election_namespace.clone()),
        };
        let tls = self
            .grpc
            .grpc_tls_cert
            .clone()
            .zip(self.grpc.grpc_tls_key.clone())
            .map(|(cert, key)| TlsFiles {
                cert,
                key,
                client_ca: self.grpc.grpc_client_ca.clone(),
            });
        Config {
            namespace: self.namespace.clone(),
            cluster_domain: self.cluster_domain.clone(),
            max_concurrent_reconciles: self.max_concurrent_reconciles,
            metrics_addr: Some(self.metrics_addr),
            grpc: Some(GrpcConfig {
                addr: self.grpc.grpc_addr,
                tls,
                auth: crate::grpc::AuthConfig::kubernetes(
                    self.grpc.grpc_anonymous_namespaces.iter().cloned(),
                ),
                limits: GrpcLimits {
                    max_connections: self.grpc.grpc_max_connections,
                    max_streams_per_connection: self.grpc.grpc_max_streams_per_connection,
                    requests_per_second: self.grpc.grpc_rate_limit,
                    burst: self.grpc.grpc_rate_burst,
                },
                // Instance Leases live next to the leader Lease; a replica
                // confined to one namespace sweeps Members there only.
                liveness: Liveness {
                    members_namespace: self.namespace.clone(),
                    ..Liveness::new(&self.leader_election_namespace)
                },
            }),
            leader_election: self.leader_elect.then(|| LeaderElectionConfig {
                namespace: self.leader_election_namespace.clone(),
                lease: self.leader_election_lease.clone(),
                lease_duration: self.lease_duration,
                renew_period: self.renew_period,
            }),
            plugin_configmaps: Some(PluginConfigMaps {
                namespace: plugin_namespace,
            }),
            publish_plugin_records: true,
            plugins: self.plugins.run_config(),
            policy: self.policy.policy(),
            #[cfg(feature = "observe-by-listing")]
            observe_by_listing: false,
        }
    }
}

#[derive(Args)]
pub struct RenderArgs {
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
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
    #[command(flatten)]
    plugins: PluginArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// Multi-document YAML.
    Yaml,
    /// One JSON array.
    Json,
}
