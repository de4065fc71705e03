//! A converged Database costs nothing: a restarted operator creates no
//! duplicates, and a resync of an unchanged Database sends zero write
//! requests, counted from the API server's audit log for the test's own
//! namespace (a cluster-wide counter also counted the garbage collector
//! emptying earlier tests' namespaces, and failed when one overlapped).

use std::sync::Arc;
use std::time::Duration;

use atoll::api::Database;
use atoll::controller;
use atoll_e2e::{Operator, example, k, wait_ready};
use atoll_testenv::TestNamespace;
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
    // Only atoll's own slice (the partition-group Service's, named after the
    // Database): Kubernetes' EndpointSlice controller writes the others.
    "endpointslices",
];
const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// Write requests the API server has served in namespace `ns` on
/// `RESOURCES` (status subresources only for atoll's own kinds).
fn writes(ns: &str) -> u64 {
    atoll_testenv::audit_log()
        .iter()
        .filter(|e| {
            let object = &e["objectRef"];
            let resource = object["resource"].as_str().unwrap_or_default();
            let subresource = object["subresource"].as_str().unwrap_or_default();
            object["namespace"] == ns
                && RESOURCES.contains(&resource)
                && (resource != "endpointslices" || object["name"] == "orders")
                && (subresource.is_empty()
                    || (subresource == "status" && matches!(resource, "databases" | "partitions")))
                && WRITE_VERBS.contains(&e["verb"].as_str().unwrap_or_default())
        })
        .count() as u64
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
    // Per cluster 4, 6 partition Services and Partitions, and the
    // partition-group Service.
    assert_eq!(before.lines().count(), 3 * 4 + 6 + 6 + 1, "{before}");

    // A restarted operator reconciles everything again (observing its watch
    // caches): same objects, same uids, and not one write.
    let start = writes(n);
    let op = Operator::start(&client, n).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    op.stop().await;
    assert_eq!(
        child_uids(n).await,
        before,
        "no duplicates, nothing recreated"
    );
    assert_eq!(
        writes(n) - start,
        0,
        "write requests while a restarted operator reconciled an unchanged Database"
    );

    // Resyncs of the unchanged Database (outside a running controller, so
    // observed by listing): zero write requests, and no plugin call. The
    // first reconcile renders from the memo the operator filled, but may ask
    // the plugin for status: a child's status may have changed after the
    // operator stopped; the three after it see exactly what it saw.
    let dbs: Api<Database> = Api::namespaced(client.clone(), n);
    let db = Arc::new(dbs.get("orders").await.unwrap());
    let renders = plugin_calls(&ctx, "atoll_plugin_call_duration_seconds_count", "render");
    controller::reconcile(db, Arc::clone(&ctx)).await.unwrap();
    assert_eq!(
        plugin_calls(&ctx, "atoll_plugin_call_duration_seconds_count", "render"),
        renders,
        "render calls for an input the operator rendered before"
    );
    let start = writes(n);
    let before = ["render", "status"]
        .map(|f| plugin_calls(&ctx, "atoll_plugin_call_duration_seconds_count", f));
    let memoized_before =
        ["render", "status"].map(|f| plugin_calls(&ctx, "atoll_plugin_calls_memoized_total", f));
    for _ in 0..3 {
        let db = Arc::new(dbs.get("orders").await.unwrap());
        controller::reconcile(db, Arc::clone(&ctx)).await.unwrap();
    }
    let steady = writes(n) - start;
    assert_eq!(
        steady, 0,
        "write requests during 3 resyncs of an unchanged Database"
    );
    let after = ["render", "status"]
        .map(|f| plugin_calls(&ctx, "atoll_plugin_call_duration_seconds_count", f));
    assert_eq!(
        after, before,
        "plugin calls (render, status) during 3 resyncs of an unchanged Database"
    );
    let memoized =
        ["render", "status"].map(|f| plugin_calls(&ctx, "atoll_plugin_calls_memoized_total", f));
    assert_eq!(
        [
            memoized[0] - memoized_before[0],
            memoized[1] - memoized_before[1]
        ],
        [3, 3],
        "each resync's render and status answered from the memo"
    );

    // The count does see writes: a hand change costs the repair.
    k(n, &["scale", "sts", "orders-1", "--replicas=1"], None).await;
    let start = writes(n);
    let db = Arc::new(dbs.get("orders").await.unwrap());
    controller::reconcile(db, ctx).await.unwrap();
    assert!(
        writes(n) - start >= 1,
        "the repair of a scaled StatefulSet is a write"
    );
    ns.cleanup().await;
}

/// The raft sample of metric `family` for plugin function `function`, from
/// the operator's metrics as served on its endpoint.
fn plugin_calls(ctx: &controller::Context, family: &str, function: &str) -> u64 {
    let prefix = format!("{family}{{plugin=\"raft\",function=\"{function}\"}} ");
    ctx.metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.parse().unwrap())
}
