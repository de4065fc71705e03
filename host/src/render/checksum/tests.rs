//! Config checksums on hand-written renders: which edits change them and
//! which do not.

use serde_json::{Value, json};

use super::{ConfigRef, External, external, references, stamp};
use crate::api::ANNOTATION_CONFIG_CHECKSUM;

fn config_map(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

fn workload(kind: &str, name: &str, pod_spec: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name},
        "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}}})
}

/// `db-1` mounts ConfigMap `db-1`; `db-2` is rendered but not mounted.
fn render(db1: Value, db2: Value) -> Vec<Value> {
    vec![
        config_map("db-1", db1),
        config_map("db-2", db2),
        workload(
            "StatefulSet",
            "db-1",
            json!({"volumes": [{"name": "config", "configMap": {"name": "db-1"}}],
                "containers": [{"name": "node"}]}),
        ),
    ]
}

fn checksum_of(mut objects: Vec<Value>, external: &External) -> Option<String> {
    stamp(&mut objects, external);
    let template = &objects.last().unwrap()["spec"]["template"];
    template["metadata"]["annotations"][ANNOTATION_CONFIG_CHECKSUM]
        .as_str()
        .map(str::to_string)
}

fn cm(name: &str) -> ConfigRef {
    ConfigRef {
        kind: "ConfigMap",
        name: name.into(),
    }
}

fn secret(name: &str) -> ConfigRef {
    ConfigRef {
        kind: "Secret",
        name: name.into(),
    }
}

#[test]
fn a_referenced_config_maps_data_changes_the_checksum() {
    let none = External::new();
    let before = checksum_of(render(json!({"protocol.json": "5000"}), json!({})), &none).unwrap();
    let after = checksum_of(render(json!({"protocol.json": "7000"}), json!({})), &none).unwrap();
    assert_ne!(before, after);
    assert_eq!(before.len(), 64, "SHA-256 in hex: {before}");
    assert!(before.chars().all(|c| c.is_ascii_hexdigit()), "{before}");
}

#[test]
fn an_unreferenced_config_map_does_not_change_it() {
    let none = External::new();
    let a = checksum_of(render(json!({"k": "v"}), json!({"x": "1"})), &none);
    let b = checksum_of(render(json!({"k": "v"}), json!({"x": "2"})), &none);
    assert_eq!(a, b);
}

#[test]
fn the_checksum_is_stable_across_renders_and_key_order() {
    let none = External::new();
    let a = checksum_of(render(json!({"a": "1", "b": "2"}), json!({})), &none);
    let b = checksum_of(render(json!({"b": "2", "a": "1"}), json!({})), &none);
    assert!(a.is_some());
    assert_eq!(a, b);
    // Stamping twice gives the same annotation.
    let mut objects = render(json!({"a": "1"}), json!({}));
    stamp(&mut objects, &none);
    let once = objects.clone();
    stamp(&mut objects, &none);
    assert_eq!(objects, once);
}

#[test]
fn a_template_referencing_nothing_gets_no_checksum() {
    let mut objects = vec![workload(
        "Deployment",
        "db-proxy",
        json!({"containers": [{"name": "proxy", "env": [{"name": "A", "value": "1"}]}]}),
    )];
    objects[0]["spec"]["template"]["metadata"]["annotations"] =
        json!({ANNOTATION_CONFIG_CHECKSUM: "stale", "keep": "me"});
    stamp(&mut objects, &External::new());
    assert_eq!(
        objects[0]["spec"]["template"]["metadata"]["annotations"],
        json!({"keep": "me"})
    );
}

#[test]
fn every_kind_of_reference_is_found_in_init_containers_too() {
    let template = json!({"spec": {
        "volumes": [
            {"name": "a", "configMap": {"name": "vol-cm"}},
            {"name": "b", "secret": {"secretName": "vol-secret"}},
            {"name": "c", "projected": {"sources": [
                {"configMap": {"name": "proj-cm"}}, {"secret": {"name": "proj-secret"}},
                {"downwardAPI": {"items": []}}]}},
            {"name": "d", "emptyDir": {}},
        ],
        "initContainers": [{"name": "init",
            "envFrom": [{"configMapRef": {"name": "init-cm"}}, {"secretRef": {"name": "init-secret"}}]}],
        "containers": [{"name": "main", "env": [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "a"}}},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "b"}}},
            {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ]}],
    }});
    let found: Vec<ConfigRef> = references(&template).into_iter().collect();
    assert_eq!(
        found,
        [
            cm("env-cm"),
            cm("init-cm"),
            cm("proj-cm"),
            cm("vol-cm"),
            secret("env-secret"),
            secret("init-secret"),
            secret("proj-secret"),
            secret("vol-secret"),
        ]
    );
}

/// A Deployment reading Secret `db-creds` (not rendered) through env.
fn reads_external_secret() -> Vec<Value> {
    vec![workload(
        "Deployment",
        "db-proxy",
        json!({"containers": [{"name": "proxy", "envFrom": [{"secretRef": {"name": "db-creds"}}]}]}),
    )]
}

#[test]
fn external_objects_are_hashed_as_read_and_a_missing_one_as_missing() {
    let objects = reads_external_secret();
    assert_eq!(
        external(&objects).into_iter().collect::<Vec<_>>(),
        [secret("db-creds")]
    );
    let with = |data: Option<Value>| {
        let mut external = External::new();
        external.insert(secret("db-creds"), data);
        checksum_of(reads_external_secret(), &external).unwrap()
    };
    let missing = with(None);
    let one = with(Some(json!({"data": {"password": "YQ=="}})));
    let two = with(Some(json!({"data": {"password": "Yg=="}})));
    let not_read = checksum_of(reads_external_secret(), &External::new()).unwrap();
    assert_ne!(missing, one, "creating the Secret rolls the pods");
    assert_ne!(one, two, "editing it rolls them");
    assert_ne!(missing, not_read);
    assert_eq!(one, with(Some(json!({"data": {"password": "YQ=="}}))));
}

#[test]
fn rendered_objects_are_not_external() {
    let objects = render(json!({}), json!({}));
    assert!(external(&objects).is_empty());
}
