//! Scenarios of the partition-group Service (DNS discovery): the headless
//! Service `db` and the EndpointSlice `db` listing every partition's
//! Service ClusterIP, all or nothing. The fake API assigns no ClusterIPs;
//! each scenario assigns them by hand, as the API server would.

use serde_json::{Value, json};

use super::{FakeApi, NS, UID, converged, run, stored, summary, writes};

/// Give `db-p<id>` the ClusterIP `ip`, as the API server does on creation.
fn assign(api: &FakeApi, ips: &[(u32, &str)]) {
    for (id, ip) in ips {
        let name = format!("db-p{id}");
        let mut service = api.get("services", NS, &name).expect("a partition Service");
        service["spec"]["clusterIP"] = json!(ip);
        api.put("services", service);
    }
}

fn slice(api: &FakeApi) -> Value {
    api.get("endpointslices", NS, "db")
        .expect("the EndpointSlice db")
}

/// `(hostname, address)` of each endpoint, in the slice's order.
fn listed(api: &FakeApi) -> Vec<(String, String)> {
    slice(api)["endpoints"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| {
                    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                    (text(&e["hostname"]), text(&e["addresses"][0]))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(h, a)| (h.to_string(), a.to_string()))
        .collect()
}

#[tokio::test]
async fn the_group_service_is_headless_and_its_slice_empty_until_services_have_ips() {
    let (api, _) = converged().await;
    let service = api.get("services", NS, "db").expect("the group Service");
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
    assert!(service["spec"]["selector"].is_null(), "{service}");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "api", "port": 5678, "protocol": "TCP"}])
    );
    let slice = slice(&api);
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "db"
    );
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "atoll.dev"
    );
    for object in [&service, &slice] {
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "atoll"
        );
        assert_eq!(object["metadata"]["labels"]["atoll.dev/database"], "db");
        assert_eq!(object["metadata"]["ownerReferences"][0]["uid"], UID);
        assert_eq!(object["metadata"]["ownerReferences"][0]["controller"], true);
    }
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["ports"],
        json!([{"name": "api", "port": 5678, "protocol": "TCP"}])
    );
    assert!(listed(&api).is_empty(), "{slice}");
}

#[tokio::test]
async fn every_partition_is_listed_in_id_order_once_all_have_ips_and_never_some() {
    let (api, db) = converged().await;
    // Two of three: still nothing, and nothing written.
    assign(&api, &[(3, "10.96.0.20"), (1, "10.96.0.30")]);
    run(&api, &db).await;
    assert!(listed(&api).is_empty(), "{}", slice(&api));
    assert_eq!(summary(&writes(&api)), Vec::<String>::new());

    assign(&api, &[(2, "10.96.0.10")]);
    api.clear_seen();
    run(&api, &db).await;
    assert_eq!(
        listed(&api),
        pairs(&[
            ("p1", "10.96.0.30"),
            ("p2", "10.96.0.10"),
            ("p3", "10.96.0.20")
        ])
    );
    assert_eq!(summary(&writes(&api)), ["PATCH endpointslices/db"]);
    let write = &writes(&api)[0];
    assert!(write.query.contains("fieldManager=atoll"), "{write:?}");

    // Unchanged: not written again.
    api.clear_seen();
    run(&api, &db).await;
    assert_eq!(summary(&writes(&api)), Vec::<String>::new());
}

#[tokio::test]
async fn a_new_partition_empties_the_slice_until_its_service_has_an_ip() {
    let (api, db) = converged().await;
    assign(
        &api,
        &[(1, "10.96.0.11"), (2, "10.96.0.12"), (3, "10.96.0.13")],
    );
    run(&api, &db).await;
    assert_eq!(listed(&api).len(), 3);

    let mut more = stored(&api, &db);
    more.spec.partitions = 4;
    more.metadata.generation = Some(2);
    run(&api, &more).await;
    assert!(api.get("services", NS, "db-p4").is_some());
    // Three of four would send keys to the wrong partitions: none instead.
    assert!(listed(&api).is_empty(), "{}", slice(&api));

    assign(&api, &[(4, "10.96.0.14")]);
    run(&api, &stored(&api, &more)).await;
    assert_eq!(
        listed(&api),
        pairs(&[
            ("p1", "10.96.0.11"),
            ("p2", "10.96.0.12"),
            ("p3", "10.96.0.13"),
            ("p4", "10.96.0.14")
        ])
    );
}

#[tokio::test]
async fn a_headless_partition_service_leaves_the_slice_empty() {
    let (api, db) = converged().await;
    assign(&api, &[(1, "10.96.0.11"), (2, "None"), (3, "10.96.0.13")]);
    run(&api, &db).await;
    assert!(listed(&api).is_empty(), "{}", slice(&api));
}

#[test]
fn every_builtin_plugin_gives_partition_services_a_cluster_ip() {
    // A headless partition Service would leave the group's slice empty:
    // none of the five built-ins renders one.
    for plugin in ["raft", "cache", "redis", "primary-backup", "log"] {
        let mut db = super::database(3, 1);
        db.spec.storage.plugin = plugin.into();
        db.spec.storage.config = Some(json!({}));
        let desired = super::renderer()
            .render(&db)
            .unwrap_or_else(|e| panic!("{plugin}: {e}"));
        assert_eq!(desired.partitions.len(), 3, "{plugin}");
        for b in &desired.partitions {
            let service = desired
                .objects
                .iter()
                .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == b.service.as_str())
                .unwrap_or_else(|| panic!("{plugin}: Service {}", b.service));
            assert_ne!(service["spec"]["clusterIP"], "None", "{plugin}: {service}");
        }
    }
}
