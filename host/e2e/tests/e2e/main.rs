//! The end-to-end tier: atoll against a real control plane, one module per
//! topic, in one binary (`cargo test -p atoll-e2e`; `cargo xtask test` starts
//! the control plane and runs everything). Without a control plane every
//! test fails with instructions; none skips.
//!
//! The tests run in parallel in this one process. A test that makes atoll
//! write the cluster-scoped StoragePlugin records (`atoll run`, an operator
//! loading plugin ConfigMaps) holds `atoll_e2e::plugin_records_shared()`;
//! one that asserts on them holds `atoll_e2e::plugin_records_exclusive()`.
//!
//! `apiserver_restart` is a binary of its own (`tests/apiserver_restart.rs`):
//! it points every testenv helper of its process at a private control plane.

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used)]

mod apiserver;
mod atomix_client;
mod availability;
mod containment;
mod crash;
mod data_safety;
mod day2_pods;
mod diff;
mod dns;
mod failover;
mod grpc;
mod grpc_abuse;
mod grpc_auth;
mod hostile;
mod hot_reload;
mod leader;
mod least_privilege;
mod members;
mod oci;
mod operator;
mod plugin_records;
mod python_plugin;
mod rollout;
mod split_brain;
mod steady_state;
