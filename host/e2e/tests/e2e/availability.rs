//! Availability follows quorum, discovery never drops a partition, and a
//! config edit rolls the pods one at a time: raft Databases on the real
//! control plane, with a ResourceQuota of the test's namespace to keep a
//! replica from coming back (kwok would recreate it at once otherwise).

use std::time::Duration;

use atoll::api::{Condition, Database};
use atoll::grpc::proto::atomix::database::{
    DatabaseId, GetDatabaseRequest, database_service_client::DatabaseServiceClient,
};
use atoll_e2e::{Operator, k, patch_database, wait_ready};
use atoll_testenv::{TestNamespace, wait_for};
use kube::Api;

use crate::grpc::start_grpc;

/// Three partitions on three raft clusters of three replicas.
const SHOP: &str = "apiVersion: atoll.dev/v1alpha1
kind: Database
metadata: {name: shop}
spec:
  partitions: 3
  storage: {plugin: raft, config: {clusters: 3, replicas: 3}}
";

/// Wait until Database `name` satisfies `check`, which says what it saw.
async fn wait_db(
    client: &kube::Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Database) -> Result<(), String>,
) -> Database {
    let api: Api<Database> = Api::namespaced(client.clone(), ns);
    let check = &check;
    wait_for(what, Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let db = api.get(name).await.map_err(|e| e.to_string())?;
            check(&db).map(|()| db)
        }
    })
    .await
}

fn condition<'a>(db: &'a Database, type_: &str) -> Option<&'a Condition> {
    db.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// `type_` has `status` and `reason`, for the Database's current generation.
fn has(db: &Database, type_: &str, status: &str, reason: &str) -> Result<(), String> {
    let current = db.status.as_ref().and_then(|s| s.observed_generation) == db.metadata.generation;
    match condition(db, type_) {
        Some(c) if current && c.status == status && c.reason == reason => Ok(()),
        other => Err(format!(
            "{type_}: {other:?} (observed generation current: {current})"
        )),
    }
}

/// Partition ids `GetDatabase` returns, or the gRPC code and message.
async fn discovered(addr: std::net::SocketAddr, ns: &str, name: &str) -> Result<Vec<i32>, String> {
    let mut client = DatabaseServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let reply = client
        .get_database(GetDatabaseRequest {
            id: Some(DatabaseId {
                name: name.into(),
                namespace: ns.into(),
            }),
        })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    Ok(reply
        .into_inner()
        .database
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.partition_id.unwrap().partition)
        .collect())
}

/// Create ResourceQuota `name` with `hard` and wait until its controller
/// has counted what the namespace uses (only then does admission enforce it
/// against the real usage).
async fn quota(ns: &str, name: &str, hard: &str) {
    let yaml = format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: {name}}}\nspec: {{hard: {{{hard}}}}}\n"
    );
    k(ns, &["apply", "-f", "-"], Some(&yaml)).await;
    wait_for(
        &format!("ResourceQuota {ns}/{name} counted"),
        Duration::from_secs(30),
        || async {
            let used = k(
                ns,
                &[
                    "get",
                    "resourcequota",
                    name,
                    "-o",
                    "jsonpath={.status.used}",
                ],
                None,
            )
            .await;
            (!used.is_empty()).then_some(()).ok_or(used)
        },
    )
    .await;
}

/// Pod names of StatefulSet `sts`, sorted.
async fn pods(ns: &str, sts: &str) -> Vec<String> {
    let out = k(
        ns,
        &[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
        ],
        None,
    )
    .await;
    let prefix = format!("{sts}-");
    let mut names: Vec<String> = out
        .lines()
        .filter(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|i| i.chars().all(|c| c.is_ascii_digit()))
        })
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_partition_missing_a_replica_stays_available_and_listed() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "availability").await;
    let n = ns.name();
    let op = Operator::start(&client, n).await;
    let grpc = start_grpc(&client, true, &[n]).await;
    k(n, &["apply", "-f", "-"], Some(SHOP)).await;
    wait_ready(&client, n, "shop").await;
    assert_eq!(discovered(grpc.addr, n, "shop").await, Ok(vec![1, 2, 3]));

    // One replica of cluster 2 goes away and cannot come back: the
    // namespace may hold no more pods than the 8 left.
    quota(n, "no-more-pods", "pods: \"8\"").await;
    k(n, &["delete", "pod", "shop-2-1", "--wait=true"], None).await;
    let db = wait_db(
        &client,
        n,
        "shop",
        "Available=True, Ready=False (ReplicasNotReady)",
        |db| {
            has(db, "Available", "True", "AllPartitionsAvailable")?;
            has(db, "Ready", "False", "ReplicasNotReady")
        },
    )
    .await;
    let status = db.status.unwrap();
    assert_eq!(
        (status.ready_partitions, status.available_partitions),
        (2, 3)
    );
    let ready = condition_message(&status.conditions, "Ready");
    assert!(
        ready.contains("cluster 2: 2/3 replicas ready (serving)"),
        "{ready}"
    );
    assert_eq!(
        pods(n, "shop-2").await,
        ["shop-2-0", "shop-2-2"],
        "the replica stays gone"
    );
    assert_eq!(
        discovered(grpc.addr, n, "shop").await,
        Ok(vec![1, 2, 3]),
        "every partition is still listed"
    );

    // A second replica of cluster 2 gone: no quorum, so the partition it
    // serves is unavailable, but still listed (clients must not re-route
    // its keys to other partitions).
    quota(n, "no-more-pods", "pods: \"7\"").await;
    k(n, &["delete", "pod", "shop-2-0", "--wait=true"], None).await;
    let db = wait_db(
        &client,
        n,
        "shop",
        "Available=False (PartitionsUnavailable)",
        |db| has(db, "Available", "False", "PartitionsUnavailable"),
    )
    .await;
    let status = db.status.unwrap();
    assert_eq!(status.available_partitions, 2);
    let unavailable: Vec<u32> = status
        .partitions
        .iter()
        .filter(|p| !p.available)
        .map(|p| p.id)
        .collect();
    // Partition p lives on cluster (p mod clusters) + 1: partition 1 on cluster 2.
    assert_eq!(unavailable, [1]);
    let record = k(
        n,
        &[
            "get",
            "partition",
            "shop-1",
            "-o",
            "jsonpath={.status.available}",
        ],
        None,
    )
    .await;
    assert_eq!(record, "false");
    assert_eq!(discovered(grpc.addr, n, "shop").await, Ok(vec![1, 2, 3]));

    // Lift the quota: the replicas return and the Database is Ready again.
    k(n, &["delete", "resourcequota", "no-more-pods"], None).await;
    wait_db(&client, n, "shop", "Ready=True again", |db| {
        has(db, "Ready", "True", "AllPartitionsReady")?;
        has(db, "Available", "True", "AllPartitionsAvailable")
    })
    .await;
    op.stop().await;
    ns.cleanup().await;
}

fn condition_message(conditions: &[Condition], type_: &str) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn partitions_without_services_are_unavailable_to_discovery() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "discovery-all-or-nothing").await;
    let n = ns.name();
    let op = Operator::start(&client, n).await;
    let grpc = start_grpc(&client, true, &[n]).await;
    k(n, &["apply", "-f", "-"], Some(SHOP)).await;
    wait_ready(&client, n, "shop").await;

    // Partition 4 is wanted, but the namespace may hold no more Services
    // than it has: partition 4's Service cannot be created, so the Database
    // is not served (never three of four partitions).
    let services = k(n, &["get", "services", "-o", "name"], None).await;
    let count = services.lines().count();
    quota(n, "no-more-services", &format!("services: \"{count}\"")).await;
    patch_database(n, "shop", r#"{"spec":{"partitions":4}}"#).await;
    let reply = wait_for(
        "GetDatabase UNAVAILABLE",
        Duration::from_secs(60),
        || async {
            match discovered(grpc.addr, n, "shop").await {
                Err(e) if e.starts_with("Unavailable") => Ok(e),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(reply.contains("partition 4 has no Service yet"), "{reply}");
    let services = k(n, &["get", "services", "-o", "name"], None).await;
    assert!(!services.contains("shop-p4"), "{services}");

    k(n, &["delete", "resourcequota", "no-more-services"], None).await;
    wait_for(
        "every partition listed",
        Duration::from_secs(60),
        || async {
            match discovered(grpc.addr, n, "shop").await {
                Ok(ids) if ids == [1, 2, 3, 4] => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    op.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn a_template_edit_rolls_one_pod_at_a_time_and_reports_rolling_out() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "rollout").await;
    let n = ns.name();
    let op = Operator::start(&client, n).await;
    let db = "apiVersion: atoll.dev/v1alpha1
kind: Database
metadata: {name: ledger}
spec:
  partitions: 1
  storage: {plugin: raft, config: {replicas: 3, resources: {requests: {memory: 64Mi}}}}
";
    k(n, &["apply", "-f", "-"], Some(db)).await;
    wait_ready(&client, n, "ledger").await;

    // Room for exactly three pods of the old template: the first new pod
    // (96Mi) cannot be created, so the rollout holds after its first step.
    quota(n, "memory", "requests.memory: 192Mi").await;
    patch_database(
        n,
        "ledger",
        r#"{"spec":{"storage":{"config":{"resources":{"requests":{"memory":"96Mi"}}}}}}"#,
    )
    .await;
    wait_db(
        &client,
        n,
        "ledger",
        "Progressing=True (RollingOut)",
        |db| {
            has(db, "Progressing", "True", "RollingOut")?;
            has(db, "Ready", "False", "RollingOut")?;
            // Held at the first step (before it, the StatefulSet controller
            // may not have seen the new template yet).
            let status = db
                .status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or(&[]);
            let message = condition_message(status, "Progressing");
            (message == "StatefulSet ledger-1: 0/3 replicas updated")
                .then_some(())
                .ok_or(message)
        },
    )
    .await;
    // One pod at a time: the quorum of two still runs and serves.
    assert_eq!(pods(n, "ledger-1").await, ["ledger-1-0", "ledger-1-1"]);
    wait_db(
        &client,
        n,
        "ledger",
        "Available=True during the rollout",
        |db| has(db, "Available", "True", "AllPartitionsAvailable"),
    )
    .await;

    k(n, &["delete", "resourcequota", "memory"], None).await;
    wait_db(&client, n, "ledger", "Ready=True after the rollout", |db| {
        has(db, "Ready", "True", "AllPartitionsReady")?;
        has(db, "Progressing", "False", "Converged")
    })
    .await;
    let revisions = k(
        n,
        &[
            "get",
            "sts",
            "ledger-1",
            "-o",
            "jsonpath={.status.currentRevision} {.status.updateRevision} {.status.updatedReplicas}",
        ],
        None,
    )
    .await;
    let parts: Vec<&str> = revisions.split(' ').collect();
    assert_eq!(parts.len(), 3, "{revisions}");
    assert_eq!(
        parts[0], parts[1],
        "every pod on the new revision: {revisions}"
    );
    assert_eq!(parts[2], "3", "{revisions}");
    op.stop().await;
    ns.cleanup().await;
}
