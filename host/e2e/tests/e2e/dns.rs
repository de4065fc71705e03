//! DNS discovery through a real cluster DNS: the CoreDNS that `cargo xtask
//! cluster up` runs beside the control plane (its `kubernetes` plugin reads
//! Services and EndpointSlices from the API server). One SRV query for
//! `_api._tcp.<db>.<ns>.svc.cluster.local` returns every partition of a
//! Database, and each target resolves to that partition Service's
//! ClusterIP. Fails, saying how to start it, when CoreDNS is absent.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use atoll_e2e::{Operator, k, patch_database};
use atoll_testenv::{Dns, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;

const DATABASE: &str = r#"
apiVersion: atoll.dev/v1alpha1
kind: Database
metadata:
  name: shop
spec:
  partitions: 3
  storage:
    plugin: raft
    config:
      clusters: 3
      replicas: 1
"#;

/// The ClusterIP of each partition Service `shop-p<id>`, read from the API
/// server (which assigns them), by partition id.
async fn cluster_ips(services: &Api<Service>, partitions: u32) -> BTreeMap<u32, Ipv4Addr> {
    let mut ips = BTreeMap::new();
    for id in 1..=partitions {
        let service = services.get(&format!("shop-p{id}")).await.unwrap();
        let ip = service.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
        ips.insert(
            id,
            ip.parse()
                .unwrap_or_else(|e| panic!("shop-p{id}: {ip:?}: {e}")),
        );
    }
    ips
}

/// SRV targets of the group until there are `partitions`, as `(target, port)`.
async fn srv_targets(dns: &Dns, ns: &str, partitions: usize) -> Vec<(String, u16)> {
    let name = format!("_api._tcp.shop.{ns}.svc.cluster.local");
    wait_for(
        &format!("SRV {name} to list {partitions} partitions"),
        Duration::from_secs(90),
        || async {
            let srv = dns.srv(&name).await?;
            let targets: Vec<(String, u16)> = srv.into_iter().map(|s| (s.target, s.port)).collect();
            if targets.len() == partitions {
                Ok(targets)
            } else {
                Err(format!("{targets:?}"))
            }
        },
    )
    .await
}

#[tokio::test]
async fn one_srv_query_finds_every_partition_and_a_new_one_appears() {
    let dns = Dns::connect().await;
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "dns").await;
    let n = ns.name();
    let op = Operator::start(&client, n).await;
    k(n, &["apply", "-f", "-"], Some(DATABASE)).await;
    let services: Api<Service> = Api::namespaced(client.clone(), n);
    let domain = format!("shop.{n}.svc.cluster.local");

    let targets = srv_targets(&dns, n, 3).await;
    let expected: Vec<(String, u16)> = (1..=3).map(|i| (format!("p{i}.{domain}"), 5678)).collect();
    assert_eq!(targets, expected);
    let ips = cluster_ips(&services, 3).await;
    for (id, ip) in &ips {
        let a = dns.a(&format!("p{id}.{domain}")).await.unwrap();
        assert_eq!(a, vec![*ip], "p{id}.{domain}");
    }
    // The group name itself (a headless Service) resolves to every partition.
    let mut all: Vec<Ipv4Addr> = ips.values().copied().collect();
    all.sort();
    assert_eq!(dns.a(&domain).await.unwrap(), all);

    // One more partition: it appears, and the others stay.
    patch_database(n, "shop", r#"{"spec":{"partitions":4}}"#).await;
    let targets = srv_targets(&dns, n, 4).await;
    let expected: Vec<(String, u16)> = (1..=4).map(|i| (format!("p{i}.{domain}"), 5678)).collect();
    assert_eq!(targets, expected);
    let ips = cluster_ips(&services, 4).await;
    let a = dns.a(&format!("p4.{domain}")).await.unwrap();
    assert_eq!(a, vec![ips[&4]]);

    op.stop().await;
    ns.cleanup().await;
}
