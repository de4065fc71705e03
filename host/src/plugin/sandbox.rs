//! What one plugin call's store holds: the empty WASI context, bounded
//! output pipes, the `log` import (bounded in lines and bytes) and the
//! memory limiter (`plugin/limiter.rs`).

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::contract::bindings_v0_1::atoll::storage::types::Level as LevelV1;
use crate::contract::bindings_v0_2::atoll::storage::types::Level as LevelV2;
use crate::contract::{Level, bindings, bindings_v0_1, bindings_v0_2};

use super::bounds::LOG_BYTES_PER_CALL;
use super::limiter::Limiter;

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
    /// Lines the `log` import may still forward in this call.
    pub(super) log_budget: usize,
    /// Bytes the `log` import may still forward in this call.
    pub(super) log_bytes: usize,
    /// Log lines dropped or cut over the budgets.
    pub(super) log_dropped: usize,
}

impl CallState {
    pub(super) fn new(wasi: WasiCtx, limiter: Limiter, plugin: Arc<str>) -> Self {
        CallState {
            wasi,
            table: ResourceTable::new(),
            limiter,
            plugin,
            log_budget: LOG_LINES_PER_CALL,
            log_bytes: LOG_BYTES_PER_CALL,
            log_dropped: 0,
        }
    }
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
    fn log(&mut self, level: Level, mut message: String) {
        if self.log_budget == 0 || self.log_bytes == 0 {
            self.log_dropped += 1;
            return;
        }
        self.log_budget -= 1;
        if message.len() > self.log_bytes {
            message = super::configmap::truncate(message, self.log_bytes);
            self.log_dropped += 1;
        }
        self.log_bytes = self.log_bytes.saturating_sub(message.len());
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
