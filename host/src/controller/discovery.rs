//! Discovery by DNS: the partition-group Service, as the Atomix Kubernetes
//! controller made it, so a client resolves every partition of a Database
//! with one SRV query and without talking to atoll.
//!
//! For each Database the host (not the plugin) keeps
//! - a headless Service `<db>` with no selector, `publishNotReadyAddresses`,
//!   and one port named `api` (the partitions' port);
//! - an EndpointSlice `<db>` (`kubernetes.io/service-name: <db>`, managed by
//!   `atoll.dev` so Kubernetes' EndpointSlice controllers leave it alone)
//!   with one endpoint per partition, in partition-id order: hostname
//!   `p<id>`, address the ClusterIP of that partition's Service.
//!
//! so `_api._tcp.<db>.<ns>.svc.<domain>` answers one SRV record per
//! partition (target `p<id>.<db>.<ns>.svc.<domain>`, the partitions' port)
//! and each target's A record is the partition Service's ClusterIP.
//!
//! Guarantees:
//! - All or nothing, as gRPC discovery: the slice lists the partitions only
//!   once every partition's Service exists with a ClusterIP; before that it
//!   lists none, never some.
//! - A partition Service that is headless (no ClusterIP to point at), or
//!   partitions on different ports, leave the slice empty, with a warning in
//!   atoll's log: the group cannot be described by one Service.
//! - The objects carry atoll's labels and the Database's controller owner
//!   reference like every child, are written by [`converge`](super::converge)
//!   with the other children (only when they differ) and pruned like them.
//! - The Service name `<db>` is the host's: the output policy refuses a
//!   plugin that renders a Service of that name.
//!
//! An EndpointSlice holds at most 1,000 endpoints; Databases with more
//! partitions get more slices, `<db>-2` and on, each with the next 1,000.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kube::ResourceExt;
use serde_json::{Map, Value, json};

use super::observe::{Key, Live};
use crate::api::Database;
use crate::contract::PartitionBinding;
use crate::policy::{self, Owner};
use crate::render::Desired;

/// Name of the Service port (and so of the SRV service label `_api`).
pub const PORT_NAME: &str = "api";

/// `endpointslice.kubernetes.io/managed-by` of atoll's slices.
pub const SLICE_MANAGER: &str = "atoll.dev";

/// Most endpoints one EndpointSlice may hold (the API server's limit).
const SLICE_CAPACITY: usize = 1000;

/// The Service and EndpointSlices that publish `desired`'s partitions in
/// DNS, given the live partition Services in `live`. Ready to apply:
/// namespaced, labelled and owned by `db`.
pub fn objects(db: &Database, desired: &Desired, live: &BTreeMap<Key, Live>) -> Vec<Value> {
    let name = db.name_any();
    let namespace = db.namespace().unwrap_or_else(|| "default".into());
    let owner = Owner {
        name: &name,
        namespace: &namespace,
        uid: db.metadata.uid.as_deref().unwrap_or_default(),
        plugin: &desired.plugin.name,
        partitions: db.spec.partitions,
        deletion: db.spec.deletion_policy.unwrap_or_default(),
    };
    let Some(port) = desired.partitions.first().map(|b| b.port) else {
        return Vec::new();
    };
    let addresses = match addresses(&desired.partitions, live) {
        Ok(addresses) => addresses,
        Err(Unlisted::Pending(missing)) => {
            tracing::debug!(database = %name, namespace = %namespace, ?missing,
                "partition Services without a ClusterIP yet: the group's EndpointSlice lists none");
            Vec::new()
        }
        Err(unusable) => {
            tracing::warn!(database = %name, namespace = %namespace, reason = %unusable,
                "the partition-group Service lists no partition");
            Vec::new()
        }
    };
    let mut objects = vec![service(&owner, port)];
    let slices = desired.partitions.len().div_ceil(SLICE_CAPACITY).max(1);
    for i in 0..slices {
        let endpoints: Vec<&(u32, IpAddr)> = addresses
            .iter()
            .skip(i * SLICE_CAPACITY)
            .take(SLICE_CAPACITY)
            .collect();
        let slice_name = slice_name(&name, i);
        let mut object = slice(&owner, &slice_name, port, &endpoints);
        if endpoints.is_empty() && lists_endpoints(live, &slice_name) {
            // `null` matches any live value in converge's drift check, so
            // emptying a slice that lists partitions takes an explicit `[]`
            // (which the API server stores as `null`).
            object["endpoints"] = json!([]);
        }
        objects.push(object);
    }
    for object in &mut objects {
        if let Some(metadata) = object["metadata"].as_object_mut() {
            policy::stamp(metadata, &owner);
        }
    }
    objects
}

/// Whether the live EndpointSlice `name` lists any endpoint.
fn lists_endpoints(live: &BTreeMap<Key, Live>, name: &str) -> bool {
    live.get(&("EndpointSlice".to_string(), name.to_string()))
        .and_then(|l| l.object["endpoints"].as_array())
        .is_some_and(|e| !e.is_empty())
}

/// `<db>` for the first slice, `<db>-2`, `<db>-3`… for the next.
pub fn slice_name(db: &str, index: usize) -> String {
    match index {
        0 => db.to_owned(),
        i => format!("{db}-{}", i + 1),
    }
}

/// Why the slice lists no partition.
#[derive(Debug, PartialEq, Eq)]
pub enum Unlisted {
    /// These partitions' Services do not exist yet or have no ClusterIP yet.
    Pending(Vec<u32>),
    /// These partitions' Services are headless: nothing to point at.
    Headless(Vec<u32>),
    /// The partitions do not share one port.
    Ports(Vec<u16>),
    /// ClusterIPs of both families, which one slice cannot hold.
    MixedFamilies,
}

impl std::fmt::Display for Unlisted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unlisted::Pending(p) => write!(f, "partitions {p:?} have no Service ClusterIP yet"),
            Unlisted::Headless(p) => write!(
                f,
                "the Services of partitions {p:?} are headless (clusterIP None), so DNS cannot point at them"
            ),
            Unlisted::Ports(ports) => write!(
                f,
                "partitions listen on different ports {ports:?}; one Service port cannot name them all"
            ),
            Unlisted::MixedFamilies => write!(f, "partition ClusterIPs mix IPv4 and IPv6"),
        }
    }
}

/// Each partition's id and its Service's ClusterIP, in id order, or why
/// they cannot all be listed (then none is).
///
/// # Errors
/// [`Unlisted`]: some partition cannot be listed.
pub fn addresses(
    bindings: &[PartitionBinding],
    live: &BTreeMap<Key, Live>,
) -> Result<Vec<(u32, IpAddr)>, Unlisted> {
    let mut ports: Vec<u16> = bindings.iter().map(|b| b.port).collect();
    ports.sort_unstable();
    ports.dedup();
    if ports.len() > 1 {
        return Err(Unlisted::Ports(ports));
    }
    let mut sorted: Vec<&PartitionBinding> = bindings.iter().collect();
    sorted.sort_by_key(|b| b.partition);
    let (mut listed, mut pending, mut headless) = (Vec::new(), Vec::new(), Vec::new());
    for b in sorted {
        let ip = live
            .get(&("Service".to_string(), b.service.clone()))
            .and_then(|l| l.object["spec"]["clusterIP"].as_str());
        match ip {
            None | Some("") => pending.push(b.partition),
            Some("None") => headless.push(b.partition),
            Some(ip) => match ip.parse::<IpAddr>() {
                Ok(ip) => listed.push((b.partition, ip)),
                Err(_) => pending.push(b.partition),
            },
        }
    }
    if !headless.is_empty() {
        return Err(Unlisted::Headless(headless));
    }
    if !pending.is_empty() {
        return Err(Unlisted::Pending(pending));
    }
    if listed.iter().any(|(_, ip)| ip.is_ipv4()) && listed.iter().any(|(_, ip)| ip.is_ipv6()) {
        return Err(Unlisted::MixedFamilies);
    }
    Ok(listed)
}

/// The headless, selector-less partition-group Service.
fn service(owner: &Owner, port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": owner.name, "namespace": owner.namespace},
        "spec": {
            "clusterIP": "None",
            // Partitions are listed whether or not their pods are ready:
            // readiness is the client's and atoll's status's business.
            "publishNotReadyAddresses": true,
            "ports": [{"name": PORT_NAME, "port": port, "protocol": "TCP"}],
        },
    })
}

/// One EndpointSlice of the group. No endpoints is `null`, as the API
/// server stores an empty list, so an empty slice that stays empty is not
/// rewritten.
fn slice(owner: &Owner, name: &str, port: u16, endpoints: &[&(u32, IpAddr)]) -> Value {
    let family = match endpoints.first() {
        Some((_, IpAddr::V6(_))) => "IPv6",
        _ => "IPv4",
    };
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(id, ip)| {
            json!({
                "addresses": [ip.to_string()],
                "hostname": format!("p{id}"),
                "conditions": {"ready": true},
            })
        })
        .collect();
    let mut labels = Map::new();
    labels.insert("kubernetes.io/service-name".into(), owner.name.into());
    labels.insert(
        "endpointslice.kubernetes.io/managed-by".into(),
        SLICE_MANAGER.into(),
    );
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": owner.namespace, "labels": labels},
        "addressType": family,
        "ports": [{"name": PORT_NAME, "port": port, "protocol": "TCP"}],
        "endpoints": if endpoints.is_empty() { Value::Null } else { Value::Array(endpoints) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Placement;
    use crate::controller::observe::Kind;

    fn binding(partition: u32, port: u16) -> PartitionBinding {
        PartitionBinding {
            partition,
            service: format!("db-p{partition}"),
            port,
            placement: Placement::Unknown,
        }
    }

    fn live_services(ips: &[(u32, &str)]) -> BTreeMap<Key, Live> {
        ips.iter()
            .map(|(p, ip)| {
                let name = format!("db-p{p}");
                let object = json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name}, "spec": {"clusterIP": ip}});
                let live = Live {
                    kind: Kind::new("v1", "Service"),
                    object,
                };
                (("Service".to_string(), name), live)
            })
            .collect()
    }

    #[test]
    fn every_partition_in_id_order_once_all_have_cluster_ips() {
        let bindings = [binding(3, 5678), binding(1, 5678), binding(2, 5678)];
        let live = live_services(&[(1, "10.96.0.11"), (2, "10.96.0.12"), (3, "10.96.0.13")]);
        let listed = addresses(&bindings, &live).unwrap();
        let expected: Vec<(u32, IpAddr)> = vec![
            (1, "10.96.0.11".parse().unwrap()),
            (2, "10.96.0.12".parse().unwrap()),
            (3, "10.96.0.13".parse().unwrap()),
        ];
        assert_eq!(listed, expected);
    }

    #[test]
    fn none_while_a_service_is_missing_or_without_ip_and_headless_is_named() {
        let bindings = [binding(1, 5678), binding(2, 5678), binding(3, 5678)];
        let live = live_services(&[(1, "10.96.0.11"), (3, "")]);
        assert_eq!(
            addresses(&bindings, &live),
            Err(Unlisted::Pending(vec![2, 3]))
        );
        let live = live_services(&[(1, "10.96.0.11"), (2, "None"), (3, "10.96.0.13")]);
        assert_eq!(
            addresses(&bindings, &live),
            Err(Unlisted::Headless(vec![2]))
        );
        let bindings = [binding(1, 5678), binding(2, 6000)];
        let live = live_services(&[(1, "10.96.0.11"), (2, "10.96.0.12")]);
        assert_eq!(
            addresses(&bindings, &live),
            Err(Unlisted::Ports(vec![5678, 6000]))
        );
    }

    #[test]
    fn an_empty_slice_has_null_endpoints_and_a_full_one_hostnames() {
        let owner = Owner {
            name: "db",
            namespace: "ns",
            uid: "u",
            plugin: "raft",
            partitions: 2,
            deletion: Default::default(),
        };
        let empty = slice(&owner, "db", 5678, &[]);
        assert_eq!(empty["endpoints"], Value::Null);
        let one = (7, "10.96.0.7".parse::<IpAddr>().unwrap());
        let full = slice(&owner, "db", 5678, &[&one]);
        assert_eq!(
            full["endpoints"],
            json!([{"addresses": ["10.96.0.7"], "hostname": "p7", "conditions": {"ready": true}}])
        );
        assert_eq!(full["addressType"], "IPv4");
        assert_eq!(
            full["metadata"]["labels"]["kubernetes.io/service-name"],
            "db"
        );
        assert_eq!(
            full["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "atoll.dev"
        );
        assert_eq!(slice_name("db", 0), "db");
        assert_eq!(slice_name("db", 1), "db-2");
    }
}
