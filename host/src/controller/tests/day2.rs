//! Day-2 scenarios: a config edit and an external Secret reach the applied
//! pod template through its config checksum, and `spec.pod` reaches it too.

use serde_json::{Value, json};

use super::{FakeApi, NS, database, run, seed, stored, summary, writes};
use crate::api::ANNOTATION_CONFIG_CHECKSUM;

fn checksum(api: &FakeApi) -> Value {
    let sts = api.get("statefulsets", NS, "db-1").expect("applied");
    sts["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_CHECKSUM].clone()
}

#[tokio::test]
async fn a_config_edit_changes_the_applied_template_checksum() {
    let api = FakeApi::default();
    let mut db = database(1, 1);
    db.spec.storage.config =
        Some(json!({"clusters": 1, "replicas": 1, "electionTimeoutMillis": 5000}));
    seed(&api, &db);
    run(&api, &db).await;
    let before = checksum(&api);
    assert!(before.is_string(), "the template mounts ConfigMap db-1");

    let mut edited = stored(&api, &db);
    edited.spec.storage.config =
        Some(json!({"clusters": 1, "replicas": 1, "electionTimeoutMillis": 7000}));
    edited.metadata.generation = Some(2);
    api.clear_seen();
    run(&api, &edited).await;

    let after = checksum(&api);
    assert!(after.is_string());
    assert_ne!(before, after, "the pods roll");
    let protocol = api.get("configmaps", NS, "db-1").expect("kept")["data"]["protocol.json"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(protocol.contains("7000"), "{protocol}");
    let written = summary(&writes(&api));
    assert!(
        written.contains(&"PATCH statefulsets/db-1".to_string()),
        "{written:?}"
    );
    assert!(
        written.contains(&"PATCH configmaps/db-1".to_string()),
        "{written:?}"
    );
}

#[tokio::test]
async fn an_external_secret_is_read_and_its_creation_rolls_the_pods() {
    let api = FakeApi::default();
    let mut db = database(1, 1);
    db.spec.pod = Some(
        serde_json::from_value(json!({"env": [{"name": "PASSWORD", "valueFrom":
            {"secretKeyRef": {"name": "db-creds", "key": "password"}}}],
            "nodeSelector": {"pool": "db"}}))
        .expect("a spec.pod"),
    );
    seed(&api, &db);
    run(&api, &db).await;
    let missing = checksum(&api);
    let sts = api.get("statefulsets", NS, "db-1").expect("applied");
    let pod = &sts["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"], json!({"pool": "db"}));
    let env = pod["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(env.iter().any(|e| e["name"] == "PASSWORD"), "{env:?}");
    let db = stored(&api, &db);
    assert!(
        api.seen()
            .iter()
            .any(|s| s.path.ends_with("/namespaces/shop/secrets/db-creds")),
        "the controller read the Secret"
    );

    // A resync of the unchanged Database with the Secret still missing
    // writes nothing.
    api.clear_seen();
    run(&api, &db).await;
    assert_eq!(summary(&writes(&api)), Vec::<String>::new());

    api.put(
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db-creds", "namespace": NS},
            "data": {"password": "c2VjcmV0"}}),
    );
    run(&api, &db).await;
    let created = checksum(&api);
    assert_ne!(missing, created);
    assert_eq!(summary(&writes(&api)), ["PATCH statefulsets/db-1"]);
}
