use super::*;
use atoll_guest::k8s_openapi::api::apps::v1::StatefulSet;
use atoll_guest::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use atoll_guest::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use atoll_guest::testing::{self, with_status};
use serde_json::{Value, json};

fn db(partitions: u32, config: Value) -> Database {
    Database::new("carts", partitions)
        .in_namespace("shop")
        .with_config(config)
}

fn protocol(out: &testing::Objects) -> Value {
    let cm = out.get("ConfigMap", "carts");
    serde_json::from_str(cm["data"]["protocol.json"].as_str().unwrap()).unwrap()
}

fn topology_key(out: &testing::Objects) -> String {
    let sts: StatefulSet = out.typed("carts");
    let anti = sts
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .affinity
        .unwrap()
        .pod_anti_affinity
        .unwrap();
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_none(),
        "spread must be preferred so pods schedule when domains run short"
    );
    let preferred = anti
        .preferred_during_scheduling_ignored_during_execution
        .unwrap();
    preferred[0].pod_affinity_term.topology_key.clone()
}

#[test]
fn renders_one_group_and_partition_services() {
    let out = testing::render::<PrimaryBackup>(&db(3, json!({}))).unwrap();
    assert_eq!(out.names("ConfigMap"), ["carts"]);
    assert_eq!(out.names("StatefulSet"), ["carts"]);
    assert_eq!(out.names("PodDisruptionBudget"), ["carts"]);
    assert_eq!(
        out.names("Service"),
        ["carts-hs", "carts-p1", "carts-p2", "carts-p3"]
    );
    assert_eq!(out.objects.len(), 7);

    let cm = out.get("ConfigMap", "carts");
    let cluster: Value =
        serde_json::from_str(cm["data"]["cluster.json"].as_str().unwrap()).unwrap();
    assert_eq!(
        cluster["partitions"],
        json!([{"partition": 1}, {"partition": 2}, {"partition": 3}])
    );
    assert_eq!(cluster["replicas"].as_array().unwrap().len(), 2);
    assert_eq!(
        cluster["replicas"][1]["host"],
        "carts-1.carts-hs.shop.svc.cluster.local"
    );

    let p2 = out.get("Service", "carts-p2");
    assert_eq!(
        p2["spec"]["selector"]["app.kubernetes.io/name"],
        "primary-backup"
    );
    assert_eq!(p2["spec"]["selector"]["atoll.dev/database"], "carts");
    assert_eq!(p2["metadata"]["labels"]["atoll.dev/partition"], "2");
    let bindings: Vec<(u32, &str, u16)> = out
        .partitions
        .iter()
        .map(|b| (b.partition, b.service.as_str(), b.port))
        .collect();
    assert_eq!(
        bindings,
        [
            (1, "carts-p1", 5678),
            (2, "carts-p2", 5678),
            (3, "carts-p3", 5678)
        ]
    );
}

#[test]
fn defaults_one_sync_backup_spread_across_hosts_in_memory() {
    let out = testing::render::<PrimaryBackup>(&db(1, json!({}))).unwrap();
    assert_eq!(protocol(&out), json!({"replication": "sync", "backups": 1}));
    assert_eq!(topology_key(&out), "kubernetes.io/hostname");

    let sts: StatefulSet = out.typed("carts");
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(spec.service_name.as_deref(), Some("carts-hs"));
    assert!(spec.volume_claim_templates.is_none(), "never PVCs");
    let pod = spec.template.spec.unwrap();
    let node = &pod.containers[0];
    assert_eq!(
        node.image.as_deref(),
        Some("atomix/primary-backup-storage-node:v0.5.0")
    );
    assert!(node.readiness_probe.as_ref().unwrap().tcp_socket.is_some());
    assert!(node.liveness_probe.as_ref().unwrap().tcp_socket.is_some());
    assert!(
        pod.volumes
            .unwrap()
            .iter()
            .any(|v| v.name == "data" && v.empty_dir.is_some())
    );

    let hs = out.get("Service", "carts-hs");
    assert_eq!(hs["spec"]["clusterIP"], "None");

    let pdb: PodDisruptionBudget = out.typed("carts");
    assert_eq!(pdb.spec.unwrap().min_available, Some(IntOrString::Int(1)));
}

#[test]
fn replication_backups_and_strategy_are_rendered() {
    let cfg = json!({"backups": 3, "replication": "async", "memberGroupStrategy": "zone_aware"});
    let out = testing::render::<PrimaryBackup>(&db(2, cfg)).unwrap();
    assert_eq!(
        protocol(&out),
        json!({"replication": "async", "backups": 3})
    );
    assert_eq!(topology_key(&out), "topology.kubernetes.io/zone");
    let sts: StatefulSet = out.typed("carts");
    assert_eq!(sts.spec.unwrap().replicas, Some(4));

    let out =
        testing::render::<PrimaryBackup>(&db(2, json!({"memberGroupStrategy": "rack_aware"})))
            .unwrap();
    assert_eq!(topology_key(&out), "topology.kubernetes.io/rack");
}

#[test]
fn no_backups_means_one_replica_and_no_disruption_budget() {
    let out = testing::render::<PrimaryBackup>(&db(1, json!({"backups": 0}))).unwrap();
    let sts: StatefulSet = out.typed("carts");
    assert_eq!(sts.spec.unwrap().replicas, Some(1));
    assert!(out.names("PodDisruptionBudget").is_empty());
    assert!(out.names("PersistentVolumeClaim").is_empty());
}

#[test]
fn validation_names_each_field_and_the_fix() {
    let bad = db(
        1,
        json!({"backups": 9, "image": "", "resources": {"limits": {"memory": "1 Gi"}}}),
    );
    let violations = testing::violations::<PrimaryBackup>(&bad);
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.storage.config.backups",
            "spec.storage.config.image",
            "spec.storage.config.resources.limits.memory",
        ]
    );
    assert!(
        violations[0].message.contains("between 0 and 8 (got 9)"),
        "{}",
        violations[0]
    );
    assert!(testing::violations::<PrimaryBackup>(&db(1, json!({"backups": 8}))).is_empty());
}

#[test]
fn unknown_and_mistyped_fields_are_named() {
    let v = &testing::violations::<PrimaryBackup>(&db(1, json!({"replicas": 3})))[0];
    assert_eq!(v.field, "spec.storage.config.replicas");
    assert!(v.message.contains("unknown field `replicas`"), "{v}");
    assert!(
        v.message.contains("backups"),
        "suggests the real fields: {v}"
    );

    let v = &testing::violations::<PrimaryBackup>(&db(1, json!({"replication": "SYNC"})))[0];
    assert_eq!(v.field, "spec.storage.config.replication");
    assert!(
        v.message.contains("sync") && v.message.contains("async"),
        "{v}"
    );

    let v =
        &testing::violations::<PrimaryBackup>(&db(1, json!({"memberGroupStrategy": "host_aware"})))
            [0];
    assert_eq!(v.field, "spec.storage.config.memberGroupStrategy");
    assert!(
        v.message.contains("node_aware"),
        "lists allowed values: {v}"
    );
}

#[test]
fn render_refuses_an_invalid_database() {
    let err = testing::render::<PrimaryBackup>(&db(1, json!({"backups": 20}))).unwrap_err();
    assert!(matches!(err, atoll_guest::RenderError::Invalid(v) if v.len() == 1));
}

#[test]
fn readiness_needs_every_replica() {
    let db = db(3, json!({"backups": 2}));
    let out = testing::render::<PrimaryBackup>(&db).unwrap();
    let sts = |ready: i32| {
        with_status(
            out.get("StatefulSet", "carts"),
            json!({"replicas": 3, "readyReplicas": ready}),
        )
    };

    let none = testing::status::<PrimaryBackup>(&db, &[]);
    assert!(none.ready_partitions.is_empty());
    assert!(none.available_partitions.is_empty());
    assert_eq!(none.message, "0/3 replicas ready (1 needed to serve)");

    let some = testing::status::<PrimaryBackup>(&db, &[sts(2)]);
    assert!(some.ready_partitions.is_empty());
    assert_eq!(some.available_partitions, [1, 2, 3]);
    assert_eq!(some.message, "2/3 replicas ready (serving: 1 needed)");

    // One live replica is elected primary and serves.
    let one = testing::status::<PrimaryBackup>(&db, &[sts(1)]);
    assert_eq!(one.available_partitions, [1, 2, 3]);

    let all = testing::status::<PrimaryBackup>(&db, &[sts(3)]);
    assert_eq!(all.ready_partitions, [1, 2, 3]);
    assert_eq!(all.message, "all 3 replicas ready");
}

#[test]
fn readiness_waits_for_a_resized_statefulset() {
    let out = testing::render::<PrimaryBackup>(&db(1, json!({"backups": 1}))).unwrap();
    let observed = with_status(out.get("StatefulSet", "carts"), json!({"readyReplicas": 2}));
    let more = db(1, json!({"backups": 2}));
    assert!(
        testing::status::<PrimaryBackup>(&more, &[observed])
            .ready_partitions
            .is_empty()
    );
}

#[test]
fn metadata_publishes_the_config_schema() {
    let m = atoll_guest::dispatch::metadata::<PrimaryBackup>();
    assert_eq!(m.name, "primary-backup");
    let schema: Value = serde_json::from_str(&m.config_schema).unwrap();
    let props = &schema["properties"];
    assert_eq!(props["backups"]["default"], 1, "{schema}");
    assert_eq!(props["replication"]["default"], "sync");
    assert_eq!(props["memberGroupStrategy"]["default"], "node_aware");
    let text = m.config_schema;
    for value in ["\"async\"", "\"rack_aware\"", "\"zone_aware\""] {
        assert!(text.contains(value), "{value} in {text}");
    }
}

#[test]
fn every_partition_lives_in_the_groups_statefulset() {
    let out = testing::render::<PrimaryBackup>(&db(3, json!({}))).unwrap();
    assert_eq!(out.names("StatefulSet"), ["carts"]);
    assert_eq!(out.partitions.len(), 3);
    for b in &out.partitions {
        assert_eq!(b.placement, Placement::statefulset("carts"), "{b:?}");
    }
}
