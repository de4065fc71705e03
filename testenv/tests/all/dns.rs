//! The CoreDNS beside the control plane is a real cluster DNS: it resolves
//! Service names from the API server, and serves the SRV and A records of a
//! headless, selector-less Service from an EndpointSlice written by hand,
//! the way atoll's partition-group Service is published. Needs `cargo xtask
//! cluster up`; fails (never skips) without CoreDNS.

use std::net::Ipv4Addr;
use std::time::Duration;

use atoll_testenv::{Dns, TestNamespace, client, wait_for};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::json;

#[tokio::test]
async fn coredns_resolves_the_kubernetes_service_to_its_cluster_ip() {
    let client = client().await;
    let dns = Dns::connect().await;
    let kubernetes = Api::<Service>::namespaced(client, "default")
        .get("kubernetes")
        .await
        .expect("GET Service default/kubernetes");
    let ip: Ipv4Addr = kubernetes
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("the kubernetes Service has a ClusterIP")
        .parse()
        .expect("an IPv4 ClusterIP");
    let answer = dns
        .a("kubernetes.default.svc.cluster.local")
        .await
        .expect("A query");
    assert_eq!(answer, vec![ip]);
    // A name that does not exist resolves to nothing (NXDOMAIN), not an error.
    let none = dns
        .a("no-such-service.default.svc.cluster.local")
        .await
        .expect("A query");
    assert!(none.is_empty(), "{none:?}");
}

#[tokio::test]
async fn srv_of_a_headless_service_lists_its_endpoint_slice_hostnames() {
    let client = client().await;
    let dns = Dns::connect().await;
    let ns = TestNamespace::new(&client, "dns-srv").await;
    let namespace = ns.name().to_owned();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "group"},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": true,
                 "ports": [{"name": "api", "port": 5678}]}
    }))
    .expect("a Service");
    Api::<Service>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &service)
        .await
        .expect("creating the Service");
    let addresses = ["10.96.7.1", "10.96.7.2", "10.96.7.3"];
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "group", "labels": {
            "kubernetes.io/service-name": "group",
            "endpointslice.kubernetes.io/managed-by": "atoll-testenv"}},
        "addressType": "IPv4",
        "ports": [{"name": "api", "port": 5678, "protocol": "TCP"}],
        "endpoints": addresses.iter().enumerate().map(|(i, ip)| json!({
            "addresses": [ip], "hostname": format!("p{}", i + 1),
            "conditions": {"ready": true}
        })).collect::<Vec<_>>()
    }))
    .expect("an EndpointSlice");
    Api::<EndpointSlice>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &slice)
        .await
        .expect("creating the EndpointSlice");

    let domain = format!("group.{namespace}.svc.cluster.local");
    let srv_name = format!("_api._tcp.{domain}");
    let srv = wait_for(
        "CoreDNS to serve the SRV records",
        Duration::from_secs(30),
        || async {
            let srv = dns.srv(&srv_name).await?;
            match srv.len() {
                3 => Ok(srv),
                _ => Err(format!("{srv:?}")),
            }
        },
    )
    .await;
    // Priority and weight are CoreDNS's choice; targets and ports are the slice's.
    let targets: Vec<(String, u16)> = srv.iter().map(|s| (s.target.clone(), s.port)).collect();
    let wanted: Vec<(String, u16)> = (1..=3).map(|i| (format!("p{i}.{domain}"), 5678)).collect();
    assert_eq!(targets, wanted);
    for (i, ip) in addresses.iter().enumerate() {
        let name = format!("p{}.{domain}", i + 1);
        let a = dns.a(&name).await.expect("A query");
        assert_eq!(a, vec![ip.parse::<Ipv4Addr>().unwrap()], "{name}");
    }
    ns.cleanup().await;
}
