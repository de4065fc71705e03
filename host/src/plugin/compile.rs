//! Compiling components, bounded: the engine's features, the size check
//! before compiling, the worker (a thread, or a child process that can be
//! killed and is limited in memory), and the in-memory LRU of compiled
//! components.
//!
//! Why a child process for `atoll run`: Cranelift gives no way to stop a
//! compilation or to bound its memory, and a hostile component can make it
//! slow or large. A thread can be abandoned at a deadline, but it keeps
//! running and its memory is atoll's, so a runaway compile can still take the
//! container to its memory limit and have atoll killed. A child (`atoll
//! compile-plugin`, the same binary, so the same engine configuration) is
//! killed at the deadline, limited in address space (RLIMIT_AS), and marks
//! itself the first candidate for the OOM killer (`oom_score_adj` 1000), so
//! even in a tight cgroup a runaway compile dies alone. It hands the compiled
//! component back sealed with atoll's cache key over a private pipe; the
//! parent deserializes it through the same sealed path as the disk cache
//! (`disk_cache::deserialize_sealed`), so there is one audited place where
//! bytes become native code. Cost: one process start and a serialize /
//! deserialize per compilation (milliseconds, against seconds of compiling).

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::disk_cache::{SealKey, deserialize_sealed};
use super::limits::{CompileLimits, CompileWorker};
use crate::contract::Digest;

/// The engine configuration every runtime and compiler child uses: the
/// component model, epoch deadlines, and only the WebAssembly features the
/// contract needs. Off: multi-memory (one memory per core module is all a
/// toolchain emits; more would only multiply what a store holds), threads
/// and shared memory, 64-bit memories, GC, exceptions, stack switching,
/// wide arithmetic, custom page sizes, and the async component model. On:
/// what wasm32-wasip2 Rust, componentize-py and componentize-js emit
/// (reference types, bulk memory, SIMD, multi-value, tail calls...).
pub(super) fn engine_config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .wasm_multi_memory(false)
        .wasm_shared_everything_threads(false)
        .wasm_memory64(false)
        .wasm_gc(false)
        .wasm_stack_switching(false)
        .wasm_wide_arithmetic(false)
        .wasm_custom_page_sizes(false);
    // Threads, function references, exceptions and async components are
    // off because wasmtime is built without the `threads`, `gc` and
    // `component-model-async` features (Cargo.toml): their switches do not
    // even exist in this build.
    config
}

/// The engine configuration of baseline code (`plugin/tier.rs`): the same,
/// compiled by Winch, which does not implement tail calls or relaxed SIMD
/// (a component using them is compiled by Cranelift only).
pub(super) fn baseline_config() -> wasmtime::Config {
    let mut config = engine_config();
    config
        .strategy(wasmtime::Strategy::Winch)
        .wasm_tail_call(false)
        .wasm_relaxed_simd(false);
    config
}

/// Which compiler runs, and how urgently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Cranelift, for a load that waits for it.
    Optimize,
    /// Winch: code within a fraction of Cranelift's time, slower to run.
    Baseline,
    /// Cranelift at a low CPU priority, replacing baseline code while it
    /// serves: it must not slow what the reload set in motion.
    TierUp,
}

impl Job {
    /// The name the compiler child is given (`--job`).
    pub fn as_str(self) -> &'static str {
        match self {
            Job::Optimize => "optimize",
            Job::Baseline => "baseline",
            Job::TierUp => "tier-up",
        }
    }

    /// The job named `name`, as [`Job::as_str`] gives it.
    ///
    /// # Errors
    /// No job has that name.
    pub fn parse(name: &str) -> Result<Self, String> {
        [Job::Optimize, Job::Baseline, Job::TierUp]
            .into_iter()
            .find(|j| j.as_str() == name)
            .ok_or_else(|| format!("unknown compile job {name:?}: optimize, baseline or tier-up"))
    }

    fn config(self) -> wasmtime::Config {
        match self {
            Job::Optimize | Job::TierUp => engine_config(),
            Job::Baseline => baseline_config(),
        }
    }
}

/// Lower the calling thread (and the threads it starts afterwards) to nice
/// 10: about a tenth of a busy core's share against normal threads, so a
/// tier-up yields to the API work a reload sets off without starving on a
/// loaded node. Best effort: without it a tier-up only competes harder.
fn low_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, 10) {
        tracing::debug!(error = %e, "cannot lower the compiler's priority");
    }
}

/// The engine's compatibility hash, as the disk cache and seals name it.
pub(super) fn engine_hash(engine: &Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Why a component was not compiled.
pub(super) fn check_bytes(bytes: &[u8], limits: &CompileLimits) -> Result<(), String> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
            return Err("it is a core WebAssembly module; build the plugin for wasm32-wasip2, which produces a component".into());
        }
        Some([0, b'a', b's', b'm', ..]) => {}
        _ => return Err("it does not start with the WebAssembly magic bytes".into()),
    }
    if bytes.len() > limits.max_component_bytes {
        return Err(format!(
            "it is {} bytes; components over {} bytes ({} MiB) are not compiled",
            bytes.len(),
            limits.max_component_bytes,
            limits.max_component_bytes >> 20
        ));
    }
    Ok(())
}

/// Why a compile produced nothing.
#[derive(Debug)]
pub(super) enum Failed {
    /// The compiler refused the component: invalid, or using a feature it
    /// does not implement. Another compiler may take it.
    Refused(String),
    /// A bound stopped it (the deadline, or the compiler child's death,
    /// most likely of its memory limit), or it could not run: another
    /// compiler would fare no better.
    Stopped(String),
}

impl Failed {
    pub(super) fn into_reason(self) -> String {
        match self {
            Failed::Refused(reason) | Failed::Stopped(reason) => reason,
        }
    }
}

/// Compile `bytes` within `limits` as `job` (with `engine`, configured as
/// the job's compiler), returning the component and its serialized form
/// (for the disk cache; a compiler thread leaves it empty for baseline
/// code, which is never cached).
pub(super) fn compile(
    engine: &Engine,
    job: Job,
    key: &SealKey,
    digest: Digest,
    bytes: &[u8],
    limits: &CompileLimits,
) -> Result<(Component, Vec<u8>), Failed> {
    match &limits.worker {
        CompileWorker::Thread => {
            let (tx, rx) = std::sync::mpsc::channel();
            let (engine2, bytes) = (engine.clone(), bytes.to_vec());
            std::thread::Builder::new()
                .name("atoll-compile".into())
                .spawn(move || {
                    let compile = || {
                        let refused = |e: wasmtime::Error| Failed::Refused(format!("{e:#}"));
                        let c = Component::new(&engine2, &bytes).map_err(refused)?;
                        // Baseline code is never cached: nothing to serialize.
                        let body = match job {
                            Job::Baseline => Vec::new(),
                            Job::Optimize | Job::TierUp => c.serialize().map_err(refused)?,
                        };
                        Ok((body, c))
                    };
                    let result = if job == Job::TierUp {
                        // Cranelift compiles functions in parallel on the
                        // current rayon pool: here one low-priority thread.
                        rayon::ThreadPoolBuilder::new()
                            .num_threads(1)
                            .thread_name(|_| "atoll-tier-up".into())
                            .start_handler(|_| low_priority())
                            .build()
                            .map_err(|e| {
                                Failed::Stopped(format!("cannot start the tier-up thread: {e}"))
                            })
                            .and_then(|pool| pool.install(compile))
                    } else {
                        compile()
                    };
                    let _ = tx.send(result);
                })
                .map_err(|e| Failed::Stopped(format!("cannot start a compiler thread: {e}")))?;
            match rx.recv_timeout(limits.timeout) {
                Ok(result) => result.map(|(body, c)| (c, body)),
                Err(_) => Err(Failed::Stopped(format!(
                    "compiling took over {:?} and was given up",
                    limits.timeout
                ))),
            }
        }
        CompileWorker::Process { exe, memory_bytes } => {
            let sealed = compile_in_child(exe, *memory_bytes, job, key, bytes, limits.timeout)?;
            let hash = engine_hash(engine);
            let component =
                deserialize_sealed(engine, key, digest, &hash, &sealed).map_err(|e| {
                    Failed::Stopped(format!("the compiler process's output is unusable: {e}"))
                })?;
            let body = sealed[32..].to_vec();
            Ok((component, body))
        }
    }
}

/// Hidden subcommand name of the compiler child.
pub const CHILD_COMMAND: &str = "compile-plugin";

fn compile_in_child(
    exe: &std::path::Path,
    memory_bytes: u64,
    job: Job,
    key: &SealKey,
    bytes: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, Failed> {
    let stopped = Failed::Stopped;
    let mut child = Command::new(exe)
        .arg(CHILD_COMMAND)
        .arg("--memory-bytes")
        .arg(memory_bytes.to_string())
        .arg("--job")
        .arg(job.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            stopped(format!(
                "cannot start the compiler process {}: {e}",
                exe.display()
            ))
        })?;
    let mut input = Vec::with_capacity(4 + key.bytes().len() + bytes.len());
    input.extend_from_slice(&(key.bytes().len() as u32).to_le_bytes());
    input.extend_from_slice(key.bytes());
    input.extend_from_slice(bytes);
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stderr).take(64 << 10).read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                // Our own child, by its handle.
                let _ = child.kill();
                let _ = child.wait();
                return Err(stopped(format!(
                    "compiling took over {timeout:?}; the compiler process was killed"
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(stopped(format!("waiting for the compiler process: {e}"))),
        }
    };
    let _ = writer.join();
    let out = reader
        .join()
        .map_err(|_| stopped("the compiler output reader panicked".to_string()))?
        .map_err(|e| stopped(format!("reading the compiler process's output: {e}")))?;
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        let why = errors.trim();
        return Err(match (status.code(), why.is_empty()) {
            (None, _) => stopped(format!(
                "the compiler process was killed ({status}); most likely it ran out of memory (its own limit is {} MiB of address space; the OOM killer stops it first when the container runs short)",
                memory_bytes >> 20
            )),
            // `child_main`'s own refusal: what the compiler said.
            (Some(1), false) => Failed::Refused(why.to_string()),
            (Some(_), false) => stopped(why.to_string()),
            (Some(_), true) => stopped(format!("the compiler process failed ({status})")),
        });
    }
    Ok(out)
}

/// The compiler child's `main`: read `[key length u32 LE][key][component]`
/// from stdin, compile as `job`, write the sealed serialized component to
/// stdout. Limits itself first: address space to `memory_bytes`, OOM score
/// to the maximum, and for a tier-up CPU priority to low. Errors go
/// to stderr and a non-zero exit.
pub fn child_main(memory_bytes: u64, job: Job) -> ! {
    let result = (|| -> Result<Vec<u8>, String> {
        // Best effort: a kernel without /proc still gets the rlimit.
        let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
        if job == Job::TierUp {
            // Before any compiler thread starts: they inherit it.
            low_priority();
        }
        let limit = rustix::process::Rlimit {
            current: Some(memory_bytes),
            maximum: Some(memory_bytes),
        };
        rustix::process::setrlimit(rustix::process::Resource::As, limit)
            .map_err(|e| format!("cannot limit the compiler's memory: {e}"))?;
        let mut input = Vec::new();
        std::io::stdin()
            .read_to_end(&mut input)
            .map_err(|e| format!("reading the component: {e}"))?;
        let (len, rest) = input
            .split_at_checked(4)
            .ok_or("the input is too short for a key")?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let (key, bytes) = rest
            .split_at_checked(len)
            .ok_or("the input is too short for its key")?;
        let key = SealKey::from_bytes(key.to_vec());
        let engine = Engine::new(&job.config()).map_err(|e| format!("{e:#}"))?;
        let component = Component::new(&engine, bytes).map_err(|e| format!("{e:#}"))?;
        let body = component.serialize().map_err(|e| format!("{e:#}"))?;
        Ok(key.sealed(Digest::of(bytes), &engine_hash(&engine), &body))
    })();
    match result {
        Ok(sealed) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(&sealed).and_then(|()| out.flush()).is_err() {
                std::process::exit(2);
            }
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}

/// Compiled components by digest, least recently used evicted beyond a
/// count. Evicting only drops the runtime's handle: a loaded plugin keeps
/// its own component alive while it is loaded.
pub(super) struct Compiled {
    entries: HashMap<Digest, (Component, u64)>,
    tick: u64,
    max: usize,
}

impl Compiled {
    pub(super) fn new(max: usize) -> Self {
        Compiled {
            entries: HashMap::new(),
            tick: 0,
            max: max.max(1),
        }
    }

    pub(super) fn get(&mut self, digest: &Digest) -> Option<Component> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(digest).map(|(c, used)| {
            *used = tick;
            c.clone()
        })
    }

    pub(super) fn insert(&mut self, digest: Digest, component: Component) {
        self.tick += 1;
        self.entries.insert(digest, (component, self.tick));
        while self.entries.len() > self.max {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(d, _)| *d)
                .expect("over max means not empty");
            self.entries.remove(&oldest);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}
