//! Property-based fuzzing (proptest) with a fixed budget, stated in
//! docs/reliability.md:
//! - arbitrary Database specs through `validate`/`render` of every built-in
//!   plugin, in the WebAssembly sandbox: a plugin may refuse a spec, but it
//!   must never trap (a Rust guest traps on panic), time out or run out of
//!   memory, and whatever it renders must pass the output policy;
//! - arbitrary plugin output through the output policy: never a panic, and
//!   whatever passes is namespaced, prefixed, labelled and owned.
//!
//! `PROPTEST_CASES` overrides the per-property budget (default below).

use atoll::api::{Database, DeletionPolicy, LABEL_DATABASE, LABEL_MANAGED_BY};
use atoll::contract::{PartitionBinding, Placement, Rendered};
use atoll::policy::{OutputPolicy, Owner};
use atoll::{PluginError, RenderError};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::renderer;

/// Cases per property when `PROPTEST_CASES` is not set.
const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CASES),
        ..ProptestConfig::default()
    }
}

/// Field names the built-in plugins know, plus some they do not.
const FIELDS: &[&str] = &[
    "clusters",
    "replicas",
    "backups",
    "partitionsPerNode",
    "image",
    "imagePullPolicy",
    "volumeClaimTemplate",
    "size",
    "storageClassName",
    "resources",
    "requests",
    "limits",
    "cpu",
    "memory",
    "electionTimeoutMillis",
    "heartbeatIntervalMillis",
    "replication",
    "memberGroupStrategy",
    "config",
    "proxy",
    "storage",
    "unknownField",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u32..10).prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::from)),
        "[a-zA-Z0-9./:-]{0,20}".prop_map(Value::from),
        prop_oneof![
            Just("1Gi"),
            Just("100m"),
            Just("-1"),
            Just("1e309"),
            Just("Always"),
            Just("IfNotPresent"),
            Just("zone"),
            Just("synchronous"),
            Just("")
        ]
        .prop_map(Value::from),
    ]
}

/// JSON biased towards the plugins' config shapes.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(FIELDS), inner, 0..6).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn database(plugin: &'static str) -> impl Strategy<Value = Database> {
    (
        prop_oneof![0u32..=12, 1000u32..=1100, Just(u32::MAX)],
        prop::option::of(json_value()),
        prop::option::of(prop_oneof![
            Just("^0.1"),
            Just("=0.1.0"),
            Just(">=9"),
            Just("not a requirement")
        ]),
    )
        .prop_map(move |(partitions, config, version)| {
            serde_json::from_value(json!({
                "apiVersion": "atoll.dev/v1alpha1",
                "kind": "Database",
                "metadata": {"name": "fuzz", "namespace": "fuzz", "uid": "u-1", "generation": 1},
                "spec": {"partitions": partitions,
                    "storage": {"plugin": plugin, "version": version, "config": config}},
            }))
            .unwrap()
        })
}

/// A render may fail for the spec's sake, never for the plugin's. Returns
/// whether it rendered.
fn check_render(db: &Database) -> Result<bool, TestCaseError> {
    match renderer().render(db) {
        Ok(desired) => {
            prop_assert_eq!(desired.partitions.len() as u32, db.spec.partitions);
            for object in &desired.objects {
                prop_assert_eq!(&object["metadata"]["namespace"], "fuzz");
            }
        }
        Err(RenderError::Plugin(
            e @ (PluginError::Trap { .. }
            | PluginError::Timeout { .. }
            | PluginError::MemoryLimit { .. }),
        )) => {
            return Err(TestCaseError::fail(format!("{e}")));
        }
        Err(e @ RenderError::Policy { .. }) => {
            return Err(TestCaseError::fail(format!("{e}")));
        }
        Err(_) => return Ok(false),
    }
    Ok(true)
}

/// Run the property for `plugin`, and check the fuzzing reached `render`
/// itself often enough to mean something (not only spec rejections).
fn fuzz_plugin(plugin: &'static str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    let rendered = AtomicU32::new(0);
    let cases = AtomicU32::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let result = runner.run(&database(plugin), |db| {
        cases.fetch_add(1, Ordering::Relaxed);
        if check_render(&db)? {
            rendered.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{plugin}: {e}");
    }
    let (rendered, cases) = (rendered.into_inner(), cases.into_inner());
    eprintln!("{plugin}: {cases} specs, {rendered} rendered, the rest refused");
    assert!(
        rendered * 10 >= cases,
        "{plugin}: only {rendered} of {cases} specs rendered; the generator is off"
    );
}

macro_rules! plugin_property {
    ($test:ident, $plugin:literal) => {
        #[test]
        fn $test() {
            fuzz_plugin($plugin);
        }
    };
}

plugin_property!(raft_never_traps_and_renders_within_policy, "raft");
plugin_property!(cache_never_traps_and_renders_within_policy, "cache");
plugin_property!(redis_never_traps_and_renders_within_policy, "redis");
plugin_property!(
    primary_backup_never_traps_and_renders_within_policy,
    "primary-backup"
);
plugin_property!(log_never_traps_and_renders_within_policy, "log");

/// Objects shaped like renders: mostly plausible, sometimes broken.
fn object() -> impl Strategy<Value = String> {
    let kinds = prop::sample::select(vec![
        ("v1", "ConfigMap"),
        ("v1", "Service"),
        ("apps/v1", "StatefulSet"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("v1", "Namespace"),
        ("", ""),
    ]);
    let names = prop_oneof![
        Just("fuzz".to_string()),
        "fuzz-[a-z0-9]{0,8}",
        "[a-z]{0,6}",
        Just("fuzz-p1".to_string())
    ];
    let namespaces = prop::option::of(prop_oneof![Just("fuzz"), Just("kube-system"), Just("")]);
    prop_oneof![
        4 => (kinds, names, namespaces, json_value()).prop_map(|((api, kind), name, ns, extra)| {
            let mut o = json!({"apiVersion": api, "kind": kind,
                "metadata": {"name": name, "labels": extra.clone()}, "spec": extra});
            if let Some(ns) = ns {
                o["metadata"]["namespace"] = ns.into();
            }
            o.to_string()
        }),
        1 => json_value().prop_map(|v| v.to_string()),
        1 => ".{0,40}",
    ]
}

fn bindings() -> impl Strategy<Value = Vec<PartitionBinding>> {
    prop::collection::vec(
        (
            0u32..4,
            prop_oneof![Just("fuzz-p1"), Just("fuzz-p2"), Just("other")],
            0u16..3,
        ),
        0..4,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(partition, service, port)| PartitionBinding {
                partition,
                service: service.to_string(),
                port,
                placement: Placement::Unknown,
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn policy_never_panics_and_what_passes_is_contained(
        objects in prop::collection::vec(object(), 0..6),
        partitions in bindings(),
    ) {
        let owner = Owner {
            name: "fuzz",
            namespace: "fuzz",
            uid: "u-1",
            plugin: "fuzz",
            partitions: 2,
            deletion: DeletionPolicy::Retain,
        };
        let rendered = Rendered { objects, partitions };
        if let Ok(out) = OutputPolicy::default().enforce(&owner, &rendered) {
            for o in &out {
                prop_assert_eq!(&o["metadata"]["namespace"], "fuzz");
                let name = o["metadata"]["name"].as_str().unwrap_or_default();
                prop_assert!(name == "fuzz" || name.starts_with("fuzz-"), "{}", name);
                prop_assert_eq!(&o["metadata"]["labels"][LABEL_MANAGED_BY], "atoll");
                prop_assert_eq!(&o["metadata"]["labels"][LABEL_DATABASE], "fuzz");
                prop_assert_eq!(&o["metadata"]["ownerReferences"][0]["uid"], "u-1");
                let kind = o["kind"].as_str().unwrap_or_default();
                prop_assert!(!matches!(kind, "ClusterRole" | "Namespace"), "{}", kind);
            }
        }
    }
}
