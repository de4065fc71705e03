//! The fast tier: every test of the `atoll` package that needs no control
//! plane, in one binary (`cargo test` runs these and nothing else). Tests
//! that need Kubernetes are in `host/e2e` (package `atoll-e2e`).

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used)]

mod cli;
mod data_safety;
mod disk_cache;
mod fuzz;
mod plugin_vectors;
mod runtime;
mod sandbox;
mod support;
