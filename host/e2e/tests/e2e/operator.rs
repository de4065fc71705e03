//! The operator against the real control plane (kwok makes pods Ready): each
//! test runs its own controller over its own namespace.

use std::time::Duration;

use atoll::api::Database;
use atoll_e2e::{
    Operator, approve_as_told, children, events, example, k, patch_database, wait_condition,
    wait_ready,
};
use atoll_testenv::{TestNamespace, wait_for};
use kube::api::{Api, DeleteParams};

#[tokio::test]
async fn every_example_becomes_ready_with_ready_partitions() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "examples-ready").await;
    let op = Operator::start(&client, ns.name()).await;
    // (file, Database): `atomix-cluster` holds three, one per partition
    // group of the Atomix operator's example cluster.
    let examples = [
        ("raft", "orders"),
        ("cache", "sessions"),
        ("redis", "profiles"),
        ("primary-backup", "inventory"),
        ("log", "events"),
        ("atomix-cluster", "example-raft"),
        ("atomix-cluster", "example-primary-backup"),
        ("atomix-cluster", "example-log"),
    ];
    let mut files: Vec<&str> = examples.iter().map(|(file, _)| *file).collect();
    files.dedup();
    for file in files {
        k(ns.name(), &["apply", "-f", "-"], Some(&example(file))).await;
    }
    for (_, name) in examples {
        let db = wait_ready(&client, ns.name(), name).await;
        let status = db.status.unwrap();
        assert_eq!(status.partitions.len() as u32, db.spec.partitions);
        assert!(
            status
                .partitions
                .iter()
                .all(|p| p.ready && p.endpoint.contains(".svc.cluster.local:"))
        );
        let partitions = k(
            ns.name(),
            &[
                "get",
                "partitions",
                "-l",
                &format!("atoll.dev/database={name}"),
                "-o",
                "jsonpath={range .items[*]}{.status.ready}{\"\\n\"}{end}",
            ],
            None,
        )
        .await;
        assert_eq!(
            partitions.lines().filter(|l| *l == "true").count() as u32,
            db.spec.partitions,
            "{name}: {partitions}"
        );
    }
    let table = k(ns.name(), &["get", "db"], None).await;
    for (_, name) in examples {
        let row = table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(row.contains("True"), "{row}");
    }
    let cluster = k(
        ns.name(),
        &[
            "get",
            "db",
            "-l",
            "app.kubernetes.io/part-of=example-atomixcluster",
            "-o",
            "name",
        ],
        None,
    )
    .await;
    assert_eq!(
        cluster.lines().collect::<Vec<_>>(),
        [
            "database.atoll.dev/example-log",
            "database.atoll.dev/example-primary-backup",
            "database.atoll.dev/example-raft",
        ]
    );
    op.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn config_changes_apply_in_place_and_partition_changes_are_guarded() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "config-and-partitions").await;
    let op = Operator::start(&client, ns.name()).await;
    let n = ns.name();
    k(n, &["apply", "-f", "-"], Some(&example("raft"))).await;
    wait_ready(&client, n, "orders").await;
    let uid_before = k(
        n,
        &["get", "sts", "orders-1", "-o", "jsonpath={.metadata.uid}"],
        None,
    )
    .await;

    // Replicas and image change in place (same StatefulSet).
    patch_database(n, "orders", r#"{"spec":{"storage":{"config":{"replicas":5,"image":"atomix/raft-storage-node:v0.5.4"}}}}"#).await;
    wait_for(
        "StatefulSet orders-1 updated",
        Duration::from_secs(30),
        || async {
            let out = k(
                n,
                &[
                    "get",
                    "sts",
                    "orders-1",
                    "-o",
                    "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
                ],
                None,
            )
            .await;
            (out == "5 atomix/raft-storage-node:v0.5.4")
                .then_some(())
                .ok_or(out)
        },
    )
    .await;
    assert_eq!(
        uid_before,
        k(
            n,
            &["get", "sts", "orders-1", "-o", "jsonpath={.metadata.uid}"],
            None
        )
        .await
    );
    wait_ready(&client, n, "orders").await;

    // More partitions: more Partitions and Services.
    patch_database(n, "orders", r#"{"spec":{"partitions":8}}"#).await;
    wait_ready(&client, n, "orders").await;
    assert_eq!(children(n, "partitions", "orders").await.len(), 8);
    let services = children(n, "services", "orders").await;
    assert!(services.contains(&"orders-p8".to_string()), "{services:?}");

    // Fewer partitions: refused, nothing deleted, an Event says why.
    patch_database(n, "orders", r#"{"spec":{"partitions":4}}"#).await;
    let message = wait_condition(&client, n, "orders", "Degraded", "DataLossRefused").await;
    assert!(
        message.contains("Partition orders-8") && message.contains("atoll.dev/allow-data-loss"),
        "{message}"
    );
    assert_eq!(children(n, "partitions", "orders").await.len(), 8);
    assert!(
        !events(n, "DataLossRefused").await.is_empty(),
        "an Event is recorded"
    );

    // Approved once, with the command the refusal gives: the extra
    // children go.
    approve_as_told(&message).await;
    wait_ready(&client, n, "orders").await;
    wait_for(
        "partitions 5..8 pruned",
        Duration::from_secs(30),
        || async {
            let p = children(n, "partitions", "orders").await;
            let s = children(n, "services", "orders").await;
            (p.len() == 4 && !s.contains(&"orders-p5".to_string()))
                .then_some(())
                .ok_or(format!("{p:?} {s:?}"))
        },
    )
    .await;

    // The approval was for that generation only: the next change that
    // loses data is refused again, with the annotation still in place.
    patch_database(n, "orders", r#"{"spec":{"partitions":3}}"#).await;
    let again = wait_condition(&client, n, "orders", "Degraded", "DataLossRefused").await;
    assert!(again.contains("Partition orders-4"), "{again}");
    assert_eq!(children(n, "partitions", "orders").await.len(), 4);
    op.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn hand_changes_are_restored_and_deletion_removes_everything() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "restore-and-delete").await;
    let op = Operator::start(&client, ns.name()).await;
    let n = ns.name();
    k(n, &["apply", "-f", "-"], Some(&example("raft"))).await;
    wait_ready(&client, n, "orders").await;

    k(n, &["scale", "sts", "orders-2", "--replicas=1"], None).await;
    k(n, &["delete", "service", "orders-p3"], None).await;
    wait_for("hand changes reverted", Duration::from_secs(30), || async {
        let replicas = k(
            n,
            &["get", "sts", "orders-2", "-o", "jsonpath={.spec.replicas}"],
            None,
        )
        .await;
        let services = children(n, "services", "orders").await;
        (replicas == "3" && services.contains(&"orders-p3".to_string()))
            .then_some(())
            .ok_or(format!("replicas {replicas}, services {services:?}"))
    })
    .await;

    let dbs: Api<Database> = Api::namespaced(client.clone(), n);
    dbs.delete("orders", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_for(
        "every child of orders to be gone",
        Duration::from_secs(60),
        || async {
            let left = k(
                n,
                &[
                    "get",
                    "statefulsets,services,configmaps,poddisruptionbudgets,partitions,endpointslices",
                    "-l",
                    "atoll.dev/database=orders",
                    "-o",
                    "name",
                ],
                None,
            )
            .await;
            left.trim().is_empty().then_some(()).ok_or(left)
        },
    )
    .await;
    op.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn invalid_config_and_unknown_plugin_degrade_only_their_database() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "invalid-and-unknown").await;
    let op = Operator::start(&client, ns.name()).await;
    let n = ns.name();
    let invalid = example("raft")
        .replace("name: orders", "name: broken")
        .replace("      replicas: 3\n", "      replicas: 4\n");
    let unknown = example("cache")
        .replace("name: sessions", "name: mystery")
        .replace("plugin: cache", "plugin: etcd");
    for manifest in [invalid, unknown, example("cache")] {
        k(n, &["apply", "-f", "-"], Some(&manifest)).await;
    }
    let message = wait_condition(&client, n, "broken", "Degraded", "InvalidSpec").await;
    assert!(
        message.contains("spec.storage.config.replicas: must be odd"),
        "{message}"
    );
    let message = wait_condition(&client, n, "mystery", "Degraded", "UnknownPlugin").await;
    assert!(
        message.contains("\"etcd\"") && message.contains("raft"),
        "{message}"
    );
    wait_ready(&client, n, "sessions").await;
    for name in ["broken", "mystery"] {
        let left = k(
            n,
            &[
                "get",
                "statefulsets,services,configmaps,partitions",
                "-l",
                &format!("atoll.dev/database={name}"),
                "-o",
                "name",
            ],
            None,
        )
        .await;
        assert!(left.trim().is_empty(), "{name} has no children: {left}");
    }
    op.stop().await;
    ns.cleanup().await;
}

/// A stop right after the start (a SIGTERM while the controller is still
/// listing Databases) finishes promptly instead of hanging.
#[tokio::test]
async fn stopping_right_after_starting_finishes() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "quick-stop").await;
    for _ in 0..10 {
        let operator = Operator::start(&client, ns.name()).await;
        operator.stop().await;
    }
    ns.cleanup().await;
}

/// Dropping the operator's future (aborting its task, as a cancelled
/// `select!` or an embedder's abort does) stops what it spawned: its
/// metrics server stops accepting connections although the shutdown signal
/// never fires.
#[tokio::test]
async fn aborting_the_operator_stops_its_servers() {
    let client = atoll_testenv::client().await;
    atoll_testenv::install_crds(&client, atoll::api::crds()).await;
    let ns = TestNamespace::new(&client, "abort").await;
    // A free port, released for atoll to bind.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = atoll::operator::Config::for_namespace(ns.name());
    config.metrics_addr = Some(addr);
    let operator = atoll::Operator::with_client(config, client.clone(), atoll_e2e::renderer());
    let task = tokio::spawn(operator.run(std::future::pending()));
    wait_for("metrics served", Duration::from_secs(30), || {
        atoll_e2e::metrics_text(addr)
    })
    .await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    wait_for(
        "the metrics port closed after the abort",
        Duration::from_secs(10),
        || async {
            match tokio::net::TcpStream::connect(addr).await {
                Err(_) => Ok(()),
                Ok(_) => Err(format!("{addr} still accepts connections")),
            }
        },
    )
    .await;
    ns.cleanup().await;
}
