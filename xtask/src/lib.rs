//! The part of xtask other crates reuse: the local control plane
//! ([`cluster`]), and [`nested_cargo`] for running cargo from a process
//! cargo started. `atoll-testenv` starts private control planes
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

/// A `cargo` command for a process that cargo itself started (`cargo
/// xtask`, a test): without the package variables cargo gave this process
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, ...). Build scripts that rerun
/// when those change (ring's does) would otherwise see other values than
/// under a plain `cargo test` and rebuild, with everything built on them.
pub fn nested_cargo() -> std::process::Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&name.as_ref())
        {
            command.env_remove(name.as_ref());
        }
    }
    command
}
