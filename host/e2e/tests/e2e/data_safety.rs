//! Data safety on the real API server: partitions that would move away from
//! their volumes are refused until approved, names that are taken are never
//! adopted, and volumes outlive a deleted Database unless it asks otherwise.
//! (One-time approval is in `operator`; the prune gate of a new plugin
//! version is proven in-process, `host/src/controller/tests.rs`.)

use std::time::Duration;

use atoll_e2e::{Operator, approve_as_told, events, k, patch_database, wait_condition, wait_ready};
use atoll_testenv::{TestNamespace, wait_for};

/// A raft Database `name` with 6 partitions on `clusters` clusters of one
/// replica, each with a volume, and `deletion` as its deletionPolicy.
fn raft(name: &str, clusters: u32, deletion: &str) -> String {
    format!(
        r#"{{"apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
  "metadata": {{"name": "{name}"}},
  "spec": {{"partitions": 6, "deletionPolicy": "{deletion}",
    "storage": {{"plugin": "raft", "config": {{"clusters": {clusters}, "replicas": 1,
      "volumeClaimTemplate": {{"size": "1Gi"}}}}}}}}}}"#
    )
}

async fn selector(ns: &str, service: &str) -> String {
    k(
        ns,
        &["get", "svc", service, "-o", "jsonpath={.spec.selector}"],
        None,
    )
    .await
}

#[tokio::test]
async fn partitions_are_not_moved_away_from_their_volumes_without_approval() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "moves").await;
    let op = Operator::start(&client, ns.name()).await;
    let n = ns.name();
    k(n, &["apply", "-f", "-"], Some(&raft("ledger", 2, "Retain"))).await;
    wait_ready(&client, n, "ledger").await;
    let before = selector(n, "ledger-p2").await;

    patch_database(
        n,
        "ledger",
        r#"{"spec":{"storage":{"config":{"clusters":3}}}}"#,
    )
    .await;
    let message = wait_condition(&client, n, "ledger", "Degraded", "DataLossRefused").await;
    assert!(
        message.contains("partition 2: StatefulSet ledger-1 → StatefulSet ledger-3"),
        "{message}"
    );
    assert!(
        !events(n, "DataLossRefused").await.is_empty(),
        "an Event is recorded"
    );
    assert_eq!(
        selector(n, "ledger-p2").await,
        before,
        "the Service still selects its data"
    );
    let sts = k(n, &["get", "sts", "-o", "name"], None).await;
    assert!(
        !sts.contains("ledger-3"),
        "nothing of the new layout was applied: {sts}"
    );

    approve_as_told(&message).await;
    wait_for(
        "ledger-p2 repointed once approved",
        Duration::from_secs(60),
        || async {
            let now = selector(n, "ledger-p2").await;
            (now != before).then_some(()).ok_or(now)
        },
    )
    .await;
    op.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn an_object_made_by_hand_with_a_rendered_name_is_left_alone() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "adopt").await;
    let op = Operator::start(&client, ns.name()).await;
    let n = ns.name();
    k(
        n,
        &[
            "create",
            "configmap",
            "precious-1",
            "--from-literal=mine=keep",
        ],
        None,
    )
    .await;
    let original = k(n, &["get", "cm", "precious-1", "-o", "json"], None).await;

    k(
        n,
        &["apply", "-f", "-"],
        Some(&raft("precious", 1, "Retain")),
    )
    .await;
    let message = wait_condition(&client, n, "precious", "Degraded", "NameConflict").await;
    assert!(
        message.contains("ConfigMap precious-1 already exists (created outside atoll)"),
        "{message}"
    );
    let now = k(n, &["get", "cm", "precious-1", "-o", "json"], None).await;
    assert_eq!(now, original, "the ConfigMap is untouched");

    // Deleting the Database cannot take the ConfigMap with it.
    k(n, &["delete", "db", "precious", "--wait"], None).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let data = k(
        n,
        &["get", "cm", "precious-1", "-o", "jsonpath={.data.mine}"],
        None,
    )
    .await;
    assert_eq!(data, "keep");
    op.stop().await;
    ns.cleanup().await;
}

async fn claims(ns: &str) -> Vec<String> {
    let out = k(ns, &["get", "pvc", "-o", "name"], None).await;
    out.lines().map(str::to_string).collect()
}

/// Delete Database `db` and wait until its StatefulSets are gone; then the
/// claims left: after a grace period for the garbage collector under
/// `Retain`, or once they are gone under `Delete`.
async fn delete_and_list_claims(n: &str, db: &str, deletion: &str) -> Vec<String> {
    k(n, &["delete", "db", db, "--wait"], None).await;
    wait_for(
        "the StatefulSet deleted",
        Duration::from_secs(60),
        || async {
            let sts = k(n, &["get", "sts", "-o", "name"], None).await;
            sts.trim().is_empty().then_some(()).ok_or(sts)
        },
    )
    .await;
    if deletion == "Delete" {
        wait_for("the claims deleted", Duration::from_secs(90), || async {
            let c = claims(n).await;
            c.is_empty().then_some(c.clone()).ok_or(format!("{c:?}"))
        })
        .await
    } else {
        // Give the garbage collector time to do what it would do.
        tokio::time::sleep(Duration::from_secs(10)).await;
        claims(n).await
    }
}

/// Create a 1-cluster raft Database with `deletion`, wait for its claims,
/// delete it, and return the claims left a while after its StatefulSet went.
async fn claims_after_delete(deletion: &str) -> (Vec<String>, Vec<String>) {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, &format!("deletion-{}", deletion.to_lowercase())).await;
    let op = Operator::start(&client, ns.name()).await;
    let n = ns.name();
    k(n, &["apply", "-f", "-"], Some(&raft("keep", 1, deletion))).await;
    wait_ready(&client, n, "keep").await;
    let policy = k(
        n,
        &[
            "get",
            "sts",
            "keep-1",
            "-o",
            "jsonpath={.spec.persistentVolumeClaimRetentionPolicy}",
        ],
        None,
    )
    .await;
    let expected = format!(r#"{{"whenDeleted":"{deletion}","whenScaled":"Retain"}}"#);
    assert_eq!(policy, expected);
    let before = wait_for("the replica's claim", Duration::from_secs(60), || async {
        let c = claims(n).await;
        (!c.is_empty())
            .then_some(c)
            .ok_or("no claim yet".to_string())
    })
    .await;

    let after = delete_and_list_claims(n, "keep", deletion).await;
    op.stop().await;
    ns.cleanup().await;
    (before, after)
}

#[tokio::test]
async fn deleting_a_retain_database_keeps_every_claim() {
    let (before, after) = claims_after_delete("Retain").await;
    assert_eq!(after, before);
}

#[tokio::test]
async fn deleting_a_delete_database_removes_its_claims() {
    let (before, after) = claims_after_delete("Delete").await;
    assert!(!before.is_empty());
    assert!(after.is_empty(), "{after:?}");
}

/// An operator of `ns` that loaded the hostile test plugin from a ConfigMap.
async fn with_hostile_plugin(client: &kube::Client, ns: &str) -> Operator {
    let hostile = env!("ATOLL_TEST_HOSTILE_WASM");
    let from = format!("--from-file=plugin.wasm={hostile}");
    k(ns, &["create", "configmap", "hostile", &from], None).await;
    k(
        ns,
        &["label", "configmap", "hostile", "atoll.dev/plugin=hostile"],
        None,
    )
    .await;
    // Its `claims` mode renders a claim itself: an opt-in kind.
    let policy =
        atoll::policy::OutputPolicy::default().allowing([atoll::policy::AllowedKind::new(
            "v1",
            "PersistentVolumeClaim",
        )]);
    Operator::start_with_plugin_source_policy(client, ns, policy).await
}

#[tokio::test]
async fn a_claim_made_by_hand_with_a_rendered_name_is_left_alone() {
    let _records = atoll_e2e::plugin_records_shared().await; // loads a plugin ConfigMap
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "adopt-claim").await;
    let n = ns.name();
    let claim = r#"{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
  "metadata": {"name": "taken-claim", "labels": {"mine": "yes"}},
  "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}}"#;
    k(n, &["apply", "-f", "-"], Some(claim)).await;
    // kube-controller-manager and kwok bind the claim just after it is
    // made, writing its metadata; the snapshot waits for that, so it can
    // only differ later if atoll writes to the claim.
    k(
        n,
        &[
            "wait",
            "--for=jsonpath={.status.phase}=Bound",
            "pvc/taken-claim",
            "--timeout=60s",
        ],
        None,
    )
    .await;
    let original = k(
        n,
        &["get", "pvc", "taken-claim", "-o", "jsonpath={.metadata}"],
        None,
    )
    .await;
    let op = with_hostile_plugin(&client, n).await;
    let db = r#"{"apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
  "metadata": {"name": "taken"},
  "spec": {"partitions": 1, "storage": {"plugin": "hostile", "config": {"mode": "claims"}}}}"#;
    k(n, &["apply", "-f", "-"], Some(db)).await;
    let message = wait_condition(&client, n, "taken", "Degraded", "NameConflict").await;
    assert!(
        message
            .contains("PersistentVolumeClaim taken-claim already exists (created outside atoll)"),
        "{message}"
    );
    let now = k(
        n,
        &["get", "pvc", "taken-claim", "-o", "jsonpath={.metadata}"],
        None,
    )
    .await;
    assert_eq!(now, original, "the claim is untouched");
    let sts = k(n, &["get", "sts", "-o", "name"], None).await;
    assert!(
        sts.trim().is_empty(),
        "nothing else of the render was written: {sts}"
    );
    op.stop().await;
    ns.cleanup().await;
}

/// A Database of the hostile test plugin in its `claims` mode (a claim of
/// its own, and a StatefulSet asking Kubernetes to delete its claims) with
/// `deletion`; deleted once running. Returns the overridden retention
/// policy, the claims before the deletion and those left after.
async fn plugin_claims_after_delete(deletion: &str) -> (String, Vec<String>, Vec<String>) {
    let _records = atoll_e2e::plugin_records_shared().await; // loads a plugin ConfigMap
    let client = atoll_testenv::client().await;
    let name = format!("plugin-claims-{}", deletion.to_lowercase());
    let ns = TestNamespace::new(&client, &name).await;
    let n = ns.name();
    let op = with_hostile_plugin(&client, n).await;
    let db = format!(
        r#"{{"apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
  "metadata": {{"name": "claims"}},
  "spec": {{"partitions": 1, "deletionPolicy": "{deletion}",
    "storage": {{"plugin": "hostile", "config": {{"mode": "claims"}}}}}}}}"#
    );
    k(n, &["apply", "-f", "-"], Some(&db)).await;
    let ready = wait_ready(&client, n, "claims").await;
    let message = ready
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message)
        .unwrap_or_default();
    assert!(
        message.contains("atoll overrode StatefulSet claims"),
        "the override is reported: {message}"
    );
    let policy = k(
        n,
        &[
            "get",
            "sts",
            "claims",
            "-o",
            "jsonpath={.spec.persistentVolumeClaimRetentionPolicy}",
        ],
        None,
    )
    .await;
    let before = wait_for("both claims", Duration::from_secs(60), || async {
        let c = claims(n).await;
        (c.len() == 2).then_some(c.clone()).ok_or(format!("{c:?}"))
    })
    .await;

    let after = delete_and_list_claims(n, "claims", deletion).await;
    op.stop().await;
    ns.cleanup().await;
    (policy, before, after)
}

#[tokio::test]
async fn a_plugin_asking_to_delete_claims_is_overridden_and_retain_keeps_them_all() {
    let (policy, before, after) = plugin_claims_after_delete("Retain").await;
    assert_eq!(policy, r#"{"whenDeleted":"Retain","whenScaled":"Retain"}"#);
    assert!(
        before.contains(&"persistentvolumeclaim/claims-claim".to_string()),
        "{before:?}"
    );
    assert_eq!(after, before, "templated and rendered claims kept");
}

#[tokio::test]
async fn delete_removes_rendered_and_templated_claims_but_scale_downs_never_do() {
    let (policy, before, after) = plugin_claims_after_delete("Delete").await;
    assert_eq!(policy, r#"{"whenDeleted":"Delete","whenScaled":"Retain"}"#);
    assert_eq!(before.len(), 2);
    assert!(after.is_empty(), "{after:?}");
}
