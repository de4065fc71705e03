use super::*;
use atoll_guest::k8s_openapi::api::apps::v1::StatefulSet;
use atoll_guest::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use atoll_guest::testing::{self, with_status};
use serde_json::{Value, json};

fn db(partitions: u32, config: Value) -> Database {
    Database::new("orders", partitions)
        .in_namespace("shop")
        .with_config(config)
}

#[test]
fn renders_clusters_partitions_and_placement() {
    let db = db(6, json!({"clusters": 3, "replicas": 3}));
    let out = testing::render::<Raft>(&db).unwrap();

    assert_eq!(out.names("ConfigMap"), ["orders-1", "orders-2", "orders-3"]);
    assert_eq!(
        out.names("StatefulSet"),
        ["orders-1", "orders-2", "orders-3"]
    );
    assert_eq!(out.names("PodDisruptionBudget").len(), 3);
    assert_eq!(
        out.names("Service"),
        [
            "orders-1-hs",
            "orders-2-hs",
            "orders-3-hs",
            "orders-p1",
            "orders-p2",
            "orders-p3",
            "orders-p4",
            "orders-p5",
            "orders-p6"
        ]
    );

    // Partition p is served by cluster (p mod clusters) + 1.
    for (cluster, expected) in [(1, [3, 6]), (2, [1, 4]), (3, [2, 5])] {
        let cm = out.get("ConfigMap", &format!("orders-{cluster}"));
        let config: Value =
            serde_json::from_str(cm["data"]["cluster.json"].as_str().unwrap()).unwrap();
        let partitions: Vec<i64> = config["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["partition"].as_i64().unwrap())
            .collect();
        assert_eq!(partitions, expected, "cluster {cluster}");
        let replicas = config["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), 3);
        assert_eq!(
            replicas[2],
            json!({
                "id": format!("orders-{cluster}-2"),
                "host": format!("orders-{cluster}-2.orders-{cluster}-hs.shop.svc.cluster.local"),
                "apiPort": 5678,
                "protocolPort": 5679,
            })
        );
    }

    // Each partition Service selects exactly its cluster's pods.
    let p4 = out.get("Service", "orders-p4");
    assert_eq!(p4["spec"]["selector"]["atoll.dev/cluster"], "2");
    assert_eq!(p4["metadata"]["labels"]["atoll.dev/partition"], "4");
    assert_eq!(out.partitions.len(), 6);
    assert_eq!(out.partitions[3].service, "orders-p4");
    assert_eq!(out.partitions[3].port, 5678);
}

#[test]
fn statefulset_has_probes_spread_and_data_volume() {
    let out = testing::render::<Raft>(&db(1, json!({}))).unwrap();
    let sts: StatefulSet = out.typed("orders-1");
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(3), "default replicas");
    assert_eq!(spec.service_name.as_deref(), Some("orders-1-hs"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    let pod = spec.template.spec.unwrap();
    let node = &pod.containers[0];
    assert_eq!(
        node.image.as_deref(),
        Some("atomix/raft-storage-node:v0.5.3")
    );
    assert!(node.readiness_probe.as_ref().unwrap().tcp_socket.is_some());
    assert!(node.liveness_probe.is_some());
    assert!(pod.affinity.unwrap().pod_anti_affinity.is_some());
    let volumes = pod.volumes.unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v.name == "data" && v.empty_dir.is_some())
    );
    assert!(spec.volume_claim_templates.is_none());

    let hs = out.get("Service", "orders-1-hs");
    assert_eq!(hs["spec"]["clusterIP"], "None");
    assert_eq!(hs["spec"]["publishNotReadyAddresses"], true);

    let pdb: PodDisruptionBudget = out.typed("orders-1");
    assert_eq!(
        pdb.spec.unwrap().min_available,
        Some(atoll_guest::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(2)),
        "quorum of 3"
    );
}

#[test]
fn volume_claim_template_replaces_empty_dir() {
    let cfg =
        json!({"volumeClaimTemplate": {"size": "10Gi", "storageClassName": "fast"}, "replicas": 5});
    let out = testing::render::<Raft>(&db(2, cfg)).unwrap();
    let sts: StatefulSet = out.typed("orders-1");
    let spec = sts.spec.unwrap();
    let claims = spec.volume_claim_templates.unwrap();
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    assert_eq!(
        claims[0]
            .spec
            .as_ref()
            .unwrap()
            .storage_class_name
            .as_deref(),
        Some("fast")
    );
    let volumes = spec.template.spec.unwrap().volumes.unwrap();
    assert!(!volumes.iter().any(|v| v.name == "data"));
}

#[test]
fn single_replica_has_no_disruption_budget() {
    let out = testing::render::<Raft>(&db(1, json!({"replicas": 1}))).unwrap();
    assert!(out.names("PodDisruptionBudget").is_empty());
}

#[test]
fn validation_names_each_field_and_the_fix() {
    let bad = db(
        2,
        json!({"replicas": 4, "clusters": 3, "heartbeatIntervalMillis": 9000,
               "volumeClaimTemplate": {"size": "lots"}, "resources": {"limits": {"cpu": "x"}}}),
    );
    let fields: Vec<String> = testing::violations::<Raft>(&bad)
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        [
            "spec.storage.config.replicas",
            "spec.storage.config.clusters",
            "spec.storage.config.heartbeatIntervalMillis",
            "spec.storage.config.volumeClaimTemplate.size",
            "spec.storage.config.resources.limits.cpu",
        ]
    );
    let v = &testing::violations::<Raft>(&db(1, json!({"replicas": 4})))[0];
    assert!(v.message.contains("use 1, 3, 5, 7 or 9"), "{v}");
}

#[test]
fn unknown_and_mistyped_fields_are_named() {
    let v = &testing::violations::<Raft>(&db(1, json!({"replica": 3})))[0];
    assert!(v.message.contains("unknown field `replica`"), "{v}");
    let v = &testing::violations::<Raft>(&db(1, json!({"replicas": "three"})))[0];
    assert_eq!(v.field, "spec.storage.config.replicas");
    let v = &testing::violations::<Raft>(&db(1, json!({"imagePullPolicy": "Sometimes"})))[0];
    assert!(
        v.message.contains("IfNotPresent"),
        "lists allowed values: {v}"
    );
}

#[test]
fn render_refuses_an_invalid_database() {
    let err = testing::render::<Raft>(&db(1, json!({"replicas": 2}))).unwrap_err();
    assert!(matches!(err, atoll_guest::RenderError::Invalid(v) if v.len() == 1));
}

#[test]
fn readiness_follows_each_clusters_statefulset() {
    let db = db(6, json!({"clusters": 3, "replicas": 3}));
    let out = testing::render::<Raft>(&db).unwrap();
    let sts = |c: u32, ready: i32| {
        with_status(
            out.get("StatefulSet", &format!("orders-{c}")),
            json!({"replicas": 3, "readyReplicas": ready}),
        )
    };

    let none = testing::status::<Raft>(&db, &[]);
    assert!(none.ready_partitions.is_empty());

    // Cluster 1 serves partitions 3 and 6; cluster 2 is short one replica.
    let some = testing::status::<Raft>(&db, &[sts(1, 3), sts(2, 2)]);
    assert_eq!(some.ready_partitions, [3, 6]);
    // Cluster 2 keeps its quorum (2 of 3): partitions 1 and 4 still serve.
    // Cluster 3 is absent: partitions 2 and 5 do not.
    assert_eq!(some.available_partitions, [1, 3, 4, 6]);
    assert!(
        some.message
            .contains("cluster 2: 2/3 replicas ready (serving)"),
        "{}",
        some.message
    );
    assert!(
        some.message
            .contains("cluster 3: 0/3 replicas ready (no quorum)"),
        "{}",
        some.message
    );
    let lost = testing::status::<Raft>(&db, &[sts(1, 3), sts(2, 1), sts(3, 3)]);
    assert_eq!(
        lost.available_partitions,
        [2, 3, 5, 6],
        "1 of 3 is no quorum"
    );

    let all = testing::status::<Raft>(&db, &[sts(1, 3), sts(2, 3), sts(3, 3)]);
    assert_eq!(all.ready_partitions, [1, 2, 3, 4, 5, 6]);
    assert_eq!(all.available_partitions, [1, 2, 3, 4, 5, 6]);
    assert_eq!(all.message, "all 3 clusters ready");
}

#[test]
fn readiness_waits_for_a_resized_statefulset() {
    // Observed spec still has 3 replicas while the config asks for 5.
    let db3 = db(1, json!({"replicas": 3}));
    let out = testing::render::<Raft>(&db3).unwrap();
    let observed = with_status(
        out.get("StatefulSet", "orders-1"),
        json!({"readyReplicas": 3}),
    );
    let db5 = db(1, json!({"replicas": 5}));
    assert!(
        testing::status::<Raft>(&db5, &[observed])
            .ready_partitions
            .is_empty()
    );
}

#[test]
fn metadata_publishes_the_config_schema() {
    let m = atoll_guest::dispatch::metadata::<Raft>();
    assert_eq!(m.name, "raft");
    let schema: Value = serde_json::from_str(&m.config_schema).unwrap();
    assert!(schema["properties"]["replicas"].is_object(), "{schema}");
    assert!(schema["properties"]["volumeClaimTemplate"].is_object());
}

#[test]
fn each_partition_lives_in_its_clusters_statefulset() {
    let out = testing::render::<Raft>(&db(6, json!({"clusters": 3, "replicas": 3}))).unwrap();
    // Partition p is served by cluster (p mod clusters) + 1.
    let placed: Vec<(u32, Placement)> = out
        .partitions
        .iter()
        .map(|b| (b.partition, b.placement.clone()))
        .collect();
    let sts = Placement::statefulset;
    assert_eq!(
        placed,
        [
            (1, sts("orders-2")),
            (2, sts("orders-3")),
            (3, sts("orders-1")),
            (4, sts("orders-2")),
            (5, sts("orders-3")),
            (6, sts("orders-1")),
        ]
    );
}
