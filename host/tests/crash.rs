//! `atoll run` SIGKILLed again and again while it applies Databases'
//! children: after the last restart everything converges to exactly what the
//! plugins render — no duplicates, no orphans, nothing missing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use atoll::api::Database;
use atoll_testenv::{TestNamespace, client};
use common::{k, patch_database, renderer, wait_ready};
use kube::ResourceExt;
use kube::api::Api;

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

fn start(ns: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["run", "--namespace", ns, "--plugin-namespace", ns])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", atoll_testenv::kubeconfig_env())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Children atoll manages in `ns`, as `kind/name`.
async fn managed(ns: &str) -> Vec<String> {
    let out = k(
        ns,
        &[
            "get",
            "statefulsets,services,configmaps,poddisruptionbudgets,partitions",
            "-l",
            "app.kubernetes.io/managed-by=atoll",
            "-o",
            "name",
        ],
        None,
    )
    .await;
    out.lines().map(str::to_string).collect()
}

#[tokio::test]
async fn repeated_sigkill_mid_apply_converges_without_duplicates_or_orphans() {
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
        let mut atoll = start(n);
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

    let mut atoll = start(n);
    for i in 0..DATABASES {
        wait_ready(&client, n, &format!("db-{i}")).await;
    }

    // Exactly what the plugins render, each owned by its live Database.
    let api: Api<Database> = Api::namespaced(client.clone(), n);
    let mut expected = BTreeSet::new();
    let mut uids = BTreeMap::new();
    for db in api.list(&Default::default()).await.unwrap() {
        let desired = renderer().render(&db).unwrap();
        for p in renderer().partition_objects(&db, &desired) {
            expected.insert(format!("partition.atoll.dev/{}", p.name_any()));
        }
        for o in &desired.objects {
            let kind = o["kind"].as_str().unwrap().to_lowercase();
            let group = match kind.as_str() {
                "statefulset" => ".apps",
                "poddisruptionbudget" => ".policy",
                _ => "",
            };
            expected.insert(format!(
                "{kind}{group}/{}",
                o["metadata"]["name"].as_str().unwrap()
            ));
        }
        uids.insert(db.uid().unwrap(), db.name_any());
    }
    let actual: BTreeSet<String> = managed(n).await.into_iter().collect();
    assert_eq!(actual, expected, "children after {KILLS} SIGKILLs");

    let out = k(
        n,
        &[
            "get",
            "statefulsets,services,configmaps,poddisruptionbudgets,partitions",
            "-l",
            "app.kubernetes.io/managed-by=atoll",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.ownerReferences[?(@.controller==true)].uid}{\"\\n\"}{end}",
        ],
        None,
    )
    .await;
    for line in out.lines() {
        let (name, owner) = line.split_once(' ').unwrap_or((line, ""));
        assert!(
            uids.contains_key(owner),
            "{name} is an orphan (owner {owner:?})"
        );
    }

    atoll.kill().unwrap();
    atoll.wait().unwrap();
    ns.cleanup().await;
}
