use super::*;
use atoll_guest::k8s_openapi::api::apps::v1::StatefulSet;
use atoll_guest::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use atoll_guest::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use atoll_guest::testing::{self, with_status};
use serde_json::{Value, json};

fn db(partitions: u32, config: Value) -> Database {
    Database::new("events", partitions)
        .in_namespace("audit")
        .with_config(config)
}

fn protocol(out: &testing::Objects) -> Value {
    let cm = out.get("ConfigMap", "events");
    serde_json::from_str(cm["data"]["protocol.json"].as_str().unwrap()).unwrap()
}

fn fields(config: Value) -> Vec<String> {
    testing::violations::<Log>(&db(1, config))
        .into_iter()
        .map(|v| v.field)
        .collect()
}

#[test]
fn renders_one_group_and_partition_services() {
    let out = testing::render::<Log>(&db(4, json!({}))).unwrap();
    assert_eq!(out.names("ConfigMap"), ["events"]);
    assert_eq!(out.names("StatefulSet"), ["events"]);
    assert_eq!(out.names("PodDisruptionBudget"), ["events"]);
    assert_eq!(
        out.names("Service"),
        [
            "events-hs",
            "events-p1",
            "events-p2",
            "events-p3",
            "events-p4"
        ]
    );
    assert_eq!(out.objects.len(), 8);

    let cm = out.get("ConfigMap", "events");
    let cluster: Value =
        serde_json::from_str(cm["data"]["cluster.json"].as_str().unwrap()).unwrap();
    assert_eq!(cluster["partitions"].as_array().unwrap().len(), 4);
    assert_eq!(
        cluster["replicas"][2],
        json!({
            "id": "events-2",
            "host": "events-2.events-hs.audit.svc.cluster.local",
            "apiPort": 5678,
            "protocolPort": 5679,
        })
    );

    let p3 = out.get("Service", "events-p3");
    assert_eq!(p3["spec"]["selector"]["app.kubernetes.io/name"], "log");
    assert_eq!(p3["spec"]["selector"]["atoll.dev/database"], "events");
    assert_eq!(p3["metadata"]["labels"]["atoll.dev/partition"], "3");
    assert_eq!(out.partitions.len(), 4);
    assert_eq!(out.partitions[2].partition, 3);
    assert_eq!(out.partitions[2].service, "events-p3");
    assert_eq!(out.partitions[2].port, 5678);
}

#[test]
fn defaults_three_replicas_with_a_claim_each() {
    let out = testing::render::<Log>(&db(1, json!({}))).unwrap();
    let sts: StatefulSet = out.typed("events");
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.service_name.as_deref(), Some("events-hs"));

    let claims = spec.volume_claim_templates.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    let claim = claims[0].spec.as_ref().unwrap();
    assert_eq!(
        claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "1Gi"
    );
    assert!(claim.storage_class_name.is_none());
    assert_eq!(
        spec.persistent_volume_claim_retention_policy
            .unwrap()
            .when_scaled
            .as_deref(),
        Some("Retain")
    );

    let pod = spec.template.spec.unwrap();
    // The claim, not an emptyDir, backs the data mount.
    assert!(!pod.volumes.unwrap().iter().any(|v| v.name == "data"));
    let node = &pod.containers[0];
    assert_eq!(
        node.image.as_deref(),
        Some("atomix/log-storage-node:v0.5.0")
    );
    assert!(
        node.volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.name == "data" && m.mount_path == "/var/lib/atomix")
    );
    assert!(node.readiness_probe.as_ref().unwrap().tcp_socket.is_some());
    assert!(node.liveness_probe.as_ref().unwrap().tcp_socket.is_some());
    assert!(pod.affinity.unwrap().pod_anti_affinity.is_some());

    assert_eq!(
        protocol(&out),
        json!({"storage": {"segmentSize": 67108864, "maxEntrySize": 1048576, "flushOnCommit": false}})
    );

    let pdb: PodDisruptionBudget = out.typed("events");
    assert_eq!(
        pdb.spec.unwrap().min_available,
        Some(IntOrString::Int(2)),
        "quorum of 3"
    );
}

#[test]
fn storage_settings_are_rendered() {
    let cfg = json!({"replicas": 5, "storage": {
        "size": "20Gi", "className": "fast", "segmentSize": "128Mi",
        "maxEntrySize": "4Mi", "flushOnCommit": true}});
    let out = testing::render::<Log>(&db(1, cfg)).unwrap();
    let sts: StatefulSet = out.typed("events");
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(5));
    let claim = spec.volume_claim_templates.unwrap().remove(0).spec.unwrap();
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim.resources.unwrap().requests.unwrap()["storage"].0,
        "20Gi"
    );
    assert_eq!(
        protocol(&out),
        json!({"storage": {"segmentSize": 134217728, "maxEntrySize": 4194304, "flushOnCommit": true}})
    );
    let pdb: PodDisruptionBudget = out.typed("events");
    assert_eq!(pdb.spec.unwrap().min_available, Some(IntOrString::Int(3)));
}

#[test]
fn single_replica_has_no_disruption_budget_but_keeps_its_claim() {
    let out = testing::render::<Log>(&db(1, json!({"replicas": 1}))).unwrap();
    assert!(out.names("PodDisruptionBudget").is_empty());
    let sts: StatefulSet = out.typed("events");
    assert!(sts.spec.unwrap().volume_claim_templates.is_some());
}

#[test]
fn validation_names_each_field_and_the_fix() {
    let bad = json!({"replicas": 4, "image": "", "resources": {"limits": {"cpu": "fast"}},
        "storage": {"size": "big", "className": "", "segmentSize": "64MB", "maxEntrySize": "500m"}});
    assert_eq!(
        fields(bad),
        [
            "spec.storage.config.replicas",
            "spec.storage.config.image",
            "spec.storage.config.resources.limits.cpu",
            "spec.storage.config.storage.size",
            "spec.storage.config.storage.className",
            "spec.storage.config.storage.segmentSize",
            "spec.storage.config.storage.maxEntrySize",
        ]
    );
    for replicas in [0, 2, 11] {
        let v = &testing::violations::<Log>(&db(1, json!({"replicas": replicas})))[0];
        assert_eq!(v.field, "spec.storage.config.replicas");
        assert!(v.message.contains(&format!("(got {replicas})")), "{v}");
        assert!(v.message.contains("use 1, 3, 5, 7 or 9"), "{v}");
    }
    let v = &testing::violations::<Log>(&db(1, json!({"storage": {"maxEntrySize": "500m"}})))[0];
    assert!(v.message.contains("whole number of bytes"), "{v}");
    assert!(testing::violations::<Log>(&db(1, json!({"replicas": 9}))).is_empty());
}

#[test]
fn sizes_must_nest() {
    // A segment larger than the volume, an entry larger than a segment.
    let v = testing::violations::<Log>(&db(
        1,
        json!({"storage": {"size": "32Mi", "segmentSize": "64Mi", "maxEntrySize": "128Mi"}}),
    ));
    let got: Vec<(&str, &str)> = v
        .iter()
        .map(|v| (v.field.as_str(), v.message.as_str()))
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "spec.storage.config.storage.segmentSize");
    assert!(
        got[0]
            .1
            .contains("must not exceed storage.size (32Mi) (got 64Mi)"),
        "{}",
        got[0].1
    );
    assert_eq!(got[1].0, "spec.storage.config.storage.maxEntrySize");
    assert!(
        got[1]
            .1
            .contains("must not exceed storage.segmentSize (64Mi) (got 128Mi)"),
        "{}",
        got[1].1
    );
    // Units are compared by value: 1G is below 1Gi, 1Gi above 1G.
    assert!(fields(json!({"storage": {"size": "1Gi", "segmentSize": "1G"}})).is_empty());
    assert_eq!(
        fields(json!({"storage": {"size": "1G", "segmentSize": "1Gi", "maxEntrySize": "1Mi"}})),
        ["spec.storage.config.storage.segmentSize"]
    );
}

#[test]
fn unknown_and_mistyped_fields_are_named() {
    let v = &testing::violations::<Log>(&db(1, json!({"storage": {"storageClassName": "x"}})))[0];
    assert_eq!(v.field, "spec.storage.config.storage.storageClassName");
    assert!(
        v.message.contains("unknown field `storageClassName`"),
        "{v}"
    );
    assert!(
        v.message.contains("className"),
        "suggests the real fields: {v}"
    );
    let v = &testing::violations::<Log>(&db(1, json!({"storage": {"flushOnCommit": "yes"}})))[0];
    assert_eq!(v.field, "spec.storage.config.storage.flushOnCommit");
    let v = &testing::violations::<Log>(&db(1, json!({"volumeClaimTemplate": {}})))[0];
    assert!(
        v.message.contains("unknown field `volumeClaimTemplate`"),
        "{v}"
    );
}

#[test]
fn render_refuses_an_invalid_database() {
    let err = testing::render::<Log>(&db(1, json!({"replicas": 2}))).unwrap_err();
    assert!(matches!(err, atoll_guest::RenderError::Invalid(v) if v.len() == 1));
}

#[test]
fn readiness_needs_every_replica() {
    let events = db(2, json!({}));
    let out = testing::render::<Log>(&events).unwrap();
    let sts = |ready: i32| {
        with_status(
            out.get("StatefulSet", "events"),
            json!({"replicas": 3, "readyReplicas": ready}),
        )
    };

    let none = testing::status::<Log>(&events, &[]);
    assert!(none.ready_partitions.is_empty());
    assert_eq!(none.message, "0/3 replicas ready (2 needed to serve)");

    let some = testing::status::<Log>(&events, &[sts(2)]);
    assert!(some.ready_partitions.is_empty());
    assert_eq!(some.available_partitions, [1, 2], "a majority serves");
    assert_eq!(some.message, "2/3 replicas ready (serving: 2 needed)");

    let minority = testing::status::<Log>(&events, &[sts(1)]);
    assert!(minority.available_partitions.is_empty());
    assert_eq!(minority.message, "1/3 replicas ready (2 needed to serve)");

    let all = testing::status::<Log>(&events, &[sts(3)]);
    assert_eq!(all.ready_partitions, [1, 2]);
    assert_eq!(all.message, "all 3 replicas ready");

    // A StatefulSet still sized for 3 while the config asks for 5.
    let five = db(2, json!({"replicas": 5}));
    assert!(
        testing::status::<Log>(&five, &[sts(3)])
            .ready_partitions
            .is_empty()
    );
}

#[test]
fn metadata_publishes_the_config_schema() {
    let m = atoll_guest::dispatch::metadata::<Log>();
    assert_eq!(m.name, "log");
    let schema: Value = serde_json::from_str(&m.config_schema).unwrap();
    let props = &schema["properties"];
    assert_eq!(props["replicas"]["default"], 3, "{schema}");
    assert_eq!(props["image"]["default"], "atomix/log-storage-node:v0.5.0");
    assert_eq!(props["storage"]["$ref"], "#/$defs/Storage");
    let storage = &schema["$defs"]["Storage"];
    assert_eq!(storage["additionalProperties"], false);
    let storage = &storage["properties"];
    assert_eq!(storage["size"]["default"], "1Gi");
    assert_eq!(storage["segmentSize"]["default"], "64Mi");
    assert_eq!(storage["maxEntrySize"]["default"], "1Mi");
    assert_eq!(storage["flushOnCommit"]["default"], false);
    assert!(storage["className"].is_object());
}

#[test]
fn every_partition_lives_in_the_one_statefulset() {
    let out = testing::render::<Log>(&db(4, json!({}))).unwrap();
    assert_eq!(out.names("StatefulSet"), ["events"]);
    assert_eq!(out.partitions.len(), 4);
    for b in &out.partitions {
        assert_eq!(b.placement, Placement::statefulset("events"), "{b:?}");
    }
}
