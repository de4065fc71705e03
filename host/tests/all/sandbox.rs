//! Containment: hostile components against the sandbox's bounds (memory
//! over all of a store, wasm features, sizes of what plugins return,
//! compilation size and time), each refused with an error naming what was
//! too large and the limit, while the same runtime keeps serving.

use std::sync::Arc;
use std::time::Duration;

use atoll::PluginError;
use atoll::api::Database;
use atoll::plugin::bounds::{self, MESSAGE_BYTES};
use atoll::plugin::{CompileLimits, CompileWorker, Limits, LoadedPlugin, Runtime};
use serde_json::json;

const HOSTILE: &str = env!("ATOLL_TEST_HOSTILE_WASM");
const BOMB: &str = env!("ATOLL_TEST_BOMB_WASM");
const ATOLL: &str = env!("CARGO_BIN_EXE_atoll");

/// The bomb component with its mode marker patched to `mode` (8 bytes).
pub fn bomb(mode: &str) -> Vec<u8> {
    assert_eq!(mode.len(), 8, "modes are 8 bytes: {mode}");
    let mut bytes = std::fs::read(BOMB).unwrap();
    let marker = b"ATOLL-BOMB-MODE:";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the bomb component holds its mode marker")
        + marker.len();
    bytes[at..at + 8].copy_from_slice(mode.as_bytes());
    bytes
}

/// A component holding one core module with two memories: valid only with
/// multi-memory, which atoll turns off.
pub fn multi_memory_component() -> Vec<u8> {
    // Core module: magic, version, memory section (id 5) of two memories of
    // one page each.
    let module: &[u8] = &[0, b'a', b's', b'm', 1, 0, 0, 0, 5, 5, 2, 0, 1, 0, 1];
    // Component: magic, version 0x0d layer 1, core module section (id 1).
    let mut component = vec![0, b'a', b's', b'm', 0x0d, 0, 1, 0, 1, module.len() as u8];
    component.extend_from_slice(module);
    component
}

fn runtime(limits: Limits) -> Arc<Runtime> {
    Arc::new(Runtime::new(limits).unwrap())
}

fn db(name: &str, config: serde_json::Value) -> atoll::contract::PluginDatabase {
    let db: Database = serde_json::from_value(json!({
        "apiVersion": "atoll.dev/v1alpha1",
        "kind": "Database",
        "metadata": {"name": name, "namespace": "shop", "uid": "0d1c4a8e-1111-2222-3333-444455556666"},
        "spec": {"partitions": 2, "storage": {"plugin": "p", "config": config}},
    }))
    .unwrap();
    atoll::render::plugin_input(&db, "cluster.local")
}

fn load(runtime: &Arc<Runtime>, origin: &str, bytes: &[u8]) -> Result<LoadedPlugin, PluginError> {
    runtime.load(origin, bytes)
}

#[test]
fn a_multi_memory_component_is_refused_at_compile() {
    let err = load(
        &runtime(Limits::default()),
        "multi",
        &multi_memory_component(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, PluginError::NotAComponent { reason, .. } if reason.contains("multiple memories")),
        "{err}"
    );
}

#[test]
fn memory_touched_under_the_cap_is_fine_and_over_it_is_stopped() {
    let rt = runtime(Limits::default());
    let hostile = load(&rt, "hostile", &std::fs::read(HOSTILE).unwrap()).unwrap();
    let under = hostile.render(&db("orders", json!({"mode": "touch", "mib": 40})));
    assert!(matches!(under, Ok(Ok(_))), "{under:?}");
    let over = hostile
        .render(&db("orders", json!({"mode": "touch", "mib": 70})))
        .unwrap_err();
    assert!(
        matches!(over, PluginError::MemoryLimit { limit, requested, .. } if limit == 64 << 20 && requested > limit),
        "{over}"
    );
}

#[test]
fn metadata_bombs_are_refused_naming_the_field_and_limit() {
    let rt = runtime(Limits::default());
    for (mode, needles) in [
        ("schemadp", ["nests 10000 levels deep", "at most 64"]),
        (
            "schemabg",
            ["config schema is 1048579 bytes", "at most 262144"],
        ),
        ("descbig_", ["description is 8192 bytes", "at most 4096"]),
    ] {
        let err = load(&rt, mode, &bomb(mode)).unwrap_err();
        assert!(
            matches!(err, PluginError::BadMetadata { .. }),
            "{mode}: {err}"
        );
        let text = err.to_string();
        for needle in needles {
            assert!(text.contains(needle), "{mode}: {needle:?} not in {text}");
        }
    }
    // The same component with its marker left alone loads.
    let ok = load(&rt, "ok", &bomb("ok______")).unwrap();
    assert_eq!(ok.metadata().name, "bomb");
}

#[test]
fn plugin_text_for_status_is_cut_to_a_kibibyte() {
    let rt = runtime(Limits::default());
    let errbig = load(&rt, "errbig", &bomb("errbig__")).unwrap();
    let Err(atoll::contract::PluginRenderError::Failed(message)) =
        errbig.render(&db("orders", json!({}))).unwrap()
    else {
        panic!("errbig__ fails its render");
    };
    assert!(
        message.len() < MESSAGE_BYTES + 64,
        "{} bytes",
        message.len()
    );
    assert!(
        message.contains("more bytes in atoll's log"),
        "{message:.80}"
    );
    let violations = errbig
        .validate(&db("orders", json!({})))
        .unwrap()
        .unwrap_err();
    assert_eq!(
        violations.len(),
        bounds::VIOLATIONS + 1,
        "32 kept and one saying how many more"
    );
    assert!(violations.last().unwrap().message.contains("968 more"));
    assert!(
        violations
            .iter()
            .all(|v| v.message.len() < MESSAGE_BYTES + 64)
    );

    let statbig = load(&rt, "statbig", &bomb("statbig_")).unwrap();
    let report = statbig.status(&db("orders", json!({})), &[]).unwrap();
    assert!(
        report.message.len() < MESSAGE_BYTES + 64,
        "{}",
        report.message.len()
    );
}

#[test]
fn oversized_renders_are_refused_before_parsing() {
    let rt = runtime(Limits::default());
    for (mode, needle) in [("deep____", "100 levels deep"), ("values__", "JSON values")] {
        let plugin = load(&rt, mode, &bomb(mode)).unwrap();
        let err = plugin.render(&db("orders", json!({}))).unwrap_err();
        assert!(
            matches!(&err, PluginError::Oversized { function: "render", reason, .. } if reason.contains(needle)),
            "{mode}: {err}"
        );
    }
}

/// Collects what tracing writes on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn log_bytes_per_call_are_bounded() {
    let rt = runtime(Limits::default());
    let plugin = load(&rt, "logbig", &bomb("logbig__")).unwrap();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        plugin.render(&db("orders", json!({}))).unwrap().unwrap();
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines = text.lines().filter(|l| l.contains(" llll")).count();
    // 2,000 lines of 1 KiB were sent; 64 KiB (63 whole lines and a cut one) pass.
    assert!((60..=70).contains(&lines), "{lines} plugin lines logged");
    assert!(
        text.len() < 2 * bounds::LOG_BYTES_PER_CALL,
        "{} bytes logged",
        text.len()
    );
    assert!(text.contains("were dropped or cut"), "the drop is reported");
}

#[test]
fn components_over_the_size_limit_are_refused_before_compiling() {
    let rt = runtime(Limits {
        compile: CompileLimits {
            max_component_bytes: 64 << 10,
            ..CompileLimits::default()
        },
        ..Limits::default()
    });
    let bytes = std::fs::read(HOSTILE).unwrap();
    let err = load(&rt, "hostile", &bytes).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("it is {} bytes", bytes.len())) && text.contains("over 65536 bytes"),
        "{text}"
    );
    assert_eq!(rt.compilations(), 0);
}

#[test]
fn a_compile_over_its_deadline_is_given_up() {
    let rt = runtime(Limits {
        compile: CompileLimits {
            timeout: Duration::from_millis(1),
            ..CompileLimits::default()
        },
        ..Limits::default()
    });
    let err = load(&rt, "hostile", &std::fs::read(HOSTILE).unwrap()).unwrap_err();
    assert!(err.to_string().contains("given up"), "{err}");
}

#[test]
fn the_compiler_process_compiles_and_is_bounded_in_time_and_memory() {
    let process = |memory_bytes: u64, timeout: Duration| {
        runtime(Limits {
            compile: CompileLimits {
                timeout,
                worker: CompileWorker::Process {
                    exe: ATOLL.into(),
                    memory_bytes,
                },
                ..CompileLimits::default()
            },
            ..Limits::default()
        })
    };
    let bytes = std::fs::read(HOSTILE).unwrap();
    let rt = process(2 << 30, Duration::from_secs(300));
    let hostile = load(&rt, "hostile", &bytes).unwrap();
    assert_eq!(rt.compilations(), 1);
    assert!(matches!(
        hostile.render(&db("orders", json!({}))),
        Ok(Ok(_))
    ));

    let err = load(
        &process(16 << 20, Duration::from_secs(300)),
        "hostile",
        &bytes,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("hostile is not a WebAssembly component"),
        "{text}"
    );
    assert!(
        text.contains("16 MiB") || text.contains("memory") || text.contains("allocat"),
        "the refusal says memory ran out: {text}"
    );

    let started = std::time::Instant::now();
    let err = load(
        &process(2 << 30, Duration::from_millis(50)),
        "hostile",
        &bytes,
    )
    .unwrap_err();
    assert!(err.to_string().contains("was killed"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
}
