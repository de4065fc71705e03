//! `cargo xtask`: the one entry point for developer tasks.
//!
//! - `cargo xtask plugins` builds the five built-in plugins for `wasm32-wasip2`
//!   and reports their sizes.
//! - `cargo xtask cluster up|down|env` manages the local Kubernetes control plane
//!   (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok).
//! - `cargo xtask test` runs the whole test suite against that control plane.

mod cluster;
mod wasm_build;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "atoll developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the built-in plugins (wasm32-wasip2, size-optimised) and print their sizes.
    Plugins,
    /// Manage the local control plane used by tests and demos.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Start (or reuse) the control plane and run every test in the workspace against it.
    Test,
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Plugins => wasm_build::report(),
        Cmd::Cluster(cmd) => cluster::run(cmd),
        Cmd::Test => test(),
    }
}

/// The README's test command. Stops the control plane afterwards only if this
/// invocation started it, so a developer's running cluster is left alone.
fn test() -> Result<()> {
    let cluster = cluster::ensure_up()?;
    let status = std::process::Command::new(env!("CARGO"))
        .args(["test", "--workspace", "--all-targets"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .status();
    if cluster.started_here {
        cluster::down()?;
    }
    anyhow::ensure!(status?.success(), "tests failed");
    Ok(())
}
