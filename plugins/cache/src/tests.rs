use super::*;
use atoll_guest::k8s_openapi::api::apps::v1::StatefulSet;
use atoll_guest::testing::{self, with_status};
use serde_json::{Value, json};

fn db(partitions: u32, config: Value) -> Database {
    Database::new("sessions", partitions)
        .in_namespace("web")
        .with_config(config)
}

fn served(out: &testing::Objects, node: u32) -> Vec<i64> {
    let cm = out.get("ConfigMap", &format!("sessions-{node}"));
    let config: Value = serde_json::from_str(cm["data"]["cluster.json"].as_str().unwrap()).unwrap();
    config["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["partition"].as_i64().unwrap())
        .collect()
}

#[test]
fn one_node_per_partition_by_default() {
    let out = testing::render::<Cache>(&db(3, json!({}))).unwrap();
    assert_eq!(
        out.names("StatefulSet"),
        ["sessions-1", "sessions-2", "sessions-3"]
    );
    assert_eq!(
        out.names("ConfigMap"),
        ["sessions-1", "sessions-2", "sessions-3"]
    );
    assert_eq!(
        out.names("Service"),
        [
            "sessions-1-hs",
            "sessions-2-hs",
            "sessions-3-hs",
            "sessions-p1",
            "sessions-p2",
            "sessions-p3"
        ]
    );
    assert!(out.names("PodDisruptionBudget").is_empty());
    assert!(out.names("PersistentVolumeClaim").is_empty());
    // Per node: ConfigMap, headless Service, StatefulSet; per partition: Service.
    assert_eq!(out.objects.len(), 12);
    for n in 1..=3 {
        assert_eq!(served(&out, n), [n as i64]);
    }
}

#[test]
fn nodes_serve_contiguous_partitions() {
    // 7 partitions, 3 per node: nodes 1..=3 serve 1-3, 4-6 and 7.
    let out = testing::render::<Cache>(&db(7, json!({"partitionsPerNode": 3}))).unwrap();
    assert_eq!(
        out.names("StatefulSet"),
        ["sessions-1", "sessions-2", "sessions-3"]
    );
    assert_eq!(served(&out, 1), [1, 2, 3]);
    assert_eq!(served(&out, 2), [4, 5, 6]);
    assert_eq!(served(&out, 3), [7]);

    // Each node's cluster.json names its single replica.
    let cm = out.get("ConfigMap", "sessions-2");
    let config: Value = serde_json::from_str(cm["data"]["cluster.json"].as_str().unwrap()).unwrap();
    assert_eq!(
        config["replicas"],
        json!([{
            "id": "sessions-2-0",
            "host": "sessions-2-0.sessions-2-hs.web.svc.cluster.local",
            "apiPort": 5678,
            "protocolPort": 5679,
        }])
    );

    // Partition Services select exactly their node's pod.
    for (p, node) in [(1, "1"), (3, "1"), (4, "2"), (6, "2"), (7, "3")] {
        let svc = out.get("Service", &format!("sessions-p{p}"));
        assert_eq!(svc["spec"]["selector"]["atoll.dev/node"], node, "p{p}");
        assert_eq!(svc["spec"]["selector"]["app.kubernetes.io/name"], "cache");
        assert_eq!(
            svc["metadata"]["labels"]["atoll.dev/partition"],
            p.to_string()
        );
        assert_eq!(svc["spec"]["ports"][0]["port"], 5678);
    }
    let bindings: Vec<(u32, &str, u16)> = out
        .partitions
        .iter()
        .map(|b| (b.partition, b.service.as_str(), b.port))
        .collect();
    assert_eq!(bindings.len(), 7);
    assert_eq!(bindings[0], (1, "sessions-p1", 5678));
    assert_eq!(bindings[6], (7, "sessions-p7", 5678));
}

#[test]
fn more_partitions_per_node_than_partitions_gives_one_node() {
    let out = testing::render::<Cache>(&db(2, json!({"partitionsPerNode": 8}))).unwrap();
    assert_eq!(out.names("StatefulSet"), ["sessions-1"]);
    assert_eq!(served(&out, 1), [1, 2]);
}

#[test]
fn node_is_one_in_memory_replica_with_probes() {
    let out = testing::render::<Cache>(&db(1, json!({}))).unwrap();
    let sts: StatefulSet = out.typed("sessions-1");
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.service_name.as_deref(), Some("sessions-1-hs"));
    assert!(spec.volume_claim_templates.is_none());
    let selector = spec.selector.match_labels.unwrap();
    assert_eq!(selector["atoll.dev/node"], "1");
    assert_eq!(selector["app.kubernetes.io/component"], "node");
    let pod = spec.template.spec.unwrap();
    assert!(pod.affinity.is_none());
    let node = &pod.containers[0];
    assert_eq!(
        node.image.as_deref(),
        Some("atomix/cache-storage-node:v0.5.1")
    );
    assert_eq!(node.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let readiness = node.readiness_probe.as_ref().unwrap();
    assert!(readiness.tcp_socket.is_some());
    assert!(node.liveness_probe.as_ref().unwrap().tcp_socket.is_some());
    assert!(node.resources.is_none());
    let volumes = pod.volumes.unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v.name == "data" && v.empty_dir.is_some())
    );
    assert!(
        volumes
            .iter()
            .any(|v| v.name == "config" && v.config_map.as_ref().unwrap().name == "sessions-1")
    );
}

#[test]
fn image_pull_policy_and_resources_are_applied() {
    let cfg = json!({"image": "example/cache:dev", "imagePullPolicy": "Always",
                     "resources": {"limits": {"memory": "2Gi"}}});
    let out = testing::render::<Cache>(&db(1, cfg)).unwrap();
    let sts: StatefulSet = out.typed("sessions-1");
    let node = &sts.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(node.image.as_deref(), Some("example/cache:dev"));
    assert_eq!(node.image_pull_policy.as_deref(), Some("Always"));
    let limits = node.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["memory"].0, "2Gi");
}

#[test]
fn validation_names_each_field_and_the_fix() {
    let bad = db(
        2,
        json!({"partitionsPerNode": 0, "image": " ", "resources": {"requests": {"memory": "lots"}}}),
    );
    let violations = testing::violations::<Cache>(&bad);
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.storage.config.partitionsPerNode",
            "spec.storage.config.image",
            "spec.storage.config.resources.requests.memory",
        ]
    );
    assert!(
        violations[0].message.contains("(got 0)") && violations[0].message.contains("use 1"),
        "{}",
        violations[0]
    );
    assert!(testing::violations::<Cache>(&db(2, json!({}))).is_empty());
}

#[test]
fn unknown_and_mistyped_fields_are_named() {
    let v = &testing::violations::<Cache>(&db(1, json!({"partitionPerNode": 2})))[0];
    assert_eq!(v.field, "spec.storage.config.partitionPerNode");
    assert!(
        v.message.contains("unknown field `partitionPerNode`"),
        "{v}"
    );
    assert!(v.message.contains("partitionsPerNode"), "suggests: {v}");
    let v = &testing::violations::<Cache>(&db(1, json!({"partitionsPerNode": -1})))[0];
    assert_eq!(v.field, "spec.storage.config.partitionsPerNode");
}

#[test]
fn render_refuses_an_invalid_database() {
    let err = testing::render::<Cache>(&db(1, json!({"partitionsPerNode": 0}))).unwrap_err();
    assert!(matches!(err, atoll_guest::RenderError::Invalid(v) if v.len() == 1));
}

#[test]
fn readiness_follows_each_nodes_statefulset() {
    let db = db(5, json!({"partitionsPerNode": 2}));
    let out = testing::render::<Cache>(&db).unwrap();
    let sts = |n: u32, ready: i32| {
        with_status(
            out.get("StatefulSet", &format!("sessions-{n}")),
            json!({"replicas": 1, "readyReplicas": ready}),
        )
    };

    let none = testing::status::<Cache>(&db, &[]);
    assert!(none.ready_partitions.is_empty());
    assert_eq!(
        none.message,
        "0/3 nodes ready; not ready: node 1, node 2, node 3"
    );

    // Node 2 serves partitions 3 and 4; node 3 serves 5 but has no ready pod.
    let some = testing::status::<Cache>(&db, &[sts(2, 1), sts(3, 0)]);
    assert_eq!(some.ready_partitions, [3, 4]);
    assert_eq!(some.message, "1/3 nodes ready; not ready: node 1, node 3");

    let all = testing::status::<Cache>(&db, &[sts(1, 1), sts(2, 1), sts(3, 1)]);
    assert_eq!(all.ready_partitions, [1, 2, 3, 4, 5]);
    assert_eq!(all.message, "all 3 nodes ready");
}

#[test]
fn status_message_stays_short_with_many_nodes() {
    let db = db(40, json!({}));
    let report = testing::status::<Cache>(&db, &[]);
    assert_eq!(
        report.message,
        "0/40 nodes ready; not ready: node 1, node 2, node 3, node 4, node 5 and 35 more"
    );
}

#[test]
fn status_of_a_config_that_fails_checks_is_nothing_ready() {
    let db = db(2, json!({"partitionsPerNode": 0}));
    let report = testing::status::<Cache>(&db, &[]);
    assert!(report.ready_partitions.is_empty());
    assert!(
        report.message.starts_with(
            "invalid config: spec.storage.config.partitionsPerNode: must be at least 1"
        ),
        "{}",
        report.message
    );
}

#[test]
fn metadata_publishes_the_config_schema() {
    let m = atoll_guest::dispatch::metadata::<Cache>();
    assert_eq!(m.name, "cache");
    let schema: Value = serde_json::from_str(&m.config_schema).unwrap();
    let props = &schema["properties"];
    assert_eq!(props["partitionsPerNode"]["default"], 1, "{schema}");
    assert_eq!(
        props["image"]["default"],
        "atomix/cache-storage-node:v0.5.1"
    );
    assert!(props["imagePullPolicy"].is_object());
    assert!(props["resources"].is_object());
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn partitions_live_nowhere_durable() {
    let out = testing::render::<Cache>(&db(5, json!({"partitionsPerNode": 2}))).unwrap();
    assert_eq!(out.partitions.len(), 5);
    for b in &out.partitions {
        assert_eq!(b.placement, Placement::Nowhere, "{b:?}");
    }
}
