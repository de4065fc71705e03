//! The plugin runtime against a deliberately hostile component (built by
//! `host/build.rs` from `host/test-plugins/hostile`): every misbehaviour comes
//! back as a typed error, and the same runtime keeps rendering good plugins.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use atoll::api::Database;
use atoll::plugin::{Limits, Registry, Runtime, Source};
use atoll::policy::OutputPolicy;
use atoll::render::Renderer;
use atoll::{PluginError, PolicyError, RenderError};
use serde_json::json;

const HOSTILE: &str = env!("ATOLL_TEST_HOSTILE_WASM");
const TIMEOUT: Duration = Duration::from_millis(300);

/// One registry for all tests (compiling six components per test would
/// dominate the run); every test gets its own renderer over it.
fn renderer() -> Renderer {
    static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();
    let registry = REGISTRY.get_or_init(|| {
        let runtime = Arc::new(
            Runtime::new(Limits {
                call_timeout: TIMEOUT,
                ..Limits::default()
            })
            .unwrap(),
        );
        let registry = Registry::with_builtins(runtime).unwrap();
        registry.load_file(HOSTILE.as_ref()).unwrap();
        Arc::new(registry)
    });
    Renderer {
        registry: Arc::clone(registry),
        policy: OutputPolicy::default(),
        cluster_domain: "cluster.local".into(),
    }
}

fn database(plugin: &str, partitions: u32, config: serde_json::Value) -> Database {
    serde_json::from_value(json!({
        "apiVersion": "atoll.dev/v1alpha1",
        "kind": "Database",
        "metadata": {"name": "orders", "namespace": "shop", "uid": "0d1c4a8e-1111-2222-3333-444455556666"},
        "spec": {"partitions": partitions, "storage": {"plugin": plugin, "config": config}},
    }))
    .unwrap()
}

fn hostile(mode: &str) -> Database {
    database("hostile", 2, json!({"mode": mode}))
}

/// After any failure, the same renderer still renders raft correctly.
fn assert_raft_still_renders(r: &Renderer) {
    let desired = r
        .render(&database("raft", 6, json!({"clusters": 3, "replicas": 3})))
        .unwrap();
    assert_eq!(desired.objects.len(), 3 * 4 + 6);
    assert_eq!(desired.partitions.len(), 6);
}

#[test]
fn well_behaved_hostile_mode_renders_and_is_stamped() {
    let r = renderer();
    let d = r.render(&hostile("ok")).unwrap();
    let cm = &d.objects[0];
    assert_eq!(cm["metadata"]["namespace"], "shop");
    assert_eq!(
        cm["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "atoll"
    );
    assert_eq!(cm["metadata"]["labels"]["atoll.dev/plugin"], "hostile");
    assert_eq!(
        cm["metadata"]["ownerReferences"][0]["uid"],
        "0d1c4a8e-1111-2222-3333-444455556666"
    );
}

#[test]
fn infinite_loop_is_stopped_at_the_deadline() {
    let r = renderer();
    let start = Instant::now();
    let err = r.render(&hostile("loop")).unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(err, RenderError::Plugin(PluginError::Timeout { function: "render", limit, .. }) if limit == TIMEOUT),
        "{err}"
    );
    assert!(elapsed < TIMEOUT * 5, "stopped after {elapsed:?}");
    assert!(err.to_string().contains("deadline"), "{err}");
    assert_raft_still_renders(&r);
}

#[test]
fn one_gib_allocation_is_stopped_by_the_memory_cap() {
    let r = renderer();
    let err = r.render(&hostile("alloc")).unwrap_err();
    match &err {
        RenderError::Plugin(PluginError::MemoryLimit {
            limit, requested, ..
        }) => {
            assert_eq!(*limit, 64 << 20);
            assert!(*requested > *limit);
        }
        other => panic!("expected MemoryLimit, got {other}"),
    }
    assert_raft_still_renders(&r);
}

#[test]
fn a_trap_reports_the_panic_message() {
    let r = renderer();
    let err = r.render(&hostile("trap")).unwrap_err();
    assert!(
        matches!(&err, RenderError::Plugin(PluginError::Trap { message, .. }) if message.contains("panics on purpose")),
        "{err}"
    );
    assert_raft_still_renders(&r);
}

#[test]
fn cluster_role_binding_is_not_an_allowed_kind() {
    let r = renderer();
    let err = r.render(&hostile("cluster-role-binding")).unwrap_err();
    assert!(
        matches!(err.policy(), Some(PolicyError::KindNotAllowed { kind, .. }) if kind == "ClusterRoleBinding"),
        "{err}"
    );
    assert_raft_still_renders(&r);
}

#[test]
fn object_in_another_namespace_is_refused() {
    let r = renderer();
    let err = r.render(&hostile("other-namespace")).unwrap_err();
    assert!(
        matches!(err.policy(), Some(PolicyError::WrongNamespace { namespace, expected, .. })
            if namespace == "kube-system" && expected == "shop"),
        "{err}"
    );
    assert_raft_still_renders(&r);
}

#[test]
fn name_without_database_prefix_is_refused() {
    let r = renderer();
    let err = r.render(&hostile("bad-name")).unwrap_err();
    assert!(
        matches!(err.policy(), Some(PolicyError::NamePrefix { name, .. }) if name == "evil"),
        "{err}"
    );
    assert_raft_still_renders(&r);
}

#[test]
fn oversized_output_is_refused() {
    let r = renderer();
    let err = r.render(&hostile("huge")).unwrap_err();
    assert!(
        matches!(err.policy(), Some(PolicyError::TooLarge { bytes, max }) if bytes > max),
        "{err}"
    );
    assert_raft_still_renders(&r);
}

/// Guest stdout is a bounded pipe (64 KiB per call): flooding it fails the
/// guest's write, which std turns into a panic, so the flood ends the call
/// instead of growing host memory.
#[test]
fn flooding_stdout_is_bounded_and_harmless() {
    let r = renderer();
    let start = Instant::now();
    let err = r.render(&hostile("noisy")).unwrap_err();
    assert!(
        matches!(&err, RenderError::Plugin(PluginError::Trap { message, .. }) if message.contains("failed printing to stdout")),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_raft_still_renders(&r);
}

#[test]
fn garbage_and_core_modules_are_not_components() {
    let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
    let err = runtime
        .load("garbage.wasm", b"definitely not wasm")
        .unwrap_err();
    assert!(matches!(err, PluginError::NotAComponent { .. }), "{err}");
    let core_module = b"\0asm\x01\0\0\0";
    let err = runtime.load("core.wasm", core_module).unwrap_err();
    assert!(err.to_string().contains("core WebAssembly module"), "{err}");
}

#[test]
fn each_digest_compiles_once_and_calls_run_in_parallel() {
    let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
    let bytes = std::fs::read(HOSTILE).unwrap();
    let start = Instant::now();
    let first = runtime.load("a", &bytes).unwrap();
    let cold = start.elapsed();
    let start = Instant::now();
    let second = runtime.load("b", &bytes).unwrap();
    let warm = start.elapsed();
    assert_eq!(first.digest(), second.digest());
    assert_eq!(runtime.compiled_components(), 1);
    assert!(
        warm < cold,
        "reuse ({warm:?}) should beat compiling ({cold:?})"
    );

    let registry = Registry::new(runtime);
    registry.insert(first, Source::Builtin);
    let r = Arc::new(Renderer {
        registry: Arc::new(registry),
        policy: OutputPolicy::default(),
        cluster_domain: "cluster.local".into(),
    });
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let r = Arc::clone(&r);
            std::thread::spawn(move || r.render(&hostile("ok")).unwrap().objects.len())
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 3);
    }
}

#[test]
fn unknown_plugin_and_version_mismatch_are_named() {
    let r = renderer();
    let err = r.render(&database("etcd", 1, json!({}))).unwrap_err();
    assert!(
        err.to_string().contains("no storage plugin named \"etcd\""),
        "{err}"
    );
    assert!(
        err.to_string().contains("raft"),
        "lists what is available: {err}"
    );

    let mut db = database("raft", 1, json!({}));
    db.spec.storage.version = Some(">=2".into());
    let err = r.render(&db).unwrap_err();
    assert!(
        matches!(&err, RenderError::VersionMismatch { loaded, .. } if loaded == "0.1.0"),
        "{err}"
    );
}

const V0_1: &str = env!("ATOLL_TEST_V0_1_WASM");
const OTHER_WORLD: &str = env!("ATOLL_TEST_OTHER_WORLD_WASM");

/// A plugin built against `atoll:storage@0.1.0` (before placement existed)
/// still loads, validates, renders and reports status through the adapter;
/// its bindings say placement `unknown` and its Partitions record none.
#[test]
fn a_contract_0_1_plugin_loads_and_renders_with_unknown_placement() {
    use atoll::contract::Placement;
    let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
    let registry = Registry::with_builtins(Arc::clone(&runtime)).unwrap();
    registry.load_file(V0_1.as_ref()).unwrap();
    let r = Renderer {
        registry: Arc::new(registry),
        policy: OutputPolicy::default(),
        cluster_domain: "cluster.local".into(),
    };
    let plugin = r.registry.get("legacy").unwrap();
    assert_eq!(plugin.contract(), "0.1");
    assert_eq!(plugin.metadata().version, "0.1.0");
    assert_eq!(r.registry.get("raft").unwrap().contract(), "0.3");

    let db = database("legacy", 2, json!({}));
    let desired = r.render(&db).unwrap();
    let bound: Vec<(u32, &str, u16)> = desired
        .partitions
        .iter()
        .map(|b| (b.partition, b.service.as_str(), b.port))
        .collect();
    assert_eq!(bound, [(1, "orders-p1", 5678), (2, "orders-p2", 5678)]);
    assert!(
        desired
            .partitions
            .iter()
            .all(|b| matches!(b.placement, Placement::Unknown)),
        "{:?}",
        desired.partitions
    );
    let partitions = r.partition_objects(&db, &desired);
    assert!(partitions.iter().all(|p| p.spec.placement.is_none()));

    let input = atoll::render::plugin_input(&db, "cluster.local");
    let status = plugin.status(&input, &[]).unwrap();
    assert_eq!(status.ready_partitions, [1, 2]);
    assert_eq!(
        status.available_partitions,
        [1, 2],
        "ready counts as available"
    );

    // The 0.1 violations come back as the host's.
    let bad = atoll::render::plugin_input(&database("legacy", 2, json!({"x": 1})), "cluster.local");
    let v = plugin.validate(&bad).unwrap().unwrap_err();
    assert_eq!(v[0].field, "spec.storage.config");
    assert!(v[0].message.contains("must be empty"), "{v:?}");
}

const V0_2: &str = env!("ATOLL_TEST_V0_2_WASM");

/// A plugin built against `atoll:storage@0.2.0` (before availability
/// existed) loads through its adapter: its placements come through as it
/// said them, and its ready partitions are its available ones.
#[test]
fn a_contract_0_2_plugin_keeps_its_placement_and_reports_ready_as_available() {
    use atoll::contract::Placement;
    let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
    let registry = Registry::with_builtins(Arc::clone(&runtime)).unwrap();
    registry.load_file(V0_2.as_ref()).unwrap();
    let r = Renderer {
        registry: Arc::new(registry),
        policy: OutputPolicy::default(),
        cluster_domain: "cluster.local".into(),
    };
    let plugin = r.registry.get("legacy-two").unwrap();
    assert_eq!(plugin.contract(), "0.2");

    let db = database("legacy-two", 3, json!({}));
    let desired = r.render(&db).unwrap();
    for b in &desired.partitions {
        match &b.placement {
            Placement::Workload(w) => {
                assert_eq!(
                    (w.kind.as_str(), w.name.as_str()),
                    ("StatefulSet", "orders-data")
                );
            }
            other => panic!("partition {}: placement {other:?}", b.partition),
        }
    }
    let input = atoll::render::plugin_input(&db, "cluster.local");
    let status = plugin.status(&input, &[]).unwrap();
    assert_eq!(status.ready_partitions, [1, 3]);
    assert_eq!(status.available_partitions, [1, 3]);
    assert_eq!(status.message, "odd partitions ready");

    let bad =
        atoll::render::plugin_input(&database("legacy-two", 1, json!({"x": 1})), "cluster.local");
    let v = plugin.validate(&bad).unwrap().unwrap_err();
    assert_eq!(v[0].field, "spec.storage.config");
}

/// A component of another world is refused naming every version atoll loads.
#[test]
fn a_component_of_another_world_is_refused_naming_both_versions() {
    let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
    let bytes = std::fs::read(OTHER_WORLD).unwrap();
    let err = runtime.load(OTHER_WORLD, &bytes).unwrap_err();
    assert!(matches!(err, PluginError::WrongWorld { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("0.3.x") && message.contains("0.2.x") && message.contains("0.1.x"),
        "{message}"
    );
}

/// A plugin call made from a tokio task that has spent its cooperative
/// budget returns (it used to spin forever waiting for a call slot: the
/// semaphore kept answering Pending and waking itself).
#[test]
fn a_call_from_a_tokio_task_with_its_budget_spent_returns() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let semaphore = tokio::sync::Semaphore::new(1);
            // Each ready poll spends one unit of the task's budget; once
            // spent, polls answer Pending until the task yields.
            let mut spent = false;
            for _ in 0..10_000 {
                if futures::FutureExt::now_or_never(semaphore.acquire()).is_none() {
                    spent = true;
                    break;
                }
            }
            assert!(spent, "the coop budget was never spent");
            let rendered = renderer().render(&database("raft", 1, json!({})));
            let _ = done.send(rendered.map(|d| d.objects.len()));
        });
    });
    let objects = finished
        .recv_timeout(Duration::from_secs(30))
        .expect("the call returns (not a spin on the call slot)")
        .unwrap();
    assert!(objects > 0);
}

/// The largest Database each built-in plugin accepts (1,024 partitions, as
/// many groups as partitions where the plugin has groups) renders within the
/// default per-call limits, with half the memory cap to spare: where the
/// SDK's bump allocator (`guest-sdk/src/bump.rs`), which reuses little
/// memory within a call, would run out first. Its own runtime: the shared
/// one has the hostile tests' short deadline, not the default.
#[test]
fn the_largest_databases_render_within_the_default_limits() {
    let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
    let r = Renderer {
        registry: Arc::new(Registry::with_builtins(runtime).unwrap()),
        policy: OutputPolicy::default(),
        cluster_domain: "cluster.local".into(),
    };
    let largest = [
        (
            "raft",
            json!({"clusters": 1024, "replicas": 9, "volumeClaimTemplate": {"size": "1Gi"}}),
        ),
        ("cache", json!({"partitionsPerNode": 1})),
        ("redis", json!({})),
        ("primary-backup", json!({})),
        ("log", json!({})),
    ];
    for (plugin, config) in largest {
        let started = Instant::now();
        let desired = r
            .render(&database(plugin, 1024, config))
            .unwrap_or_else(|e| panic!("{plugin}: {e}"));
        let elapsed = started.elapsed();
        assert!(
            desired.objects.len() >= 1024,
            "{plugin}: a Service per partition at least"
        );
        let peak = r.registry.get(plugin).unwrap().peak_memory();
        let cap = Limits::default().memory_bytes;
        eprintln!(
            "{plugin}: {} objects, peak {peak} bytes, {elapsed:?} with the host's steps",
            desired.objects.len()
        );
        assert!(
            peak <= cap / 2,
            "{plugin} peaked at {peak} bytes of linear memory (cap {cap})"
        );
    }
}
