//! The part of xtask other crates reuse: the local control plane
//! ([`cluster`]). `atoll-testenv` starts private control planes
//! ([`cluster::PrivatePlane`]) with the same code `cargo xtask cluster up`
//! runs, so there is one way to start one.

pub mod cluster;
