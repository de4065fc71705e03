//! Day-2 operations on pods against the real control plane (kwok runs the
//! pods): a config edit rolls a StatefulSet through its config checksum, and
//! `spec.pod` reaches every pod template of every built-in plugin.

use std::time::Duration;

use atoll_e2e::{Operator, example, k, patch_database, wait_ready};
use atoll_testenv::{TestNamespace, wait_for};
use serde_json::{Value, json};

const CHECKSUM: &str = "atoll.dev/config-checksum";

/// StatefulSet `name` as the API server has it.
async fn statefulset(ns: &str, name: &str) -> Value {
    serde_json::from_str(&k(ns, &["get", "sts", name, "-o", "json"], None).await).unwrap()
}

/// Uids of the pods of Database `db`, sorted.
async fn pod_uids(ns: &str, db: &str) -> Vec<String> {
    let selector = format!("app.kubernetes.io/instance={db}");
    let out = k(
        ns,
        &[
            "get",
            "pods",
            "-l",
            &selector,
            "-o",
            "jsonpath={.items[*].metadata.uid}",
        ],
        None,
    )
    .await;
    let mut uids: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    uids.sort();
    uids
}

#[tokio::test]
async fn a_raft_config_edit_rolls_the_statefulset() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "day2-rollout").await;
    let n = ns.name();
    let op = Operator::start(&client, n).await;
    let db = json!({
        "apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
        "metadata": {"name": "tuned"},
        "spec": {"partitions": 2, "storage": {"plugin": "raft", "config": {
            "clusters": 1, "replicas": 3,
            "electionTimeoutMillis": 5000, "heartbeatIntervalMillis": 500}}},
    });
    k(n, &["apply", "-f", "-"], Some(&db.to_string())).await;
    wait_ready(&client, n, "tuned").await;
    let before = statefulset(n, "tuned-1").await;
    let checksum = before["spec"]["template"]["metadata"]["annotations"][CHECKSUM].clone();
    assert!(checksum.is_string(), "{before}");
    let revision = before["status"]["updateRevision"].clone();
    assert!(revision.is_string(), "{before}");
    let pods = pod_uids(n, "tuned").await;
    assert_eq!(pods.len(), 3, "{pods:?}");

    patch_database(
        n,
        "tuned",
        r#"{"spec":{"storage":{"config":{"electionTimeoutMillis":7000}}}}"#,
    )
    .await;

    // The template changes, so the StatefulSet gets a new revision…
    let rolled = wait_for(
        "StatefulSet tuned-1 to get a new template and revision",
        Duration::from_secs(60),
        || async {
            let sts = statefulset(n, "tuned-1").await;
            let now = &sts["spec"]["template"]["metadata"]["annotations"][CHECKSUM];
            let rev = &sts["status"]["updateRevision"];
            (now.is_string() && *now != checksum && rev.is_string() && *rev != revision)
                .then(|| sts.clone())
                .ok_or_else(|| format!("checksum {now}, updateRevision {rev}"))
        },
    )
    .await;
    let new_revision = rolled["status"]["updateRevision"].clone();
    // …and rolls every pod onto it.
    wait_for(
        "StatefulSet tuned-1 to finish rolling out",
        Duration::from_secs(180),
        || async {
            let status = statefulset(n, "tuned-1").await["status"].clone();
            let done = status["updatedReplicas"] == 3
                && status["readyReplicas"] == 3
                && status["currentRevision"] == new_revision
                && status["updateRevision"] == new_revision;
            done.then_some(()).ok_or_else(|| status.to_string())
        },
    )
    .await;
    let after = pod_uids(n, "tuned").await;
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(
        after.iter().all(|uid| !pods.contains(uid)),
        "every pod was recreated: before {pods:?}, after {after:?}"
    );
    let protocol = k(
        n,
        &[
            "get",
            "cm",
            "tuned-1",
            "-o",
            "jsonpath={.data.protocol\\.json}",
        ],
        None,
    )
    .await;
    let protocol: Value = serde_json::from_str(&protocol).unwrap();
    assert_eq!(
        protocol["electionTimeoutMillis"], 7000,
        "the ConfigMap holds the new value: {protocol}"
    );
    op.stop().await;
    ns.cleanup().await;
}

/// Every pod template of Database `db`'s StatefulSets and Deployments, as
/// `Kind/name` and template.
async fn templates(ns: &str, db: &str) -> Vec<(String, Value)> {
    let selector = format!("atoll.dev/database={db}");
    let out = k(
        ns,
        &[
            "get",
            "statefulsets,deployments",
            "-l",
            &selector,
            "-o",
            "json",
        ],
        None,
    )
    .await;
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let name = format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            );
            (name, o["spec"]["template"].clone())
        })
        .collect()
}

/// What is missing of the overrides in `template`, empty when all is there.
fn missing(template: &Value) -> Vec<String> {
    let spec = &template["spec"];
    let mut missing = Vec::new();
    if spec["nodeSelector"]["example.com/pool"] != "databases" {
        missing.push(format!("nodeSelector {}", spec["nodeSelector"]));
    }
    let toleration = json!({"key": "dedicated", "operator": "Equal", "value": "databases",
        "effect": "NoSchedule"});
    if !spec["tolerations"]
        .as_array()
        .is_some_and(|t| t.contains(&toleration))
    {
        missing.push(format!("tolerations {}", spec["tolerations"]));
    }
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            let env = c["env"].as_array().cloned().unwrap_or_default();
            if !env.contains(&json!({"name": "TEAM", "value": "storage"})) {
                missing.push(format!("{} env {}", c["name"], c["env"]));
            }
        }
    }
    missing
}

#[tokio::test]
async fn spec_pod_reaches_every_pod_template_of_every_plugin() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "day2-pod-overrides").await;
    let n = ns.name();
    let op = Operator::start(&client, n).await;
    let examples = [
        ("raft", "orders", 3),
        ("cache", "sessions", 1),
        ("redis", "profiles", 2),
        ("primary-backup", "inventory", 1),
        ("log", "events", 1),
    ];
    let pod = json!({"spec": {"pod": {
        "env": [{"name": "TEAM", "value": "storage"}],
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "databases",
            "effect": "NoSchedule"}],
        "nodeSelector": {"example.com/pool": "databases"},
    }}})
    .to_string();
    for (file, name, _) in examples {
        k(n, &["apply", "-f", "-"], Some(&example(file))).await;
        patch_database(n, name, &pod).await;
    }
    for (_, name, at_least) in examples {
        let all = wait_for(
            &format!("every pod template of {name} to carry spec.pod"),
            Duration::from_secs(60),
            || async {
                let all = templates(n, name).await;
                let wrong: Vec<String> = all
                    .iter()
                    .filter_map(|(w, t)| {
                        let m = missing(t);
                        (!m.is_empty()).then(|| format!("{w}: {m:?}"))
                    })
                    .collect();
                if all.len() >= at_least && wrong.is_empty() {
                    Ok(all)
                } else {
                    Err(format!("{} workloads; {wrong:?}", all.len()))
                }
            },
        )
        .await;
        assert!(all.len() >= at_least, "{name}: {all:?}");
    }
    op.stop().await;
    ns.cleanup().await;
}
