//! `atoll run` SIGKILLed again and again while it applies Databases'
//! children: after the last restart everything converges to exactly what the
//! plugins render — no duplicates, no orphans, nothing missing.

use std::time::Duration;

use atoll_e2e::{k, managed, patch_database, wait_ready};
use atoll_testenv::{TestNamespace, client};

const DATABASES: usize = 8;
const KILLS: usize = 8;

fn database(i: usize) -> String {
    format!(
        r#"{{"apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
            "metadata": {{"name": "db-{i}"}},
            "spec": {{"partitions": 3, "storage": {{"plugin": "raft",
                "config": {{"clusters": 3, "replicas": 1,
                    "volumeClaimTemplate": {{"size": "1Gi"}}}}}}}}}}"#
    )
}

#[tokio::test]
async fn repeated_sigkill_mid_apply_converges_without_duplicates_or_orphans() {
    let _records = atoll_e2e::plugin_records_shared().await; // atoll run writes them
    let client = client().await;
    let ns = TestNamespace::new(&client, "crash").await;
    let n = ns.name();
    atoll_testenv::install_crds(&client, atoll::api::crds()).await;
    for i in 0..DATABASES {
        k(n, &["apply", "-f", "-"], Some(&database(i))).await;
    }

    // Kill at growing delays, changing specs in between, so each run finds
    // work half done by the previous one.
    let mut seen_at_kill = Vec::new();
    for round in 0..KILLS {
        let mut atoll = atoll_e2e::start_atoll(n);
        tokio::time::sleep(Duration::from_millis(400 + 150 * round as u64)).await;
        atoll.kill().unwrap(); // SIGKILL
        atoll.wait().unwrap();
        seen_at_kill.push(managed(n).await.len());
        let db = format!("db-{}", round % DATABASES);
        let partitions = if round % 2 == 0 { 4 } else { 3 };
        patch_database(
            n,
            &db,
            &format!(r#"{{"spec": {{"partitions": {partitions}}}}}"#),
        )
        .await;
    }
    eprintln!("children present at each SIGKILL: {seen_at_kill:?}");

    let atoll = atoll_e2e::KillOnDrop(atoll_e2e::start_atoll(n));
    for i in 0..DATABASES {
        wait_ready(&client, n, &format!("db-{i}")).await;
    }

    atoll_e2e::assert_exactly_rendered(&client, n).await;

    drop(atoll);
    ns.cleanup().await;
}
