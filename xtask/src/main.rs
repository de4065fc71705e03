//! `cargo xtask`: the one entry point for developer tasks.
//!
//! - `cargo xtask plugins` builds the five built-in plugins for `wasm32-wasip2`
//!   and reports their sizes.
//! - `cargo xtask cluster up|down|env` manages the local Kubernetes control plane
//!   (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, CoreDNS,
//!   and two OCI registries).
//! - `cargo xtask test` runs the whole test suite against that control plane.
//! - `cargo xtask demo` runs atoll on it with the examples.
//! - `cargo xtask bench-startup` times `atoll run` to ready, cold and warm.

mod demo;
mod startup;
mod wasm_build;

use anyhow::Result;
use clap::{Parser, Subcommand};
use xtask::cluster;

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
    /// Run atoll on the local control plane: build it, install the CRDs, start
    /// `atoll run` in the background, apply examples/ and wait until every
    /// Database is Ready.
    Demo,
    /// Time `atoll run` from start to /readyz, with a cold and a warm
    /// compiled-plugin cache (release build, local control plane).
    BenchStartup,
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Plugins => plugins(),
        Cmd::Cluster(cmd) => cluster::run(cmd),
        Cmd::Test => test(),
        Cmd::Demo => demo::run(),
        Cmd::BenchStartup => startup::run(),
    }
}

/// `cargo xtask plugins`: build the built-ins and print their sizes.
fn plugins() -> anyhow::Result<()> {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow::anyhow!("xtask is not inside the workspace"))?;
    let packages: Vec<&str> = wasm_build::BUILTIN.iter().map(|(_, p)| *p).collect();
    let paths = wasm_build::build(workspace, &packages).map_err(anyhow::Error::msg)?;
    println!("{:<16} {:>10}  PATH", "PLUGIN", "BYTES");
    let mut too_big = Vec::new();
    for ((name, _), path) in wasm_build::BUILTIN.iter().zip(&paths) {
        let size = std::fs::metadata(path)?.len();
        println!("{name:<16} {size:>10}  {}", path.display());
        if size >= wasm_build::SIZE_LIMIT {
            too_big.push(*name);
        }
    }
    anyhow::ensure!(
        too_big.is_empty(),
        "plugins over the 1 MiB ConfigMap limit: {too_big:?}"
    );
    Ok(())
}

/// The README's test command: both tiers (`--workspace` includes
/// `atoll-e2e`, the tests that need the control plane, which is not a
/// default member). Stops the control plane afterwards only if this
/// invocation started it, so a developer's running cluster is left alone.
fn test() -> Result<()> {
    let cluster = cluster::ensure_up()?;
    // Without xtask's package variables: they would rebuild ring and what
    // is built on it, which a plain `cargo test` built without them.
    let status = xtask::nested_cargo()
        .args(["test", "--workspace"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env(cluster::DNS_ENV, &cluster.dns)
        .envs(cluster.registries.env())
        .status();
    if cluster.started_here {
        cluster::down()?;
    }
    anyhow::ensure!(status?.success(), "tests failed");
    Ok(())
}
