//! atoll: run databases on Kubernetes through WebAssembly storage plugins.
//!
//! The data flows through these modules in order (docs/architecture.md has
//! the whole picture):
//! - [`contract`]: the plugin contract's data types (a leaf);
//! - [`plugin`]: where plugins come from and how they run — the sandboxed
//!   [`runtime`](plugin::runtime), the [`registry`](plugin::registry), the
//!   hot-reloading ConfigMap [`source`](plugin::source), StoragePlugin
//!   [`records`](plugin::records);
//! - [`render`]: Database → plugin input → render → [`policy`] → objects;
//! - [`rollout`]: StoragePlugin spec versions and staged rollouts with
//!   health gates;
//! - [`controller`]: one reconcile as its steps — observe, render, plan
//!   (the data-loss guard), converge, readiness, status;
//! - [`grpc`]: the gRPC API (Atomix-compatible database, membership and
//!   primitive services, plugins, health, reflection);
//! - [`operator`]: the whole service built from a [`operator::Config`]
//!   (controller, plugin source, leader election, HTTP and gRPC servers);
//! - shared vocabulary: [`api`] (resources, labels, condition reasons),
//!   [`error`], [`metrics`], [`manifest`].

pub mod api;
pub mod cli;
pub mod contract;
pub mod controller;
pub mod error;
pub mod grpc;
pub mod leader;
pub mod manifest;
pub mod metrics;
pub mod operator;
pub mod plugin;
pub mod policy;
pub mod render;
pub mod rollout;
pub mod serve;
pub mod sync;

pub use error::{PluginError, PolicyError, RenderError};
pub use operator::{Config, Operator};
