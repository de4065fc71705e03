//! The sandbox's limits: per call, per store, per compilation, and for the
//! caches of compiled components. One struct, [`Limits`], so a new bound is
//! one field (with its default) and not a new parameter everywhere.

use std::path::PathBuf;
use std::time::Duration;

use super::limiter::StoreCounts;

/// Sandbox limits applied to every plugin call and compilation.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock deadline per call (default 1 s).
    pub call_timeout: Duration,
    /// Cap on all linear memories and tables of one call together, in bytes
    /// (default 64 MiB).
    pub memory_bytes: usize,
    /// How many instances, memories and tables one call may create.
    pub store: StoreCounts,
    /// Bytes of guest stdout and of stderr kept per call (default 64 KiB).
    pub output_bytes: usize,
    /// Plugin instances alive at once; further calls wait for a slot before
    /// their deadline starts (default twice the CPUs, at least 4, lowered to
    /// what the memory budget allows: see `plugin/budget.rs`). Calls are
    /// CPU-bound, so more gains nothing, and each instance holds up to
    /// [`Limits::memory_bytes`].
    pub concurrent_calls: usize,
    /// How components are compiled.
    pub compile: CompileLimits,
    /// Most compiled components kept in memory that no loaded plugin uses
    /// any more (least recently used go first; default 16). Components of
    /// loaded plugins stay in memory while they are loaded.
    pub compiled_in_memory: usize,
    /// Most bytes of compiled components kept on disk (default 1 GiB).
    pub disk_cache_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_secs(1),
            memory_bytes: 64 << 20,
            store: StoreCounts::default(),
            output_bytes: 64 << 10,
            concurrent_calls: std::thread::available_parallelism()
                .map_or(4, |n| 2 * n.get())
                .max(4),
            compile: CompileLimits::default(),
            compiled_in_memory: 16,
            disk_cache_bytes: 1 << 30,
        }
    }
}

/// Bounds on compiling one component.
#[derive(Debug, Clone)]
pub struct CompileLimits {
    /// A component larger than this is refused before compiling (default
    /// 64 MiB; componentize-py and componentize-js components are 18-20 MB).
    pub max_component_bytes: usize,
    /// Compiling longer than this is given up (default 600 s: an 18.5 MB
    /// componentize-py component took 73-153 s of wall time, 22-27 s of
    /// CPU, on this project's loaded 2-core test machine; docs/reliability.md).
    pub timeout: Duration,
    /// Where compilation runs.
    pub worker: CompileWorker,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_component_bytes: 64 << 20,
            timeout: Duration::from_secs(600),
            worker: CompileWorker::Thread,
        }
    }
}

/// Where Cranelift runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileWorker {
    /// A thread of this process, given up (left to finish, its result
    /// dropped) at the timeout. Bounds time only: its memory is atoll's.
    Thread,
    /// A child process: `exe compile-plugin` (a hidden subcommand of the
    /// `atoll` binary), killed at the timeout, with its address space
    /// limited to `memory_bytes` and its OOM score raised to the maximum, so
    /// a compile that runs away dies alone, not atoll. The strongest bound;
    /// what `atoll run` uses.
    Process {
        /// The `atoll` binary (normally the running one).
        exe: PathBuf,
        /// Address-space limit of the child (RLIMIT_AS), in bytes.
        memory_bytes: u64,
    },
}
