//! Scenarios of the data-loss guard's moves: partitions moved away from
//! where their data lives (recorded placement, or inferred from Service
//! selectors) and plugin switches.

use serde_json::json;

use super::{FakeApi, NS, condition, database, run, seed, stored, summary, writes};
use crate::api::Database;

/// The issue's `ledger`: raft, 6 partitions on `clusters` clusters of one
/// replica, each replica with a volume.
fn ledger(clusters: u32) -> Database {
    let mut db = database(6, 1);
    db.spec.storage.config = Some(json!({"clusters": clusters, "replicas": 1,
        "volumeClaimTemplate": {"size": "1Gi"}}));
    db
}

#[tokio::test]
async fn partitions_moved_away_from_their_volumes_are_refused() {
    let api = FakeApi::default();
    let db = ledger(2);
    seed(&api, &db);
    run(&api, &db).await;
    let before = api.get("services", NS, "db-p2").expect("p2")["spec"]["selector"].clone();
    let mut more = stored(&api, &db);
    more.spec.storage.config = ledger(3).spec.storage.config;
    more.metadata.generation = Some(2);
    api.clear_seen();
    run(&api, &more).await;

    let degraded = condition(&api, "Degraded");
    assert_eq!(degraded["reason"], "DataLossRefused");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("partition 2: StatefulSet db-1 → StatefulSet db-3"),
        "{message}"
    );
    assert!(
        summary(&writes(&api))
            .iter()
            .all(|w| !w.contains("services/")),
        "no Service was repointed"
    );
    assert_eq!(
        api.get("services", NS, "db-p2").expect("p2")["spec"]["selector"],
        before
    );

    // Approved for generation 2: applied.
    more.metadata
        .annotations
        .get_or_insert_default()
        .insert("atoll.dev/allow-data-loss".into(), "2".into());
    run(&api, &more).await;
    assert_ne!(
        api.get("services", NS, "db-p2").expect("p2")["spec"]["selector"],
        before
    );
}

#[tokio::test]
async fn switching_the_plugin_of_a_database_holding_data_is_refused() {
    let api = FakeApi::default();
    let db = ledger(1);
    seed(&api, &db);
    run(&api, &db).await;
    let mut switched = stored(&api, &db);
    switched.spec.storage.plugin = "log".into();
    switched.spec.storage.config = None;
    switched.metadata.generation = Some(2);
    api.clear_seen();
    run(&api, &switched).await;
    let degraded = condition(&api, "Degraded");
    assert_eq!(degraded["reason"], "DataLossRefused");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(message.contains("plugin raft → log"), "{message}");
    assert!(
        summary(&writes(&api))
            .iter()
            .all(|w| !w.starts_with("DELETE"))
    );
}

/// Stands in for a plugin release that moves a partition behind an
/// unchanged Service: the Partition record says partition 2's data lives in
/// StatefulSet db-2 (which holds volumes), the render places it in db-1,
/// and no Service selector changes, so only the recorded placement shows
/// the move.
#[tokio::test]
async fn a_move_away_from_the_recorded_placement_is_refused() {
    let api = FakeApi::default();
    let db = ledger(2);
    seed(&api, &db);
    run(&api, &db).await;
    let mut record = api.get("partitions", NS, "db-2").expect("Partition db-2");
    assert_eq!(
        record["spec"]["placement"],
        json!({"kind": "StatefulSet", "name": "db-1"})
    );
    record["spec"]["placement"] = json!({"kind": "StatefulSet", "name": "db-2"});
    api.put("partitions", record);
    let selector = api.get("services", NS, "db-p2").expect("p2")["spec"]["selector"].clone();
    let db = stored(&api, &db);
    api.clear_seen();
    run(&api, &db).await;

    let degraded = condition(&api, "Degraded");
    assert_eq!(degraded["reason"], "DataLossRefused");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("partition 2: StatefulSet db-2 → StatefulSet db-1"),
        "{message}"
    );
    assert!(!message.contains("partition 1:"), "{message}");
    assert!(
        summary(&writes(&api))
            .iter()
            .all(|w| !w.contains("partitions/db-2")),
        "the record still names the old home"
    );
    assert_eq!(
        api.get("services", NS, "db-p2").expect("p2")["spec"]["selector"],
        selector,
        "the Service did not change: only the placement shows the move"
    );
}

/// redis binds partitions to proxy Services; the data lives in StatefulSet
/// db-redis, which the records name, and an unchanged render is not refused.
#[tokio::test]
async fn placement_is_recorded_where_no_service_selects_the_data() {
    let api = FakeApi::default();
    let mut db = database(2, 1);
    db.spec.storage.plugin = "redis".into();
    db.spec.storage.config = Some(json!({"volumeClaimTemplate": {"size": "1Gi"}}));
    seed(&api, &db);
    run(&api, &db).await;
    for p in ["db-1", "db-2"] {
        let record = api.get("partitions", NS, p).expect("a Partition");
        assert_eq!(
            record["spec"]["placement"],
            json!({"kind": "StatefulSet", "name": "db-redis"})
        );
    }
    let db = stored(&api, &db);
    run(&api, &db).await;
    assert_ne!(condition(&api, "Degraded")["reason"], "DataLossRefused");
}
