//! atoll: run databases on Kubernetes through WebAssembly storage plugins.
//!
//! The data flows through these modules in order:
//! - [`runtime`]: sandboxed wasmtime components (compile once per digest,
//!   fresh store per call, deadline and memory cap);
//! - [`source`]: plugins from ConfigMaps, hot-reloaded (shadow render, atomic
//!   swap, last good version kept);
//! - [`registry`]: loaded plugins by name, built-in, from files or ConfigMaps;
//! - [`render`]: Database → plugin input → render → [`policy`] → objects;
//! - [`plan`]: what to apply and prune, or a refusal by the data-loss guard;
//! - [`apply`]: observe owned children, apply what drifted, prune the rest;
//! - [`status`]: conditions and readiness;
//! - [`controller`]: the Database controller tying these together;
//! - [`leader`], [`metrics`], [`serve`], [`plugin_records`]: running it as a
//!   service (Lease election, Prometheus metrics, health endpoints,
//!   StoragePlugin records);
//! - [`grpc`]: the gRPC API (Atomix-compatible database, membership and
//!   primitive services, plugins, health, reflection);
//! - [`api`]: the `atoll.dev/v1alpha1` resources and their CRDs.

pub mod api;
pub mod apply;
pub mod builtin;
pub mod controller;
pub mod error;
pub mod grpc;
pub mod leader;
pub mod manifest;
pub mod metrics;
#[cfg(feature = "native-plugins")]
pub mod native;
pub mod observe;
pub mod plan;
pub mod plugin_records;
pub mod policy;
pub mod registry;
pub mod render;
pub mod runtime;
pub mod serve;
pub mod source;
pub mod status;

pub use error::{PluginError, PolicyError, RenderError};
