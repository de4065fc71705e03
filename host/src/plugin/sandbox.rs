//! What one plugin call's store holds: the empty WASI context, bounded
//! output pipes, the `log` import and the memory limiter.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::contract::bindings_v0_1::atoll::storage::types::Level as LevelV1;
use crate::contract::bindings_v0_2::atoll::storage::types::Level as LevelV2;
use crate::contract::{Level, bindings, bindings_v0_1, bindings_v0_2};

/// Log lines a plugin may send per call through the `log` import; more are
/// dropped (and counted) so a chatty plugin cannot flood the host's logs.
pub(super) const LOG_LINES_PER_CALL: usize = 200;

/// Forward captured guest output to tracing, one event per line; returns the
/// last few meaningful lines (where a Rust panic message lands).
pub(super) fn forward_output(plugin: &str, stream: &str, bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut tail = std::collections::VecDeque::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        tracing::info!(plugin, stream, "{line}");
        if !line.starts_with("note: run with `RUST_BACKTRACE") {
            if tail.len() == 2 {
                tail.pop_front();
            }
            tail.push_back(line.trim());
        }
    }
    (!tail.is_empty()).then(|| Vec::from(tail).join(" "))
}

/// Per-call store data.
pub(super) struct CallState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: Limiter,
    pub(super) plugin: Arc<str>,
    pub(super) log_budget: usize,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::atoll::storage::types::Host for CallState {}

impl bindings::atoll::storage::host::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        if self.log_budget == 0 {
            return;
        }
        self.log_budget -= 1;
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

// A 0.2 plugin's imports: the same log, with the 0.2 level type.
impl bindings_v0_2::atoll::storage::types::Host for CallState {}

impl bindings_v0_2::atoll::storage::host::Host for CallState {
    fn log(&mut self, level: LevelV2, message: String) {
        let level = match level {
            LevelV2::Trace => Level::Trace,
            LevelV2::Debug => Level::Debug,
            LevelV2::Info => Level::Info,
            LevelV2::Warn => Level::Warn,
            LevelV2::Error => Level::Error,
        };
        bindings::atoll::storage::host::Host::log(self, level, message);
    }
}

// A 0.1 plugin's imports: the same log, with the 0.1 level type.
impl bindings_v0_1::atoll::storage::types::Host for CallState {}

impl bindings_v0_1::atoll::storage::host::Host for CallState {
    fn log(&mut self, level: LevelV1, message: String) {
        let level = match level {
            LevelV1::Trace => Level::Trace,
            LevelV1::Debug => Level::Debug,
            LevelV1::Info => Level::Info,
            LevelV1::Warn => Level::Warn,
            LevelV1::Error => Level::Error,
        };
        bindings::atoll::storage::host::Host::log(self, level, message);
    }
}

/// [`StoreLimits`] that remembers a denied memory growth, so the failure can be
/// reported as memory exhaustion rather than a generic trap.
pub(super) struct Limiter {
    pub(super) inner: StoreLimits,
    pub(super) denied: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let result = self.inner.memory_growing(current, desired, maximum);
        if !matches!(result, Ok(true)) {
            self.denied = Some(desired);
        }
        result
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }
}
