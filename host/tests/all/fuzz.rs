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

/// One setting of a generated pod: mostly what a restricted plugin renders,
/// now and then one that Pod Security `baseline` refuses.
fn rarely<T: std::fmt::Debug + Clone + 'static>(usual: T, unusual: T) -> impl Strategy<Value = T> {
    prop_oneof![19 => Just(usual), 1 => Just(unusual)]
}

/// A pod spec with each security-relevant field drawn from [`rarely`].
fn pod_spec() -> impl Strategy<Value = Value> {
    (
        rarely(Value::Null, json!(true)),
        rarely(Value::Null, json!(true)),
        rarely(
            Value::Null,
            json!([{"name": "root", "hostPath": {"path": "/"}}]),
        ),
        prop_oneof![
            18 => Just(Value::Null),
            1 => Just(json!("default")),
            1 => Just(json!("cluster-admin-sa")),
        ],
        prop_oneof![
            18 => Just(Value::Null),
            1 => Just(json!(["CHOWN"])),
            1 => Just(json!(["SYS_ADMIN"])),
        ],
        rarely(json!("RuntimeDefault"), json!("Unconfined")),
        rarely(Value::Null, json!(8080)),
    )
        .prop_map(
            |(host_network, privileged, volumes, account, add, seccomp, host_port)| {
                json!({
                    "hostNetwork": host_network,
                    "serviceAccountName": account,
                    "volumes": volumes,
                    "securityContext": {"seccompProfile": {"type": seccomp}},
                    "containers": [{
                        "name": "node", "image": "x",
                        "ports": [{"containerPort": 5678, "hostPort": host_port}],
                        "securityContext": {"privileged": privileged,
                                            "capabilities": {"add": add}}
                    }]
                })
            },
        )
}

/// Objects shaped like renders: mostly what a plugin renders (allowed kinds,
/// named after the Database, in its namespace or none), sometimes outside
/// the policy in one way or another, sometimes not an object at all.
fn object() -> impl Strategy<Value = String> {
    let kinds = prop_oneof![
        12 => prop::sample::select(vec![
            ("v1", "ConfigMap"),
            ("v1", "Service"),
            ("apps/v1", "StatefulSet"),
            ("apps/v1", "Deployment"),
            ("policy/v1", "PodDisruptionBudget"),
        ]),
        1 => prop::sample::select(vec![
            ("rbac.authorization.k8s.io/v1", "ClusterRole"),
            ("v1", "Namespace"),
            ("v1", "Secret"),
            ("evil.io/v1", "Service"),
            ("", ""),
        ]),
    ];
    let names = prop_oneof![
        18 => "fuzz-[a-z0-9]{1,8}",
        1 => Just("fuzz".to_string()),
        1 => "[a-z]{0,6}",
    ];
    let namespaces = prop_oneof![
        12 => Just(None),
        7 => Just(Some("fuzz")),
        1 => prop::sample::select(vec![Some("kube-system"), Some("")]),
    ];
    let service_types = prop_oneof![
        18 => Just(Value::Null),
        1 => Just(json!("ClusterIP")),
        1 => prop::sample::select(vec![json!("NodePort"), json!("LoadBalancer")]),
    ];
    prop_oneof![
        19 => (kinds, names, namespaces, pod_spec(), service_types, json_value()).prop_map(
            |((api, kind), name, ns, pod, service_type, extra)| {
                let spec = match kind {
                    "StatefulSet" | "Deployment" => json!({"template": {"spec": pod}}),
                    "Service" => json!({"type": service_type}),
                    _ => extra.clone(),
                };
                let mut o = json!({"apiVersion": api, "kind": kind,
                    "metadata": {"name": name, "labels": extra}, "spec": spec});
                if let Some(ns) = ns {
                    o["metadata"]["namespace"] = ns.into();
                }
                o.to_string()
            }
        ),
        1 => prop_oneof![json_value().prop_map(|v| v.to_string()), ".{0,40}".prop_map(String::from)],
    ]
}

/// The partition Services `fuzz-p1`, `fuzz-p2` a render binds, plus more
/// objects, usually bound right.
fn render() -> impl Strategy<Value = Rendered> {
    let service = |p: u32| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("fuzz-p{p}")}})
            .to_string()
    };
    (
        prop::collection::vec(object(), 0..4),
        prop_oneof![9 => Just(None), 1 => bindings().prop_map(Some)],
    )
        .prop_map(move |(mut objects, wrong_bindings)| {
            objects.insert(0, service(1));
            objects.insert(1, service(2));
            let partitions = wrong_bindings.unwrap_or_else(|| {
                (1..=2)
                    .map(|partition| PartitionBinding {
                        partition,
                        service: format!("fuzz-p{partition}"),
                        port: 5678,
                        placement: Placement::Unknown,
                    })
                    .collect()
            });
            Rendered {
                objects,
                partitions,
            }
        })
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

/// Least share of generated renders that must pass the policy, so "what
/// passes is contained" is checked on many renders, not a handful.
const MIN_PASSING: f64 = 0.30;

/// What passes is contained: in the namespace, named after the Database,
/// labelled and owned, of a default kind, and (for the fields the
/// generator varies) within Pod Security `baseline` and atoll's own rules.
fn check_contained(out: &[Value]) -> Result<(), TestCaseError> {
    for o in out {
        prop_assert_eq!(&o["metadata"]["namespace"], "fuzz");
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        prop_assert!(name == "fuzz" || name.starts_with("fuzz-"), "{}", name);
        prop_assert_eq!(&o["metadata"]["labels"][LABEL_MANAGED_BY], "atoll");
        prop_assert_eq!(&o["metadata"]["labels"][LABEL_DATABASE], "fuzz");
        prop_assert_eq!(&o["metadata"]["ownerReferences"][0]["uid"], "u-1");
        let kind = (
            o["apiVersion"].as_str().unwrap_or_default(),
            o["kind"].as_str().unwrap_or_default(),
        );
        prop_assert!(
            matches!(
                kind,
                ("v1", "ConfigMap" | "Service")
                    | ("apps/v1", "StatefulSet" | "Deployment")
                    | ("policy/v1", "PodDisruptionBudget")
            ),
            "{:?}",
            kind
        );
        if kind.1 == "Service" {
            prop_assert!(
                matches!(o["spec"]["type"].as_str(), None | Some("ClusterIP")),
                "{}",
                o
            );
        }
        let pod = &o["spec"]["template"]["spec"];
        if pod.is_object() {
            prop_assert!(pod["hostNetwork"] != true, "{}", pod);
            prop_assert!(
                matches!(pod["serviceAccountName"].as_str(), None | Some("default")),
                "{}",
                pod
            );
            prop_assert!(
                pod["securityContext"]["seccompProfile"]["type"] != "Unconfined",
                "{}",
                pod
            );
            for v in pod["volumes"].as_array().into_iter().flatten() {
                prop_assert!(v["hostPath"].is_null(), "{}", pod);
            }
            for c in pod["containers"].as_array().into_iter().flatten() {
                prop_assert!(c["securityContext"]["privileged"] != true, "{}", pod);
                prop_assert!(
                    !c["securityContext"]["capabilities"]["add"]
                        .to_string()
                        .contains("SYS_ADMIN"),
                    "{}",
                    pod
                );
                for port in c["ports"].as_array().into_iter().flatten() {
                    prop_assert!(port["hostPort"].is_null(), "{}", pod);
                }
            }
        }
    }
    Ok(())
}

#[test]
fn policy_never_panics_and_what_passes_is_contained() {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    let owner = Owner {
        name: "fuzz",
        namespace: "fuzz",
        uid: "u-1",
        plugin: "fuzz",
        partitions: 2,
        deletion: DeletionPolicy::Retain,
    };
    let outcomes: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let result = runner.run(&render(), |rendered| {
        let outcome = match OutputPolicy::default().enforce(&owner, &rendered) {
            Ok(out) => {
                check_contained(&out)?;
                "passed".to_string()
            }
            // The variant's name: what the refusals were about.
            Err(e) => format!("{e:?}")
                .split([' ', '(', '{'])
                .next()
                .unwrap_or_default()
                .to_string(),
        };
        *outcomes.lock().unwrap().entry(outcome).or_default() += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let outcomes = outcomes.into_inner().unwrap();
    let total: u32 = outcomes.values().sum();
    let passed = outcomes.get("passed").copied().unwrap_or(0);
    let share = f64::from(passed) / f64::from(total.max(1));
    eprintln!(
        "output policy: {passed} of {total} renders passed ({:.0}%); outcomes {outcomes:?}",
        share * 100.0
    );
    assert!(
        share >= MIN_PASSING,
        "only {passed} of {total} renders passed the policy (< {:.0}%): the generator is off",
        MIN_PASSING * 100.0
    );
    assert!(
        outcomes.contains_key("PodSecurity"),
        "no render was refused for its pods: the generator is off ({outcomes:?})"
    );
}
