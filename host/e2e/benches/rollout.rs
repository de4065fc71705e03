//! A staged rollout versus an immediate reload, on the local control plane:
//! N raft Databases (default 200, 3 partitions each) move to a new raft
//! release either at once (a labelled ConfigMap, the shorthand) or in three
//! gated steps (a StoragePlugin spec: canary 10%, then 50%, then 100%).
//!
//! ```sh
//! cargo xtask cluster up && export KUBECONFIG=...
//! cargo bench -p atoll-e2e --bench rollout   # ATOLL_BENCH_DATABASES=N to change N
//! ```
//!
//! Prints, per mode, the total time from the change until every Database is
//! Ready on the new digest, and for the staged rollout the time of each step
//! (from the step's start until the next began or the rollout completed):
//! what the health gates cost against what atoll itself takes. One run, both
//! modes, each in a fresh namespace. Writes the cluster-scoped StoragePlugin
//! `raft` (cleared at the end): do not run it beside the e2e tests.

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use atoll::api::{Database, StoragePlugin};
use atoll::contract::Digest;
use atoll_e2e::{Operator, k, ready_on};
use atoll_testenv::{TestNamespace, client};
use kube::api::Api;

const LABELLED: &str = env!("ATOLL_TEST_RAFT_LABELLED_WASM");

fn database(i: usize) -> Database {
    atoll_e2e::raft_database(&format!("db-{i:04}"), 1)
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("ATOLL_BENCH_DATABASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let client = client().await;
    atoll_e2e::ResetPlugin::now(&client, "raft").await;
    let immediate = scenario(&client, count, false).await;
    atoll_e2e::ResetPlugin::now(&client, "raft").await;
    let staged = scenario(&client, count, true).await;
    atoll_e2e::ResetPlugin::now(&client, "raft").await;
    println!(
        "{count} Databases: immediate {:.1}s, staged {:.1}s (ratio {:.2})",
        immediate.as_secs_f64(),
        staged.as_secs_f64(),
        staged.as_secs_f64() / immediate.as_secs_f64()
    );
}

async fn scenario(client: &kube::Client, count: usize, staged: bool) -> Duration {
    let mode = if staged { "staged" } else { "immediate" };
    let ns = TestNamespace::new(client, "bench-rollout").await;
    let n = ns.name().to_string();
    let operator = Operator::start_with_plugin_source(client, &n).await;
    let dbs: Api<Database> = Api::namespaced(client.clone(), &n);
    support::create_and_wait_ready(&dbs, count, database).await;
    let new = Digest::of(&std::fs::read(LABELLED).unwrap()).to_string();
    let file = format!("--from-file=plugin.wasm={LABELLED}");
    k(&n, &["create", "configmap", "raft-next", &file], None).await;

    let api_before = support::ApiSnapshot::take().await;
    let started = Instant::now();
    if staged {
        let canary = (count / 10).max(1);
        let yaml = format!(
            "apiVersion: atoll.dev/v1alpha1\nkind: StoragePlugin\nmetadata: {{name: raft}}\nspec:\n  versions:\n  - {{name: v1, source: {{builtin: {{}}}}}}\n  - {{name: v2, source: {{configMap: {{namespace: {n}, name: raft-next}}}}}}\n  target: v2\n  rollout: {{canary: {{count: {canary}}}, waves: [{{percent: 50}}, {{percent: 100}}], gateDeadlineSeconds: 600}}\n"
        );
        k(&n, &["apply", "-f", "-"], Some(&yaml)).await;
    } else {
        k(
            &n,
            &["label", "configmap", "raft-next", "atoll.dev/plugin=raft"],
            None,
        )
        .await;
    }
    let plugins: Api<StoragePlugin> = Api::all(client.clone());
    let mut steps: Vec<(u32, Duration)> = Vec::new();
    loop {
        let list = dbs.list(&Default::default()).await.unwrap().items;
        let done = list.iter().filter(|d| ready_on(d, &new)).count();
        if staged {
            let rollout = plugins
                .get("raft")
                .await
                .ok()
                .and_then(|p| p.status?.rollout);
            if let Some(r) = rollout.filter(|r| r.to.digest == new)
                && steps.last().map(|s| s.0) != Some(r.step)
                && r.phase == "Progressing"
            {
                steps.push((r.step, started.elapsed()));
            }
        }
        if done == count {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1200),
            "{mode}: {done}/{count} on the new digest after 20 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let total = started.elapsed();
    let (requests, _, writes, cpu) = support::ApiSnapshot::take().await.since(&api_before);
    println!(
        "{mode}: {count} Databases on the new digest in {:.1}s; {requests} API requests ({writes} writes), API server CPU {:.1}s",
        total.as_secs_f64(),
        cpu.as_secs_f64()
    );
    for (i, (step, began)) in steps.iter().enumerate() {
        let end = steps.get(i + 1).map_or(total, |s| s.1);
        println!(
            "  step {step}: began at {:.1}s, took {:.1}s",
            began.as_secs_f64(),
            (end - *began).as_secs_f64()
        );
    }
    operator.stop().await;
    let name = ns.name().to_string();
    drop(ns);
    support::wait_namespace_gone(client, &name).await;
    total
}
