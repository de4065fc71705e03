//! Each precedence rule of `spec.pod` and each validation path, on objects
//! and expectations written out by hand.

use serde_json::{Value, json};

use super::{apply, check};
use crate::api::PodOverrides;

fn overrides(value: Value) -> PodOverrides {
    serde_json::from_value(value).expect("a spec.pod")
}

/// A StatefulSet as a plugin might render it: one init container, one
/// container, and a value for every field `spec.pod` touches.
fn statefulset() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db-1", "labels": {"app": "db"}},
        "spec": {
            "selector": {"matchLabels": {"app": "db"},
                "matchExpressions": [{"key": "tier", "operator": "Exists"}]},
            "template": {
                "metadata": {"labels": {"app": "db", "team": "storage"},
                    "annotations": {"note": "plugin"}},
                "spec": {
                    "nodeSelector": {"disk": "ssd", "zone": "a"},
                    "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                    "topologySpreadConstraints": [{"maxSkew": 1,
                        "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}],
                    "affinity": {"podAntiAffinity": {}},
                    "priorityClassName": "plugin-class",
                    "securityContext": {"runAsUser": 1},
                    "initContainers": [{"name": "init", "env": [{"name": "A", "value": "init"}]}],
                    "containers": [{"name": "node",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)"}],
                        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}}]
                }
            }
        }
    })
}

fn applied(pod: Value) -> Value {
    let mut objects = vec![
        statefulset(),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "db-1"}, "data": {"k": "v"}}),
    ];
    apply(&mut objects, &overrides(pod)).expect("applies");
    assert_eq!(
        objects[1]["data"],
        json!({"k": "v"}),
        "only pod templates change"
    );
    objects.swap_remove(0)
}

fn template_spec(sts: &Value) -> &Value {
    &sts["spec"]["template"]["spec"]
}

#[test]
fn env_replaces_by_name_in_place_and_appends_new_ones_in_every_container() {
    let sts = applied(json!({"env": [{"name": "A", "value": "db"}, {"name": "C", "value": "3"}]}));
    let spec = template_spec(&sts);
    assert_eq!(
        spec["containers"][0]["env"],
        json!([{"name": "A", "value": "db"}, {"name": "B", "value": "$(A)"},
            {"name": "C", "value": "3"}])
    );
    assert_eq!(
        spec["initContainers"][0]["env"],
        json!([{"name": "A", "value": "db"}, {"name": "C", "value": "3"}])
    );
}

#[test]
fn node_selector_labels_and_annotations_merge_with_the_database_winning() {
    let sts = applied(json!({
        "nodeSelector": {"zone": "b", "pool": "db"},
        "labels": {"team": "platform", "cost": "ops"},
        "annotations": {"note": "db", "owner": "me"},
    }));
    assert_eq!(
        template_spec(&sts)["nodeSelector"],
        json!({"disk": "ssd", "zone": "b", "pool": "db"})
    );
    let meta = &sts["spec"]["template"]["metadata"];
    assert_eq!(
        meta["labels"],
        json!({"app": "db", "team": "platform", "cost": "ops"})
    );
    assert_eq!(meta["annotations"], json!({"note": "db", "owner": "me"}));
    assert_eq!(
        sts["metadata"]["labels"],
        json!({"app": "db"}),
        "the workload's own labels are left alone"
    );
    assert_eq!(sts["spec"]["selector"]["matchLabels"], json!({"app": "db"}));
}

#[test]
fn tolerations_and_spread_constraints_are_appended_once() {
    let pod = json!({
        "tolerations": [{"key": "dedicated", "operator": "Exists"},
            {"key": "gpu", "operator": "Equal", "value": "no", "effect": "NoSchedule"}],
        "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "host",
            "whenUnsatisfiable": "ScheduleAnyway"}],
    });
    let mut objects = vec![statefulset()];
    apply(&mut objects, &overrides(pod.clone())).unwrap();
    apply(&mut objects, &overrides(pod)).unwrap();
    let spec = template_spec(&objects[0]);
    assert_eq!(
        spec["tolerations"],
        json!([{"key": "dedicated", "operator": "Exists"},
            {"key": "gpu", "operator": "Equal", "value": "no", "effect": "NoSchedule"}])
    );
    assert_eq!(
        spec["topologySpreadConstraints"],
        json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
            {"maxSkew": 2, "topologyKey": "host", "whenUnsatisfiable": "ScheduleAnyway"}])
    );
}

#[test]
fn affinity_priority_class_and_security_context_replace_the_plugins() {
    let sts = applied(json!({
        "affinity": {"nodeAffinity": {}},
        "priorityClassName": "critical",
        "securityContext": {"runAsNonRoot": true},
    }));
    let spec = template_spec(&sts);
    assert_eq!(spec["affinity"], json!({"nodeAffinity": {}}));
    assert_eq!(spec["priorityClassName"], "critical");
    assert_eq!(spec["securityContext"], json!({"runAsNonRoot": true}));
}

#[test]
fn unset_fields_keep_the_plugins_values() {
    let sts = applied(json!({}));
    assert_eq!(sts, statefulset());
}

#[test]
fn resources_default_only_the_resources_a_container_leaves_unset() {
    let sts = applied(json!({"resources": {
        "requests": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }}));
    let spec = template_spec(&sts);
    // cpu has a plugin request, memory a plugin limit: both stay the
    // plugin's entirely (a default limit under the plugin's request would
    // make an invalid pod); ephemeral-storage was unset.
    assert_eq!(
        spec["containers"][0]["resources"],
        json!({"requests": {"cpu": "100m", "ephemeral-storage": "1Gi"},
            "limits": {"memory": "1Gi"}})
    );
    assert_eq!(
        spec["initContainers"][0]["resources"],
        json!({"requests": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "1Gi"},
            "limits": {"cpu": "2", "memory": "2Gi"}})
    );
}

#[test]
fn every_pod_template_gets_the_overrides() {
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "db-proxy"},
        "spec": {"selector": {"matchLabels": {"app": "proxy"}},
            "template": {"spec": {"containers": [{"name": "proxy"}]}}}});
    let mut objects = vec![statefulset(), deployment];
    apply(
        &mut objects,
        &overrides(json!({"nodeSelector": {"pool": "db"}})),
    )
    .unwrap();
    for o in &objects {
        assert_eq!(template_spec(o)["nodeSelector"]["pool"], "db", "{o}");
    }
}

#[test]
fn a_label_the_selector_uses_is_refused() {
    let mut objects = vec![statefulset()];
    let err = apply(
        &mut objects,
        &overrides(json!({"labels": {"app": "other", "tier": "x", "fine": "y"}})),
    )
    .unwrap_err();
    let fields: Vec<&str> = err.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["spec.pod.labels[app]", "spec.pod.labels[tier]"]);
    assert!(
        err[0].message.contains("StatefulSet db-1"),
        "{}",
        err[0].message
    );
    assert!(
        err[0].message.contains("choose another key"),
        "{}",
        err[0].message
    );
    assert_eq!(objects[0], statefulset(), "nothing changed");
}

fn fields(pod: Value) -> Vec<String> {
    check(&overrides(pod))
        .into_iter()
        .map(|v| v.field)
        .collect()
}

#[test]
fn a_valid_spec_pod_has_no_violation() {
    let pod = json!({
        "env": [{"name": "LOG_LEVEL", "value": "debug"}, {"name": "my.var-1", "value": ""}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db",
            "effect": "NoSchedule"}, {"operator": "Exists"}],
        "priorityClassName": "high-priority",
        "labels": {"example.com/team": "storage", "empty": ""},
        "annotations": {"example.com/note": "any text: at all"},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"cpu": "1", "memory": "1Gi"}},
    });
    assert_eq!(fields(pod), Vec::<String>::new());
}

#[test]
fn env_names_are_checked() {
    let pod = json!({"env": [{"name": "OK"}, {"name": "OK"}, {"name": "1BAD"},
        {"name": "has space"}, {"name": ""},
        {"name": "BOTH", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]});
    assert_eq!(
        fields(pod.clone()),
        [
            "spec.pod.env[1].name",
            "spec.pod.env[2].name",
            "spec.pod.env[3].name",
            "spec.pod.env[4].name",
            "spec.pod.env[5]",
        ]
    );
    let v = check(&overrides(pod));
    assert!(v[0].message.contains("set twice"), "{}", v[0].message);
    assert!(
        v[1].message.contains("such as LOG_LEVEL"),
        "{}",
        v[1].message
    );
    assert!(v[4].message.contains("keep one"), "{}", v[4].message);
}

#[test]
fn label_keys_and_values_are_checked_and_atolls_keys_refused() {
    let pod = json!({"labels": {
        "atoll.dev/database": "x",
        "app.kubernetes.io/managed-by": "me",
        "Bad_Prefix/x": "v",
        "ok": "-bad-value",
        "toolong": "a".repeat(64),
        "example.com/": "v",
    }});
    assert_eq!(
        fields(pod),
        [
            "spec.pod.labels[Bad_Prefix/x]",
            "spec.pod.labels[app.kubernetes.io/managed-by]",
            "spec.pod.labels[atoll.dev/database]",
            "spec.pod.labels[example.com/]",
            "spec.pod.labels[ok]",
            "spec.pod.labels[toolong]",
        ]
    );
    let v = check(&overrides(json!({"labels": {"atoll.dev/x": "y"}})));
    assert!(
        v[0].message.contains("atoll's own label"),
        "{}",
        v[0].message
    );
}

#[test]
fn node_selector_is_checked_with_label_syntax_but_may_use_any_key() {
    assert_eq!(
        fields(json!({"nodeSelector": {"atoll.dev/pool": "db", "k": "bad value"}})),
        ["spec.pod.nodeSelector[k]"]
    );
}

#[test]
fn annotation_keys_are_checked_and_atolls_refused() {
    assert_eq!(
        fields(
            json!({"annotations": {"atoll.dev/config-checksum": "x", "no spaces": "v",
            "fine": "any value at all"}})
        ),
        [
            "spec.pod.annotations[atoll.dev/config-checksum]",
            "spec.pod.annotations[no spaces]",
        ]
    );
    assert_eq!(
        fields(json!({"annotations": {"big": "x".repeat(300 * 1024)}})),
        ["spec.pod.annotations"]
    );
}

#[test]
fn tolerations_and_priority_class_are_checked() {
    assert_eq!(
        fields(json!({
            "tolerations": [{"operator": "Exists", "value": "x"}, {"operator": "Maybe"},
                {"effect": "Never"}, {"key": "bad key"}],
            "priorityClassName": "Not_A_Name",
        })),
        [
            "spec.pod.tolerations[0].value",
            "spec.pod.tolerations[1].operator",
            "spec.pod.tolerations[2].effect",
            "spec.pod.tolerations[3].key",
            "spec.pod.priorityClassName",
        ]
    );
}

#[test]
fn resource_quantities_must_parse_and_requests_fit_limits() {
    let pod = json!({"resources": {"requests": {"cpu": "lots", "memory": "2Gi"},
        "limits": {"memory": "1Gi", "ephemeral-storage": "1 Gi"}}});
    assert_eq!(
        fields(pod.clone()),
        [
            "spec.pod.resources.requests[cpu]",
            "spec.pod.resources.limits[ephemeral-storage]",
            "spec.pod.resources.requests[memory]",
        ]
    );
    let v = check(&overrides(pod));
    assert!(
        v[0].message.contains("not a Kubernetes quantity"),
        "{}",
        v[0].message
    );
    assert!(
        v[2].message.contains("must not exceed limits[memory]"),
        "{}",
        v[2].message
    );
}
