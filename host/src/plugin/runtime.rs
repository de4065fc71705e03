//! The plugin runtime: sandboxed wasmtime components.
//!
//! - One [`Engine`] per [`Runtime`], with an epoch ticker thread for deadlines.
//! - Each component is compiled once per sha256 digest and reused.
//! - Each plugin gets an [`InstancePre`](wasmtime::component::InstancePre)
//!   (linking done once); every call runs in a fresh [`Store`] and instance, so
//!   no state leaks between Databases or calls.
//! - WASI is linked with an empty context: no preopened directories, no
//!   network, no environment, no arguments. Guest stdout/stderr go to bounded
//!   in-memory pipes that are forwarded to `tracing` after the call.
//! - Every call has a deadline (epoch interruption) and a memory cap (store
//!   limits). Traps, deadlines and memory exhaustion come back as
//!   [`PluginError`]s; the host keeps serving.
//! - Optionally ([`Runtime::with_disk_cache`]) compiled components are kept on
//!   disk, keyed by digest and the engine's compatibility hash, so a restart
//!   does not recompile. Each file is sealed with a sha256 over the
//!   component's digest and the file's contents: a corrupt, truncated or
//!   foreign file is never deserialized; atoll compiles instead and rewrites it.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimitsBuilder, Trap};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::error::PluginError;

use super::compat::{Instance, Pre};
use super::disk_cache::DiskCache;
use super::sandbox::{CallState, LOG_LINES_PER_CALL, Limiter, forward_output};
use crate::contract::bindings::Plugin;
use crate::contract::bindings_v0_1::Plugin as PluginV1;
use crate::contract::bindings_v0_2::Plugin as PluginV2;
use crate::contract::{
    Digest, Metadata, PluginDatabase, PluginRenderError, Rendered, StatusReport, Violation,
};
use crate::sync::MutexExt;

/// How often the epoch advances; deadlines are rounded up to this.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Sandbox limits applied to every plugin call.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock deadline per call (default 1 s).
    pub call_timeout: Duration,
    /// Linear memory cap per call, in bytes (default 64 MiB).
    pub memory_bytes: usize,
    /// Bytes of guest stdout and of stderr kept per call (default 64 KiB).
    pub output_bytes: usize,
    /// Plugin instances alive at once; further calls wait for a slot before
    /// their deadline starts (default twice the CPUs, at least 4). Calls are
    /// CPU-bound, so more gains nothing, and each instance holds its own
    /// linear memory: unbounded, 1,000 Databases reconciling at once meant
    /// hundreds of instances.
    pub concurrent_calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_secs(1),
            memory_bytes: 64 << 20,
            output_bytes: 64 << 10,
            concurrent_calls: std::thread::available_parallelism()
                .map_or(4, |n| 2 * n.get())
                .max(4),
        }
    }
}

/// Compiles and runs plugins. Cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    limits: Limits,
    compiled: Mutex<HashMap<Digest, Component>>,
    disk_cache: Option<DiskCache>,
    /// Components compiled by Cranelift (not found in memory or on disk).
    compilations: AtomicUsize,
    /// One permit per instance allowed at once ([`Limits::concurrent_calls`]).
    slots: tokio::sync::Semaphore,
}

impl Runtime {
    /// A runtime with its own engine and epoch ticker (stopped when the
    /// runtime is dropped).
    ///
    /// # Errors
    /// The engine cannot be configured or its ticker thread cannot start.
    pub fn new(limits: Limits) -> Result<Self, PluginError> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config).map_err(PluginError::engine)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(PluginError::engine)?;
        Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(PluginError::engine)?;
        // Older worlds' imports have other names (`atoll:storage/host@0.2.0`,
        // `@0.1.0`): 0.x minor versions are not semver-compatible.
        PluginV2::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(PluginError::engine)?;
        PluginV1::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(PluginError::engine)?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("atoll-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| PluginError::Engine(format!("cannot start the epoch ticker: {e}")))?;

        Ok(Runtime {
            engine,
            linker,
            slots: tokio::sync::Semaphore::new(limits.concurrent_calls.max(1)),
            limits,
            compiled: Mutex::new(HashMap::new()),
            disk_cache: None,
            compilations: AtomicUsize::new(0),
        })
    }

    /// Keep compiled components in `dir` (created when first written) and
    /// reuse them across restarts. A file that is corrupt or was written by
    /// another wasmtime build or configuration is ignored and replaced.
    pub fn with_disk_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        self.disk_cache = Some(DiskCache {
            dir: dir.into(),
            engine_hash: format!("{:016x}", hasher.finish()),
        });
        self
    }

    /// The directory of the on-disk cache, if any.
    pub fn disk_cache_dir(&self) -> Option<&Path> {
        self.disk_cache.as_ref().map(|c| c.dir.as_path())
    }

    /// How many components were compiled rather than found in memory or in
    /// the disk cache.
    pub fn compilations(&self) -> usize {
        self.compilations.load(Ordering::Relaxed)
    }

    /// How many distinct components (by digest) have been compiled.
    pub fn compiled_components(&self) -> usize {
        self.compiled.locked().len()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compile (or reuse) `bytes`, link it against the `atoll:storage/plugin`
    /// world (0.3.x, or 0.2.x and 0.1.x through the adapters in `plugin/compat.rs`), and call
    /// `metadata()`. `origin` names where the bytes came from
    /// in errors, e.g. a file path.
    ///
    /// # Errors
    /// Not a component, another world, or `metadata()` failed or returned unusable metadata.
    pub fn load(self: &Arc<Self>, origin: &str, bytes: &[u8]) -> Result<LoadedPlugin, PluginError> {
        let digest = Digest::of(bytes);
        let component = self.compile(origin, digest, bytes)?;
        let wrong_world = |e: wasmtime::Error| PluginError::WrongWorld {
            origin: origin.to_string(),
            reason: format!("{e:#}"),
        };
        let pre = Pre::new(&self.linker, &component).map_err(wrong_world)?;
        let mut plugin = LoadedPlugin {
            runtime: Arc::clone(self),
            pre,
            name: Arc::from(origin),
            metadata: Metadata {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                config_schema: String::new(),
            },
            digest,
            size: bytes.len(),
            native: None,
        };
        let metadata = plugin.call("metadata", |p, s| p.metadata(s))?;
        check_metadata(origin, &metadata)?;
        plugin.name = Arc::from(metadata.name.as_str());
        plugin.metadata = metadata;
        Ok(plugin)
    }

    fn compile(
        &self,
        origin: &str,
        digest: Digest,
        bytes: &[u8],
    ) -> Result<Component, PluginError> {
        if let Some(c) = self.compiled.locked().get(&digest) {
            return Ok(c.clone());
        }
        let not_component = |reason: String| PluginError::NotAComponent {
            origin: origin.to_string(),
            reason,
        };
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
                return Err(not_component(
                    "it is a core WebAssembly module; build the plugin for wasm32-wasip2, which produces a component".into(),
                ));
            }
            Some([0, b'a', b's', b'm', ..]) => {}
            _ => {
                return Err(not_component(
                    "it does not start with the WebAssembly magic bytes".into(),
                ));
            }
        }
        // Compiling outside the lock: two different plugins compile in parallel;
        // a duplicate compile of the same digest is harmless.
        let cached = self
            .disk_cache
            .as_ref()
            .and_then(|c| c.load(&self.engine, digest));
        let component = match cached {
            Some(component) => component,
            None => {
                // Compiled to bytes, then loaded from them as a warm start
                // loads its cache: what the component keeps is allocated
                // after the compiler's scratch is freed, not among it (a
                // first start sat ~15 MiB above a warm one).
                let compiled = self
                    .engine
                    .precompile_component(bytes)
                    .map_err(|e| not_component(format!("{e:#}")))?;
                // SAFETY: bytes this engine produced a moment ago.
                #[allow(unsafe_code)]
                let component = unsafe { Component::deserialize(&self.engine, &compiled) }
                    .map_err(|e| not_component(format!("{e:#}")))?;
                drop(compiled);
                self.compilations.fetch_add(1, Ordering::Relaxed);
                if let Some(cache) = &self.disk_cache {
                    cache.store(digest, &component);
                }
                component
            }
        };
        self.compiled.locked().insert(digest, component.clone());
        Ok(component)
    }

    fn store(&self, plugin: &Arc<str>) -> (Store<CallState>, [MemoryOutputPipe; 2]) {
        let stdout = MemoryOutputPipe::new(self.limits.output_bytes);
        let stderr = MemoryOutputPipe::new(self.limits.output_bytes);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let state = CallState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter {
                inner: StoreLimitsBuilder::new()
                    .memory_size(self.limits.memory_bytes)
                    .trap_on_grow_failure(true)
                    .build(),
                denied: None,
            },
            plugin: Arc::clone(plugin),
            log_budget: LOG_LINES_PER_CALL,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let ticks = self
            .limits
            .call_timeout
            .as_nanos()
            .div_ceil(EPOCH_TICK.as_nanos());
        store.set_epoch_deadline(ticks.max(1) as u64);
        (store, [stdout, stderr])
    }
}

fn check_metadata(origin: &str, m: &Metadata) -> Result<(), PluginError> {
    let bad = |reason: String| PluginError::BadMetadata {
        origin: origin.to_string(),
        reason,
    };
    let valid_name = !m.name.is_empty()
        && m.name.len() <= 63
        && m.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !m.name.starts_with('-')
        && !m.name.ends_with('-');
    if !valid_name {
        return Err(bad(format!(
            "name {:?} must be a DNS label: lowercase letters, digits and '-', at most 63 characters",
            m.name
        )));
    }
    semver::Version::parse(&m.version).map_err(|e| {
        bad(format!(
            "version {:?} is not semantic versioning: {e}",
            m.version
        ))
    })?;
    serde_json::from_str::<serde_json::Value>(&m.config_schema)
        .map_err(|e| bad(format!("config schema is not JSON: {e}")))?;
    Ok(())
}

/// The same plugin's code compiled into the host (feature `native-plugins`):
/// calls bypass WebAssembly. Only to measure what the sandbox costs.
#[derive(Clone, Copy)]
pub struct NativeCalls {
    pub validate: fn(&PluginDatabase) -> Result<(), Vec<Violation>>,
    pub render: fn(&PluginDatabase) -> Result<Rendered, PluginRenderError>,
    pub status: fn(&PluginDatabase, &[String]) -> StatusReport,
}

/// A plugin ready to call: compiled, linked, and described by its metadata.
pub struct LoadedPlugin {
    runtime: Arc<Runtime>,
    pre: Pre,
    name: Arc<str>,
    metadata: Metadata,
    digest: Digest,
    size: usize,
    native: Option<NativeCalls>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("version", &self.metadata.version)
            .field("contract", &self.pre.contract())
            .field("digest", &self.digest.to_string())
            .finish()
    }
}

impl LoadedPlugin {
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The contract version the component implements: `0.3`, or `0.2` or
    /// `0.1` (adapted: see `plugin/compat.rs`).
    pub fn contract(&self) -> &'static str {
        self.pre.contract()
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Instantiate in a fresh store without calling anything: the fixed cost
    /// every call pays. For benchmarks.
    #[doc(hidden)]
    pub fn instantiate_only(&self) -> Result<(), PluginError> {
        self.call("instantiate", |_, _| Ok(()))
    }

    /// Serve calls with `native` (the same plugin compiled into the host)
    /// instead of the component. For measurements only: no sandbox.
    #[doc(hidden)]
    pub fn set_native(&mut self, native: NativeCalls) {
        self.native = Some(native);
    }

    /// Whether calls run natively (see [`LoadedPlugin::set_native`]).
    pub fn is_native(&self) -> bool {
        self.native.is_some()
    }

    /// `validate(db)`.
    ///
    /// # Errors
    /// The call trapped, ran out of time or memory ([`PluginError`]); the inner result is the plugin's answer.
    pub fn validate(&self, db: &PluginDatabase) -> Result<Result<(), Vec<Violation>>, PluginError> {
        if let Some(native) = &self.native {
            return Ok((native.validate)(db));
        }
        self.call("validate", |p, s| p.validate(s, db))
    }

    /// `render(db)`, before the output policy.
    ///
    /// # Errors
    /// As [`LoadedPlugin::validate`].
    pub fn render(
        &self,
        db: &PluginDatabase,
    ) -> Result<Result<Rendered, PluginRenderError>, PluginError> {
        if let Some(native) = &self.native {
            return Ok((native.render)(db));
        }
        self.call("render", |p, s| p.render(s, db))
    }

    /// `status(db, observed)`.
    ///
    /// # Errors
    /// As [`LoadedPlugin::validate`].
    pub fn status(
        &self,
        db: &PluginDatabase,
        observed: &[String],
    ) -> Result<StatusReport, PluginError> {
        if let Some(native) = &self.native {
            return Ok((native.status)(db, observed));
        }
        self.call("status", |p, s| p.status(s, db, observed))
    }

    /// Run `f` in a fresh store and instance, then forward captured output to
    /// tracing and classify any failure.
    fn call<R>(
        &self,
        function: &'static str,
        f: impl FnOnce(&Instance, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        // Calls run on blocking threads; wait there (the semaphore is never
        // closed) before the store exists, so waiting does not count against
        // the deadline.
        let _slot = futures::executor::block_on(self.runtime.slots.acquire())
            .expect("the call semaphore is never closed");
        let (mut store, pipes) = self.runtime.store(&self.name);
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|instance| f(&instance, &mut store));
        let [stdout, stderr] = pipes;
        forward_output(&self.name, "stdout", &stdout.contents());
        let stderr_tail = forward_output(&self.name, "stderr", &stderr.contents());
        let dropped = LOG_LINES_PER_CALL.saturating_sub(store.data().log_budget);
        if dropped == LOG_LINES_PER_CALL {
            tracing::warn!(plugin = %self.name, function, "plugin log lines over the per-call limit were dropped");
        }
        result.map_err(|err| {
            let plugin = self.name.to_string();
            let limits = &self.runtime.limits;
            if let Some(requested) = store.data().limiter.denied {
                PluginError::MemoryLimit {
                    plugin,
                    function,
                    limit: limits.memory_bytes,
                    requested,
                }
            } else if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                PluginError::Timeout {
                    plugin,
                    function,
                    limit: limits.call_timeout,
                }
            } else {
                let trap = err
                    .downcast_ref::<Trap>()
                    .map_or_else(|| format!("{err:#}"), Trap::to_string);
                PluginError::Trap {
                    plugin,
                    function,
                    message: match stderr_tail {
                        Some(tail) => format!("{trap}; plugin stderr: {tail}"),
                        None => trap,
                    },
                }
            }
        })
    }
}
