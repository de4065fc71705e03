//! The part of xtask other crates reuse: the local control plane
//! ([`cluster`]). `atoll-testenv` starts private control planes
//! ([`cluster::PrivatePlane`]) with the same code `cargo xtask cluster up`
//! runs, so there is one way to start one.

pub mod cluster;

/// Sends signal `sig` to process `pid` (callers check the pid is a process
/// they started). xtask's only unsafe code.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, sig);
    }
}
