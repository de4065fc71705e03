//! Converge N raft Databases (default 200, 3 partitions each) from create to
//! all Ready on the local control plane, with the built-in plugins run as
//! WebAssembly components and with the same plugin code compiled natively,
//! in one run (fresh namespace each, interleaved), and print the ratio.
//!
//! ```sh
//! cargo xtask cluster up && export KUBECONFIG=...
//! cargo bench -p atoll-e2e --features native-plugins --bench converge
//! ```
//!
//! `ATOLL_BENCH_DATABASES=N` changes N; `ATOLL_BENCH_ROUNDS=R` repeats the
//! pair (wasm, native) R times. Per run: total time, API requests per
//! Database (all clients, from `apiserver_request_total`), API server CPU and
//! this process's CPU (the controller runs in it, release build).

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use atoll::api::Database;
use atoll::operator::PluginConfig;
use atoll_e2e::Operator;
use atoll_testenv::{TestNamespace, client};
use kube::api::Api;

fn database(i: usize) -> Database {
    atoll_e2e::raft_database(&format!("db-{i:04}"), 1)
}

struct Figures {
    total: Duration,
    requests_per_db: f64,
    apiserver_cpu: Duration,
    own_cpu: Duration,
}

#[tokio::main]
async fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let count = env("ATOLL_BENCH_DATABASES", 200);
    let rounds = env("ATOLL_BENCH_ROUNDS", 1);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let (mut wasm, mut native) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        wasm.push(converge(count, false).await);
        native.push(converge(count, true).await);
    }
    let total = |runs: &[Figures]| runs.iter().map(|f| f.total.as_secs_f64()).sum::<f64>();
    println!(
        "converge {count} raft Databases x 3 partitions: wasm / native = {:.3} (total time over {rounds} round(s))",
        total(&wasm) / total(&native)
    );
}

async fn converge(count: usize, native: bool) -> Figures {
    let client = client().await;
    let ns = TestNamespace::new(&client, "bench-converge").await;
    let n = ns.name().to_string();
    // As `atoll run [--native-plugins]` builds it.
    let plugins = PluginConfig {
        native,
        ..PluginConfig::default()
    };
    let renderer = plugins.renderer("cluster.local").unwrap();
    let operator = Operator::start_with(&client, &n, renderer).await;
    let dbs: Api<Database> = Api::namespaced(client.clone(), &n);

    let before = support::ApiSnapshot::take().await;
    let own_before = support::process_cpu(std::process::id()).unwrap_or_default();
    let started = Instant::now();
    support::create_and_wait_ready(&dbs, count, database).await;
    let total = started.elapsed();
    let own_cpu = support::process_cpu(std::process::id())
        .unwrap_or_default()
        .saturating_sub(own_before);
    let (requests, _, _, apiserver_cpu) = support::ApiSnapshot::take().await.since(&before);
    let figures = Figures {
        total,
        requests_per_db: requests as f64 / count as f64,
        apiserver_cpu,
        own_cpu,
    };
    println!(
        "{:>6}: {count} Ready in {:.1}s; API requests per Database {:.1} (all clients); API server CPU {:.1}s; atoll (this process) CPU {:.1}s",
        if native { "native" } else { "wasm" },
        figures.total.as_secs_f64(),
        figures.requests_per_db,
        figures.apiserver_cpu.as_secs_f64(),
        figures.own_cpu.as_secs_f64(),
    );
    operator.stop().await;
    ns.cleanup().await;
    support::wait_namespace_gone(&client, &n).await;
    figures
}
