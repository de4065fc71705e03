//! The test-support crate against the shared local control plane, one
//! module per topic, in one binary. Needs `cargo xtask cluster up`; fails
//! (never skips) without it.
//!
//! Two tests stay binaries of their own because they change process-wide
//! state the tests here depend on: `missing_control_plane.rs` points
//! `ATOLL_TESTENV_DIR` at an empty directory and removes `KUBECONFIG`, and
//! `private_control_plane.rs` makes a private control plane the default for
//! every helper of its process (`PrivateControlPlane::use_by_default`).

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used)]

mod control_plane;
mod deploy;
mod dns;
