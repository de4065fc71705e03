use serde_json::json;

use super::*;

fn db(value: Value) -> Database {
    serde_json::from_value(value).unwrap()
}

fn live() -> Database {
    db(json!({
        "apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
        "metadata": {"name": "shop", "namespace": "ns", "uid": "u-1", "generation": 4,
            "resourceVersion": "77",
            "labels": {"team": "a"},
            "annotations": {"atoll.dev/allow-data-loss": "5", "note": "old"}},
        "spec": {"partitions": 3, "storage": {"plugin": "cache", "config": {"replicas": 1}}},
        "status": {"plugin": {"name": "cache", "version": "0.1.0", "digest": "sha256:ab"}}
    }))
}

#[test]
fn an_edited_spec_is_the_next_generation_with_live_identity_and_status() {
    let file = db(json!({
        "apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
        "metadata": {"name": "shop", "namespace": "ns", "annotations": {"note": "new"}},
        "spec": {"partitions": 2, "storage": {"plugin": "cache", "config": {"replicas": 1}}}
    }));
    let live = live();
    let applied = as_applied(file, Some(&live));
    assert_eq!(applied.metadata.uid.as_deref(), Some("u-1"));
    assert_eq!(applied.metadata.generation, Some(5));
    assert_eq!(applied.spec.partitions, 2);
    assert_eq!(applied.status, live.status);
    let annotations = applied.metadata.annotations.unwrap();
    assert_eq!(annotations["note"], "new", "the file's annotation wins");
    assert_eq!(
        annotations["atoll.dev/allow-data-loss"], "5",
        "an approval made with kubectl annotate stays"
    );
    assert_eq!(applied.metadata.labels.unwrap()["team"], "a");
    // The guard reads the approval against the generation the edit makes.
    assert_eq!(
        crate::controller::plan::approval(&as_applied(
            db(
                json!({"apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
                "metadata": {"name": "shop", "namespace": "ns"},
                "spec": {"partitions": 2, "storage": {"plugin": "cache"}}})
            ),
            Some(&live)
        )),
        crate::controller::plan::Approval::ThisGeneration
    );
}

#[test]
fn an_unchanged_spec_keeps_the_generation() {
    let live = live();
    let file = db(json!({
        "apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
        "metadata": {"name": "shop", "namespace": "ns"},
        "spec": {"partitions": 3, "storage": {"plugin": "cache", "config": {"replicas": 1}}}
    }));
    assert_eq!(as_applied(file, Some(&live)).metadata.generation, Some(4));
}

#[test]
fn a_new_database_is_generation_one_without_status() {
    let mut file = live();
    file.metadata.uid = None;
    let applied = as_applied(file, None);
    assert_eq!(applied.metadata.uid.as_deref(), Some(OFFLINE_UID));
    assert_eq!(applied.metadata.generation, Some(1));
    assert!(applied.status.is_none());
}

fn key(kind: &str, name: &str) -> Key {
    (kind.into(), name.into())
}

#[test]
fn server_noise_is_not_a_change() {
    let before = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "shop-1", "resourceVersion": "1", "uid": "a",
            "creationTimestamp": "2026-01-01T00:00:00Z"},
        "data": {"k": "v"}});
    let after = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "shop-1", "resourceVersion": "2", "uid": "a", "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "atoll", "operation": "Apply"}]},
        "data": {"k": "v"}, "status": {"x": 1}});
    assert_eq!(
        describe(Some(&before), &after, &key("ConfigMap", "shop-1"), 3),
        None
    );
}

#[test]
fn a_changed_field_is_a_diff_of_that_line() {
    let before = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "shop-1"}, "data": {"a": "1", "b": "2"}});
    let after = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "shop-1", "managedFields": []}, "data": {"a": "1", "b": "3"}});
    let Some(Change::Update(diff)) =
        describe(Some(&before), &after, &key("ConfigMap", "shop-1"), 1)
    else {
        panic!("a change")
    };
    assert!(
        diff.starts_with("--- live/ConfigMap/shop-1\n+++ after/ConfigMap/shop-1\n"),
        "{diff}"
    );
    let changed: Vec<&str> = diff
        .lines()
        .skip(2)
        .filter(|l| l.starts_with(['-', '+']))
        .collect();
    assert_eq!(changed, [r#"-  b: "2""#, r#"+  b: "3""#], "{diff}");
}

#[test]
fn a_creation_adds_every_line_but_the_noise() {
    let after = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "shop-p1", "uid": "x", "resourceVersion": "9"},
        "spec": {"ports": [{"port": 5678}]}});
    let Some(Change::Create(diff)) = describe(None, &after, &key("Service", "shop-p1"), 3) else {
        panic!("a creation")
    };
    assert!(diff.contains("+  name: shop-p1\n"), "{diff}");
    assert!(diff.contains("port: 5678"), "{diff}");
    assert!(
        !diff.contains("uid") && !diff.contains("resourceVersion"),
        "{diff}"
    );
    assert!(diff.lines().skip(3).all(|l| l.starts_with('+')), "{diff}");
}
