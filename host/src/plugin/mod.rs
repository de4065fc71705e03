//! Plugins: where they come from, how they run, and which one serves each
//! name.
//!
//! - [`runtime`]: the wasmtime sandbox (compile once per digest, a fresh
//!   store per call, deadline and memory cap), with [`limiter`] accounting
//!   everything a store holds, [`bounds`] judging what plugins return,
//!   [`compile`] bounding compilation (and an LRU of compiled components),
//!   `disk_cache` keeping compiled components sealed on disk, `budget`
//!   fitting the plugin slots into the container's memory limit, `sandbox`
//!   the per-call state, `compat` the worlds a component may implement
//!   (0.2, or 0.1 adapted) and `tier` the baseline code hot reloads start
//!   with;
//! - [`registry`]: every loaded version of each plugin, which one is the
//!   default, and which one a Database renders with;
//! - [`source`]: plugins from labelled ConfigMaps, hot-reloaded;
//! - [`oci`]: plugins pulled from OCI registries (wasm artifacts);
//! - [`records`]: the cluster-scoped `StoragePlugin` records;
//! - [`builtin`]: the five plugins embedded in the binary.

pub mod bounds;
pub mod budget;
pub mod builtin;
mod compat;
pub mod compile;
pub(crate) mod configmap;
mod disk_cache;
pub mod limiter;
mod limits;
#[cfg(feature = "native-plugins")]
pub mod native;
pub mod oci;
pub mod oci_load;
pub mod records;
pub mod registry;
pub(crate) mod reload;
pub mod runtime;
mod sandbox;
pub mod source;
mod tier;

pub use disk_cache::{SealKey, SealKeyError};
pub use limiter::StoreCounts;
pub use limits::{CompileLimits, CompileWorker, Limits};
pub use registry::{Entry, Failure, Registry, Source, Unchosen, Wanted};
pub use runtime::{LoadedPlugin, Runtime};
pub use source::{PluginSource, Requeue};
