//! The plugin runtime: sandboxed wasmtime components.
//!
//! - One [`Engine`] per [`Runtime`] (and, once a hot reload needs it, a
//!   baseline one: `plugin/tier.rs`), each with an epoch ticker thread for
//!   deadlines.
//! - Each component is compiled once per sha256 digest and reused. Hot
//!   reloads ([`Runtime::load_tiered`]) serve baseline code first and
//!   optimized code once it is ready (`plugin/tier.rs`).
//! - Each plugin gets an [`InstancePre`](wasmtime::component::InstancePre)
//!   (linking done once); every call runs in a fresh [`Store`] and instance, so
//!   no state leaks between Databases or calls.
//! - WASI is linked with an empty context: no preopened directories, no
//!   network, no environment, no arguments. Guest stdout/stderr go to bounded
//!   in-memory pipes that are forwarded to `tracing` after the call.
//! - Every call has a deadline (epoch interruption) and a memory cap over
//!   everything its store holds (all memories and tables together, plus
//!   counts of instances, memories and tables: `plugin/limiter.rs`). Traps,
//!   deadlines and memory exhaustion come back as [`PluginError`]s; the host
//!   keeps serving.
//! - What a call returns is bounded before the host keeps or parses it
//!   (`plugin/bounds.rs`): metadata sizes and schema depth, messages cut for
//!   status, rendered objects measured before parsing.
//! - Compilation is bounded in input size, time and (with a compiler child
//!   process) memory; compiled components are kept in an LRU
//!   (`plugin/compile.rs`).
//! - Optionally ([`Runtime::with_disk_cache`]) compiled components are kept on
//!   disk, keyed by digest and the engine's compatibility hash and sealed
//!   with an HMAC under a key only this atoll knows (`plugin/disk_cache.rs`):
//!   a file that does not verify is never deserialized; atoll compiles
//!   instead and rewrites it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::error::PluginError;

use super::bounds;
use super::compat::{Instance, Pre};
use super::compile::{self, Compiled, Job};
use super::configmap;
use super::disk_cache::{DiskCache, SealKey};
use super::limiter::{Denied, Limiter};
pub use super::limits::Limits;
use super::sandbox::{CallState, forward_output};
use super::tier::{Baseline, Code};
use crate::contract::bindings::Plugin;
use crate::contract::bindings_v0_1::Plugin as PluginV1;
use crate::contract::bindings_v0_2::Plugin as PluginV2;
use crate::contract::{
    Digest, Metadata, PluginDatabase, PluginRenderError, Rendered, StatusReport, Violation,
};
use crate::sync::MutexExt;

/// How often the epoch advances; deadlines are rounded up to this.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Compiles and runs plugins. Cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    pub(super) linker: Linker<CallState>,
    /// Winch, for [`Runtime::load_tiered`], made when it first has a
    /// component to compile (a runtime that never hot-reloads a new one
    /// keeps none); `None` where it cannot run.
    pub(super) baseline: OnceLock<Option<Baseline>>,
    limits: Limits,
    pub(super) compiled: Mutex<Compiled>,
    pub(super) disk_cache: Option<DiskCache>,
    /// Seals the disk cache and the compiler child's output.
    pub(super) key: SealKey,
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
    /// The engine cannot be configured, its ticker thread cannot start, or
    /// no random seal key can be drawn.
    pub fn new(limits: Limits) -> Result<Self, PluginError> {
        let engine = Engine::new(&compile::engine_config()).map_err(PluginError::engine)?;
        let key = SealKey::random().map_err(|e| PluginError::Engine(e.to_string()))?;
        let linker = new_linker(&engine)?;
        start_ticker(&engine)?;

        Ok(Runtime {
            engine,
            linker,
            baseline: OnceLock::new(),
            slots: tokio::sync::Semaphore::new(limits.concurrent_calls.max(1)),
            compiled: Mutex::new(Compiled::new(limits.compiled_in_memory)),
            limits,
            disk_cache: None,
            key,
            compilations: AtomicUsize::new(0),
        })
    }

    /// Seal the disk cache (and the compiler child's output) with `key`
    /// instead of this process's random key, e.g. from a Secret, so restarts
    /// and replicas reuse each other's compiled components. Call before
    /// [`Runtime::with_disk_cache`].
    pub fn with_seal_key(mut self, key: SealKey) -> Self {
        self.key = key;
        if let Some(cache) = &mut self.disk_cache {
            cache.key = self.key.clone();
        }
        self
    }

    /// Keep compiled components in `dir` (created when first written), at
    /// most [`Limits::disk_cache_bytes`]. A file not sealed with this
    /// runtime's key (corrupt, foreign, or from a process with another key),
    /// or written by another wasmtime build or configuration, is refused
    /// and replaced: see `plugin/disk_cache.rs` for what the key choice
    /// means for restarts.
    pub fn with_disk_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.disk_cache = Some(DiskCache {
            dir: dir.into(),
            engine_hash: compile::engine_hash(&self.engine),
            key: self.key.clone(),
            max_bytes: self.limits.disk_cache_bytes,
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

    /// How many compiled components (by digest) the runtime keeps for
    /// reuse (at most [`Limits::compiled_in_memory`]).
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
        let pre = Pre::new(&self.linker, &component).map_err(|e| wrong_world(origin, e))?;
        self.describe(origin, digest, bytes.len(), Code::new(pre, true))
    }

    /// Call `metadata()` through `code` and check it: the plugin loaded.
    pub(super) fn describe(
        self: &Arc<Self>,
        origin: &str,
        digest: Digest,
        size: usize,
        code: Arc<Code>,
    ) -> Result<LoadedPlugin, PluginError> {
        let mut plugin = LoadedPlugin {
            runtime: Arc::clone(self),
            code,
            name: Arc::from(origin),
            metadata: Metadata {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                config_schema: String::new(),
            },
            digest,
            size,
            native: None,
            peak_memory: std::sync::atomic::AtomicUsize::new(0),
        };
        let metadata = plugin.call("metadata", |p, s| p.metadata(s))?;
        check_metadata(origin, &metadata)?;
        plugin.name = Arc::from(metadata.name.as_str());
        plugin.metadata = metadata;
        Ok(plugin)
    }

    /// The optimized component of `bytes`: from memory, from disk, or
    /// compiled now.
    fn compile(
        &self,
        origin: &str,
        digest: Digest,
        bytes: &[u8],
    ) -> Result<Component, PluginError> {
        self.compile_as(Job::Optimize, origin, digest, bytes)
    }

    /// [`Runtime::compile`] as `job` ([`Job::Optimize`] or [`Job::TierUp`]).
    pub(super) fn compile_as(
        &self,
        job: Job,
        origin: &str,
        digest: Digest,
        bytes: &[u8],
    ) -> Result<Component, PluginError> {
        if let Some(c) = self.compiled.locked().get(&digest) {
            return Ok(c);
        }
        let not_component = |reason: String| PluginError::NotAComponent {
            origin: origin.to_string(),
            reason,
        };
        compile::check_bytes(bytes, &self.limits.compile).map_err(not_component)?;
        // Compiling outside the lock: two different plugins compile in parallel;
        // a duplicate compile of the same digest is harmless.
        let cached = self
            .disk_cache
            .as_ref()
            .and_then(|c| c.load(&self.engine, digest));
        let component = match cached {
            Some(component) => component,
            None => {
                let started = std::time::Instant::now();
                let (component, body) = compile::compile(
                    &self.engine,
                    job,
                    &self.key,
                    digest,
                    bytes,
                    &self.limits.compile,
                )
                .map_err(|failed| not_component(failed.into_reason()))?;
                tracing::info!(origin, bytes = bytes.len(), elapsed = ?started.elapsed(), "compiled a plugin component");
                self.compilations.fetch_add(1, Ordering::Relaxed);
                if let Some(cache) = &self.disk_cache {
                    cache.store(digest, &body);
                }
                component
            }
        };
        self.compiled.locked().insert(digest, component.clone());
        Ok(component)
    }

    fn store(
        &self,
        engine: &Engine,
        plugin: &Arc<str>,
    ) -> (Store<CallState>, [MemoryOutputPipe; 2]) {
        let stdout = MemoryOutputPipe::new(self.limits.output_bytes);
        let stderr = MemoryOutputPipe::new(self.limits.output_bytes);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let limiter = Limiter::new(self.limits.memory_bytes, self.limits.store);
        let state = CallState::new(wasi, limiter, Arc::clone(plugin));
        let mut store = Store::new(engine, state);
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

/// Advance `engine`'s epoch every [`EPOCH_TICK`] until it is dropped.
pub(super) fn start_ticker(engine: &Engine) -> Result<(), PluginError> {
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
        .map(drop)
        .map_err(|e| PluginError::Engine(format!("cannot start the epoch ticker: {e}")))
}

/// WASI (with the empty context of `plugin/sandbox.rs`) and the host
/// functions of every contract version, for `engine`'s components.
pub(super) fn new_linker(engine: &Engine) -> Result<Linker<CallState>, PluginError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(PluginError::engine)?;
    Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(PluginError::engine)?;
    // Older worlds' imports have other names (`atoll:storage/host@0.2.0`,
    // `@0.1.0`): 0.x minor versions are not semver-compatible.
    PluginV2::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(PluginError::engine)?;
    PluginV1::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(PluginError::engine)?;
    Ok(linker)
}

pub(super) fn wrong_world(origin: &str, e: wasmtime::Error) -> PluginError {
    PluginError::WrongWorld {
        origin: origin.to_string(),
        reason: format!("{e:#}"),
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
    bounds::check_metadata_sizes(m).map_err(bad)?;
    if !valid_name {
        return Err(bad(format!(
            "name {:?} must be a DNS label: lowercase letters, digits and '-', at most 63 characters",
            configmap::truncate(m.name.clone(), 80)
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
    pub(super) code: Arc<Code>,
    name: Arc<str>,
    metadata: Metadata,
    digest: Digest,
    size: usize,
    native: Option<NativeCalls>,
    /// Most bytes of memories and tables one call of it held.
    peak_memory: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("version", &self.metadata.version)
            .field("contract", &self.contract())
            .field("optimized", &self.is_optimized())
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
        self.code.current().contract()
    }

    /// Whether calls run optimized code (Cranelift's), or still the
    /// baseline code a hot reload started with ([`Runtime::load_tiered`]).
    pub fn is_optimized(&self) -> bool {
        self.code.is_optimized()
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Most bytes of linear memories and tables any one call of this plugin
    /// has held so far (what `--plugin-memory-mib` must cover).
    pub fn peak_memory(&self) -> usize {
        self.peak_memory.load(std::sync::atomic::Ordering::Relaxed)
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
        let result = self.call("validate", |p, s| p.validate(s, db))?;
        Ok(result.map_err(|v| bounds::cut_violations(&self.name, v)))
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
        match self.call("render", |p, s| p.render(s, db))? {
            Ok(rendered) => {
                // Judged before anything parses the objects.
                bounds::check_render_shape(&rendered.objects).map_err(|reason| {
                    PluginError::Oversized {
                        plugin: self.name.to_string(),
                        function: "render",
                        reason,
                    }
                })?;
                Ok(Ok(rendered))
            }
            Err(e) => Ok(Err(bounds::cut_render_error(&self.name, e))),
        }
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
        let report = self.call("status", |p, s| p.status(s, db, observed))?;
        Ok(bounds::cut_status(&self.name, report))
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
        // the deadline. Unconstrained: called from a tokio task whose coop
        // budget is spent, `acquire` would return Pending and wake itself
        // forever, and this loop would never yield to reset the budget.
        let acquire = tokio::task::unconstrained(self.runtime.slots.acquire());
        let _slot =
            futures::executor::block_on(acquire).expect("the call semaphore is never closed");
        let pre = self.code.current();
        let (mut store, pipes) = self.runtime.store(pre.engine(), &self.name);
        let result = pre
            .instantiate(&mut store)
            .and_then(|instance| f(&instance, &mut store));
        let [stdout, stderr] = pipes;
        forward_output(&self.name, "stdout", &stdout.contents());
        let stderr_tail = forward_output(&self.name, "stderr", &stderr.contents());
        self.peak_memory.fetch_max(
            store.data().limiter.peak(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let dropped = store.data().log_dropped;
        if dropped > 0 {
            tracing::warn!(plugin = %self.name, function, dropped, "plugin log lines over the per-call limits (lines or bytes) were dropped or cut");
        }
        result.map_err(|err| {
            let plugin = self.name.to_string();
            let limits = &self.runtime.limits;
            let message = format!("{err:#}");
            if let Some(denied) = store.data().limiter.denied {
                match denied {
                    Denied::Memory { requested } => PluginError::MemoryLimit {
                        plugin,
                        function,
                        limit: limits.memory_bytes,
                        requested,
                    },
                    Denied::TableElements { requested } => PluginError::StoreLimit {
                        plugin,
                        function,
                        reason: format!(
                            "a table of {requested} elements; at most {} are allowed",
                            limits.store.table_elements
                        ),
                    },
                }
            } else if message.contains("resource limit exceeded") {
                // wasmtime's count limits (instances, memories, tables).
                PluginError::StoreLimit {
                    plugin,
                    function,
                    reason: format!(
                        "{}; at most {} instances, {} memories and {} tables are allowed",
                        message.rsplit(": ").next().unwrap_or(&message),
                        limits.store.instances,
                        limits.store.memories,
                        limits.store.tables
                    ),
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
                    message: bounds::cut(
                        &self.name,
                        "trap",
                        match stderr_tail {
                            Some(tail) => format!("{trap}; plugin stderr: {tail}"),
                            None => trap,
                        },
                        bounds::MESSAGE_BYTES,
                    ),
                }
            }
        })
    }
}
