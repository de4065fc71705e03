//! A converged Database costs nothing: a restarted operator creates no
//! duplicates, and a resync of an unchanged Database sends zero write
//! requests, counted from the API server's own `apiserver_request_total`.
//!
//! Its own test binary, because cargo runs test binaries one at a time: no
//! other test of ours writes while this one counts.

mod common;

use std::sync::Arc;
use std::time::Duration;

use atoll::api::Database;
use atoll::controller;
use atoll_testenv::{TestNamespace, kubectl};
use common::{Operator, example, k, wait_ready};
use kube::api::Api;

/// Resources atoll writes (kube-controller-manager and kwok write others,
/// and status of workloads, which are excluded).
const RESOURCES: &[&str] = &[
    "databases",
    "partitions",
    "statefulsets",
    "deployments",
    "services",
    "configmaps",
    "poddisruptionbudgets",
];
const WRITE_VERBS: &[&str] = &[
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// Write requests the API server has served on `RESOURCES` (status
/// subresources only for atoll's own kinds).
async fn writes() -> u64 {
    let out = kubectl(&["get", "--raw", "/metrics"], None).await;
    assert!(out.success, "{}", out.stderr);
    out.stdout
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|line| {
            let label = |name: &str| {
                let key = format!("{name}=\"");
                line.find(&key).map(|i| {
                    let rest = &line[i + key.len()..];
                    &rest[..rest.find('"').unwrap_or(0)]
                })
            };
            let resource = label("resource")?;
            let subresource = label("subresource").unwrap_or("");
            let ours = RESOURCES.contains(&resource)
                && (subresource.is_empty()
                    || (subresource == "status" && matches!(resource, "databases" | "partitions")));
            (ours && WRITE_VERBS.contains(&label("verb")?))
                .then(|| line.rsplit(' ').next()?.parse::<f64>().ok())
                .flatten()
        })
        .map(|v| v as u64)
        .sum()
}

async fn child_uids(ns: &str) -> String {
    k(
        ns,
        &[
            "get",
            "statefulsets,services,configmaps,poddisruptionbudgets,partitions",
            "-l",
            "app.kubernetes.io/managed-by=atoll",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.uid}{\"\\n\"}{end}",
        ],
        None,
    )
    .await
}

#[tokio::test]
async fn restart_creates_no_duplicates_and_resync_writes_nothing() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "steady-state").await;
    let n = ns.name();
    let op = Operator::start(&client, n).await;
    k(n, &["apply", "-f", "-"], Some(&example("raft"))).await;
    wait_ready(&client, n, "orders").await;
    let ctx = Arc::clone(&op.ctx);
    op.stop().await;
    // Let trailing status writes of kube-controller-manager settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = child_uids(n).await;
    assert_eq!(before.lines().count(), 3 * 4 + 6 + 6, "{before}");

    // A restarted operator reconciles everything again (observing its watch
    // caches): same objects, same uids, and not one write.
    let start = writes().await;
    let op = Operator::start(&client, n).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    op.stop().await;
    assert_eq!(
        child_uids(n).await,
        before,
        "no duplicates, nothing recreated"
    );
    assert_eq!(
        writes().await - start,
        0,
        "write requests while a restarted operator reconciled an unchanged Database"
    );

    // Resyncs of the unchanged Database (outside a running controller, so
    // observed by listing): zero write requests.
    let dbs: Api<Database> = Api::namespaced(client.clone(), n);
    let start = writes().await;
    for _ in 0..3 {
        let db = Arc::new(dbs.get("orders").await.unwrap());
        controller::reconcile(db, Arc::clone(&ctx)).await.unwrap();
    }
    let steady = writes().await - start;
    assert_eq!(
        steady, 0,
        "write requests during 3 resyncs of an unchanged Database"
    );

    // The count does see writes: a hand change costs the repair.
    k(n, &["scale", "sts", "orders-1", "--replicas=1"], None).await;
    let start = writes().await;
    let db = Arc::new(dbs.get("orders").await.unwrap());
    controller::reconcile(db, ctx).await.unwrap();
    assert!(
        writes().await - start >= 1,
        "the repair of a scaled StatefulSet is a write"
    );
    ns.cleanup().await;
}
