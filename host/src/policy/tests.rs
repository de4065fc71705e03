mod pod_security;

use super::*;
use crate::contract::{PartitionBinding, Placement};

fn owner() -> Owner<'static> {
    Owner {
        name: "orders",
        namespace: "shop",
        uid: "u-1",
        plugin: "raft",
        partitions: 1,
        deletion: DeletionPolicy::Retain,
    }
}

fn rendered(objects: Vec<Value>) -> Rendered {
    Rendered {
        objects: objects.iter().map(Value::to_string).collect(),
        partitions: vec![PartitionBinding {
            partition: 1,
            service: "orders-p1".into(),
            port: 5678,
            placement: Placement::Nowhere,
        }],
    }
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}})
}

fn enforce(objects: Vec<Value>) -> Result<Vec<Value>, PolicyError> {
    OutputPolicy::default().enforce(&owner(), &rendered(objects))
}

#[test]
fn stamps_namespace_labels_and_owner_over_what_the_plugin_set() {
    let mut svc = service("orders-p1");
    svc["metadata"]["labels"] =
        json!({"app.kubernetes.io/managed-by": "someone-else", "keep": "me"});
    svc["metadata"]["ownerReferences"] = json!([{"kind": "Namespace", "name": "x"}]);
    let out = enforce(vec![svc]).unwrap();
    let m = &out[0]["metadata"];
    assert_eq!(m["namespace"], "shop");
    assert_eq!(m["labels"]["app.kubernetes.io/managed-by"], "atoll");
    assert_eq!(m["labels"]["atoll.dev/database"], "orders");
    assert_eq!(m["labels"]["atoll.dev/plugin"], "raft");
    assert_eq!(m["labels"]["keep"], "me");
    assert_eq!(
        m["ownerReferences"],
        json!([{"apiVersion": "atoll.dev/v1alpha1", "kind": "Database", "name": "orders",
                "uid": "u-1", "controller": true, "blockOwnerDeletion": true}])
    );
}

#[test]
fn namespace_may_be_absent_or_equal_but_not_other() {
    let mut same = service("orders-p1");
    same["metadata"]["namespace"] = "shop".into();
    assert!(enforce(vec![same]).is_ok());
    let mut other = service("orders-p1");
    other["metadata"]["namespace"] = "default".into();
    assert!(matches!(
        enforce(vec![other]),
        Err(PolicyError::WrongNamespace { .. })
    ));
}

#[test]
fn names_must_be_the_database_or_prefixed_by_it() {
    let cm =
        |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    assert!(enforce(vec![service("orders-p1"), cm("orders")]).is_ok());
    for bad in ["ordersx", "order", "x-orders"] {
        assert!(
            matches!(
                enforce(vec![service("orders-p1"), cm(bad)]),
                Err(PolicyError::NamePrefix { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn the_partition_group_service_name_is_the_hosts() {
    let err = enforce(vec![service("orders-p1"), service("orders")]).unwrap_err();
    assert!(
        matches!(&err, PolicyError::Reserved { kind, name } if kind == "Service" && name == "orders"),
        "{err}"
    );
    assert!(err.to_string().contains("partition-group Service"), "{err}");
    // Other kinds may still be named after the Database, and Services
    // merely prefixed by it are the plugin's.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "orders"}});
    assert!(enforce(vec![service("orders-p1"), service("orders-hs"), cm]).is_ok());
    // The host's EndpointSlices too, should an operator allow the kind.
    let allowing = OutputPolicy {
        allowed_kinds: vec![
            AllowedKind::new("v1", "Service"),
            AllowedKind::new("discovery.k8s.io/v1", "EndpointSlice"),
        ],
        ..OutputPolicy::default()
    };
    let slice = |name: &str| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name}})
    };
    for (name, refused) in [
        ("orders", true),
        ("orders-2", true),
        ("orders-extra", false),
    ] {
        let r = rendered(vec![service("orders-p1"), slice(name)]);
        let result = allowing.enforce(&owner(), &r);
        assert_eq!(
            matches!(result, Err(PolicyError::Reserved { .. })),
            refused,
            "{name}"
        );
    }
}

#[test]
fn kinds_are_checked_with_their_api_version() {
    let fake =
        json!({"apiVersion": "evil.io/v1", "kind": "Service", "metadata": {"name": "orders-x"}});
    let err = enforce(vec![service("orders-p1"), fake]).unwrap_err();
    assert!(matches!(err, PolicyError::KindNotAllowed { .. }), "{err}");
    assert!(
        err.to_string().contains("apps/v1/StatefulSet"),
        "lists allowed: {err}"
    );
}

#[test]
fn malformed_duplicate_and_bounds() {
    let mut r = rendered(vec![service("orders-p1")]);
    r.objects.push("{not json".into());
    assert!(matches!(
        OutputPolicy::default().enforce(&owner(), &r),
        Err(PolicyError::Malformed { index: 1, .. })
    ));
    let no_name = json!({"apiVersion": "v1", "kind": "Service", "metadata": {}});
    assert!(matches!(
        enforce(vec![no_name]),
        Err(PolicyError::Malformed { index: 0, .. })
    ));
    assert!(matches!(
        enforce(vec![service("orders-p1"), service("orders-p1")]),
        Err(PolicyError::Duplicate { .. })
    ));

    let small = OutputPolicy {
        max_objects: 1,
        ..OutputPolicy::default()
    };
    let two = rendered(vec![service("orders-p1"), service("orders-p2")]);
    assert!(matches!(
        small.enforce(&owner(), &two),
        Err(PolicyError::TooManyObjects { count: 2, max: 1 })
    ));
    let tiny = OutputPolicy {
        max_bytes: 10,
        ..OutputPolicy::default()
    };
    assert!(matches!(
        tiny.enforce(&owner(), &two),
        Err(PolicyError::TooLarge { .. })
    ));
}

#[test]
fn every_partition_is_bound_once_to_a_rendered_service() {
    let mut r = rendered(vec![service("orders-p1")]);
    r.partitions[0].service = "orders-p9".into();
    let err = OutputPolicy::default().enforce(&owner(), &r).unwrap_err();
    assert!(err.to_string().contains("not rendered"), "{err}");

    let r = Rendered {
        partitions: vec![],
        ..rendered(vec![service("orders-p1")])
    };
    let err = OutputPolicy::default().enforce(&owner(), &r).unwrap_err();
    assert!(err.to_string().contains("[1] are not bound"), "{err}");
}

#[test]
fn allowed_kind_parses_from_flags() {
    let k: AllowedKind = "apps/v1/StatefulSet".parse().unwrap();
    assert_eq!(k, AllowedKind::new("apps/v1", "StatefulSet"));
    assert_eq!(
        "v1/ConfigMap".parse::<AllowedKind>().unwrap().api_version,
        "v1"
    );
    assert!("ConfigMap".parse::<AllowedKind>().is_err());
}

#[test]
fn rendered_hash_is_stable_and_changes_when_a_field_is_dropped() {
    let hash = |svc: Value| {
        let out = enforce(vec![svc]).unwrap();
        out[0]["metadata"]["annotations"][ANNOTATION_RENDERED]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut labelled = service("orders-p1");
    labelled["metadata"]["labels"] = json!({"release": "2"});
    let plain = hash(service("orders-p1"));
    assert_eq!(plain.len(), 16);
    assert_eq!(plain, hash(service("orders-p1")));
    assert_ne!(plain, hash(labelled.clone()));
    // A plugin cannot forge the hash.
    labelled["metadata"]["annotations"] = json!({ANNOTATION_RENDERED: plain.clone()});
    assert_ne!(plain, hash(labelled));
}

#[test]
fn a_rendered_claim_is_kept_by_retain_and_owned_by_delete() {
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "orders-data"}, "spec": {}});
    let r = rendered(vec![service("orders-p1"), pvc]);
    let policy =
        OutputPolicy::default().allowing([AllowedKind::new("v1", "PersistentVolumeClaim")]);
    let out = policy.enforce(&owner(), &r).unwrap();
    let m = &out[1]["metadata"];
    assert!(m["ownerReferences"].is_null(), "{m}");
    assert_eq!(m["labels"]["atoll.dev/retained-from"], "u-1");
    assert_eq!(m["labels"]["atoll.dev/database"], "orders");

    let delete = Owner {
        deletion: DeletionPolicy::Delete,
        ..owner()
    };
    let out = policy.enforce(&delete, &r).unwrap();
    let m = &out[1]["metadata"];
    assert_eq!(m["ownerReferences"][0]["uid"], "u-1");
    assert!(m["labels"]["atoll.dev/retained-from"].is_null(), "{m}");
    assert_ne!(
        out[1]["metadata"]["annotations"][ANNOTATION_RENDERED],
        policy.enforce(&owner(), &r).unwrap()[1]["metadata"]["annotations"][ANNOTATION_RENDERED],
        "switching the policy changes the fingerprint, so the claim is re-applied"
    );
}
