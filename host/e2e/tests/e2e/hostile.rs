//! Hostile plugins loaded through a ConfigMap, against the real control plane:
//! every misbehaviour degrades only its own Database, with a reason saying
//! what happened; a healthy Database keeps converging; nothing is written
//! outside the Databases' namespace; atoll keeps serving.

use std::path::Path;

use atoll_e2e::{Operator, k, patch_database, wait_condition, wait_ready};
use atoll_testenv::{TestNamespace, client, kubectl};

/// (mode, condition reason, words the message must contain)
const MISBEHAVIOURS: &[(&str, &str, &str)] = &[
    ("loop", "PluginError", "deadline"),
    ("alloc", "PluginError", "over its limit"),
    ("trap", "PluginError", "panics on purpose"),
    ("flood", "PluginError", "over its limit"),
    ("huge", "PolicyViolation", "bytes of objects"),
    (
        "cluster-role-binding",
        "PolicyViolation",
        "not an allowed kind",
    ),
    ("other-namespace", "PolicyViolation", "kube-system"),
    (
        "bad-name",
        "PolicyViolation",
        "does not start with the Database name",
    ),
    ("malformed", "PolicyViolation", "not a JSON object"),
];

const STEADY: &str = r#"{"apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
    "metadata": {"name": "steady"},
    "spec": {"partitions": 1, "storage": {"plugin": "raft",
        "config": {"clusters": 1, "replicas": 1}}}}"#;

#[tokio::test]
async fn hostile_plugins_degrade_only_their_database() {
    let _records = atoll_e2e::plugin_records_shared().await; // its plugin source writes them
    let client = client().await;
    let ns = TestNamespace::new(&client, "hostile").await;
    let n = ns.name();
    let operator = Operator::start_with_plugin_source(&client, n).await;

    let hostile = env!("ATOLL_TEST_HOSTILE_WASM");
    let from = format!("--from-file=plugin.wasm={}", Path::new(hostile).display());
    k(n, &["create", "configmap", "hostile", &from], None).await;
    k(
        n,
        &["label", "configmap", "hostile", "atoll.dev/plugin=hostile"],
        None,
    )
    .await;

    k(n, &["apply", "-f", "-"], Some(STEADY)).await;
    for (mode, _, _) in MISBEHAVIOURS {
        let db = format!(
            r#"{{"apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
                "metadata": {{"name": "h-{mode}"}},
                "spec": {{"partitions": 1, "storage": {{"plugin": "hostile",
                    "config": {{"mode": "{mode}"}}}}}}}}"#
        );
        k(n, &["apply", "-f", "-"], Some(&db)).await;
    }

    for (mode, reason, words) in MISBEHAVIOURS {
        let message = wait_condition(&client, n, &format!("h-{mode}"), "Degraded", reason).await;
        assert!(message.contains(words), "h-{mode}: {message}");
    }
    wait_ready(&client, n, "steady").await;

    // The healthy Database still converges on a change while the hostile
    // ones keep failing (and being retried).
    patch_database(n, "steady", r#"{"spec": {"partitions": 2}}"#).await;
    // Ready with every one of the (now 2) partitions ready.
    let steady = wait_ready(&client, n, "steady").await;
    assert_eq!(steady.status.map(|s| s.ready_partitions), Some(2));

    // Nothing escaped the namespace, and no hostile Database got children.
    let crb = kubectl(
        &["get", "clusterrolebinding", "h-cluster-role-binding-admin"],
        None,
    )
    .await;
    assert!(
        !crb.success,
        "a ClusterRoleBinding was created: {}",
        crb.stdout
    );
    let escaped = kubectl(
        &[
            "get",
            "configmap",
            "-n",
            "kube-system",
            "h-other-namespace-x",
        ],
        None,
    )
    .await;
    assert!(!escaped.success, "a ConfigMap escaped to kube-system");
    let children = k(
        n,
        &[
            "get",
            "configmaps,services",
            "-l",
            "atoll.dev/plugin=hostile,app.kubernetes.io/managed-by=atoll",
            "-o",
            "name",
        ],
        None,
    )
    .await;
    assert!(
        children.trim().is_empty(),
        "hostile renders were applied: {children}"
    );

    // atoll still serves: metrics recorded the failures per plugin.
    let errors = operator.ctx.metrics.encode();
    assert!(errors.contains("hostile"), "{errors}");
    operator.stop().await;
    ns.cleanup().await;
}
