//! Render raft with 32 partitions through the WebAssembly component (a fresh
//! instance per call) and through the same plugin code compiled natively.
//!
//! `cargo bench -p atoll --features native-plugins --bench render`
//!
//! Criterion prints each figure; the closing summary measures both paths
//! interleaved in one run and prints the ratio, plus the split of the wasm
//! call into instantiation, the call itself and JSON decoding.
//!
//! Then hot reload's two tiers for raft: each compiler's cold compile time,
//! and a render on baseline code against optimized code.
//!
//! Then the cache plugin in three languages: the built-in (Rust), the Python
//! port (`$ATOLL_PYTHON_CACHE_WASM`, else `target/python/cache.wasm`; build
//! it with `scripts/python-sdk.sh build guest-sdk/python/examples/cache
//! target/python/cache.wasm`) and the TypeScript port
//! (`guest-sdk/typescript/dist/cache.wasm`; `npm run build:cache` there):
//! cold compile time, time and peak linear memory per render, and ratios to
//! Rust, interleaved in one run. A port that is not built is named with the
//! command that builds it.

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll::contract::{PluginDatabase, Rendered};
use atoll::plugin::native::{self, Raft};
use atoll::plugin::{Limits, LoadedPlugin, Registry, Runtime};
use criterion::Criterion;
use serde_json::Value;

fn database() -> PluginDatabase {
    PluginDatabase {
        name: "orders".into(),
        namespace: "bench".into(),
        uid: "00000000-0000-0000-0000-000000000001".into(),
        generation: 1,
        labels: vec![],
        partitions: 32,
        config: r#"{"clusters":4,"replicas":3,"volumeClaimTemplate":{"size":"1Gi"}}"#.into(),
        cluster_domain: "cluster.local".into(),
    }
}

fn decode(r: &Rendered) -> Vec<Value> {
    r.objects
        .iter()
        .map(|o| serde_json::from_str(o).unwrap())
        .collect()
}

fn wasm(plugin: &LoadedPlugin, db: &PluginDatabase) -> Vec<Value> {
    decode(&plugin.render(db).unwrap().unwrap())
}

fn native(db: &PluginDatabase) -> Vec<Value> {
    decode(&native::render::<Raft>(db).unwrap())
}

/// Minor page faults of this process so far (`/proc/self/stat`, field 10):
/// a fresh instance's linear memory faults its pages in on every call.
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    fields.get(7).and_then(|f| f.parse().ok()).unwrap_or(0)
}

fn per_call(iterations: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

fn main() {
    let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
    let registry = Registry::with_builtins(runtime).unwrap();
    let raft = registry.get("raft").unwrap();
    let db = database();
    assert_eq!(
        wasm(&raft, &db),
        native(&db),
        "both paths render the same objects"
    );

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("render_raft_32_partitions");
    group.bench_function("wasm_fresh_instance", |b| {
        b.iter(|| wasm(&raft, black_box(&db)))
    });
    group.bench_function("native", |b| b.iter(|| native(black_box(&db))));
    group.bench_function("wasm_instantiate_only", |b| {
        b.iter(|| raft.instantiate_only().unwrap())
    });
    let rendered = raft.render(&db).unwrap().unwrap();
    group.bench_function("json_decode_only", |b| {
        b.iter(|| decode(black_box(&rendered)))
    });
    group.finish();
    c.final_summary();

    // Interleaved rounds in one run, so machine noise hits both paths alike;
    // the ratio is the median of the rounds' ratios, so a burst of load in
    // one round does not decide it.
    let iterations = if std::env::args().any(|a| a == "--test") {
        3
    } else {
        200
    };
    const ROUNDS: u32 = 11;
    let (mut w, mut n, mut inst, mut dec) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let mut ratios = Vec::new();
    for _ in 0..ROUNDS {
        let round_w = per_call(iterations, || drop(black_box(wasm(&raft, &db))));
        let round_n = per_call(iterations, || drop(black_box(native(&db))));
        ratios.push(round_w.as_secs_f64() / round_n.as_secs_f64());
        (w, n) = (w + round_w, n + round_n);
        inst += per_call(iterations, || raft.instantiate_only().unwrap());
        dec += per_call(iterations, || drop(black_box(decode(&rendered))));
    }
    let (w, n, inst, dec) = (w / ROUNDS, n / ROUNDS, inst / ROUNDS, dec / ROUNDS);
    ratios.sort_by(f64::total_cmp);
    let (low, median, high) = (
        ratios[0],
        ratios[ratios.len() / 2],
        ratios[ratios.len() - 1],
    );
    let faults = |f: &mut dyn FnMut()| {
        let before = minor_faults();
        for _ in 0..iterations {
            f();
        }
        (minor_faults() - before) / u64::from(iterations)
    };
    let wasm_faults = faults(&mut || drop(black_box(wasm(&raft, &db))));
    let native_faults = faults(&mut || drop(black_box(native(&db))));
    println!(
        "\nraft, 32 partitions, {} objects per render:",
        rendered.objects.len()
    );
    println!("  wasm, fresh instance per call: {w:>10.1?} per call");
    println!("    instantiation:               {inst:>10.1?}");
    println!(
        "    render call (guest work):    {:>10.1?}",
        w.saturating_sub(inst + dec)
    );
    println!("    JSON decoding (host):        {dec:>10.1?}");
    println!("  native (same plugin code):     {n:>10.1?} per call");
    println!(
        "  ratio wasm / native:           {median:>10.2} (median of {ROUNDS} rounds; {low:.2} to {high:.2})"
    );
    println!("  minor page faults per call:    {wasm_faults:>6} wasm, {native_faults} native");
    println!(
        "  peak linear memory per call:   {:>8.1} MiB wasm",
        raft.peak_memory() as f64 / f64::from(1 << 20)
    );

    tiers(&db, &raft, if iterations == 3 { 3 } else { 100 });
    cache_in_three_languages(&registry, if iterations == 3 { 1 } else { 20 });
}

/// A hot reload starts on baseline code (`host/src/plugin/tier.rs`): raft's
/// cold compile by each compiler (fresh runtimes, no disk cache), then
/// renders on the baseline code while the tier-up compiles beside them,
/// alternating with renders on optimized code; medians and their ratio.
fn tiers(db: &PluginDatabase, optimized: &LoadedPlugin, calls: usize) {
    let bytes = atoll::plugin::builtin::bytes("raft").unwrap();
    let cold = |tiered: bool| {
        let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
        let start = Instant::now();
        let plugin = if tiered {
            runtime.load_tiered("raft", bytes)
        } else {
            runtime.load("raft", bytes)
        };
        (plugin.unwrap(), start.elapsed())
    };
    let (_, cranelift) = cold(false);
    let (baseline, winch) = cold(true);
    let tiered_at = Instant::now();
    assert!(!baseline.is_optimized(), "Winch compiled it (x86_64)");
    assert_eq!(
        wasm(&baseline, db),
        wasm(optimized, db),
        "both tiers render alike"
    );
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    // Alternating, so that the tier-up compiling beside them and any other
    // load weigh on both alike.
    let timed = |plugin: &LoadedPlugin| {
        let start = Instant::now();
        black_box(wasm(plugin, db));
        start.elapsed()
    };
    let (mut on_baseline, mut on_optimized) = (Vec::new(), Vec::new());
    while !baseline.is_optimized() && on_baseline.len() < calls {
        on_baseline.push(timed(&baseline));
        on_optimized.push(timed(optimized));
    }
    while !baseline.is_optimized() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let tier_up = tiered_at.elapsed();
    let (slow, fast) = (median(on_baseline.clone()), median(on_optimized));
    println!(
        "
raft, hot reload tiers (cold compile, {} bytes):",
        bytes.len()
    );
    println!("  Cranelift (optimized) compile:  {cranelift:>10.1?}");
    println!(
        "  Winch (baseline) compile:       {winch:>10.1?}  ratio to Cranelift {:.2}",
        winch.as_secs_f64() / cranelift.as_secs_f64()
    );
    println!("  tier-up landed after:           {tier_up:>10.1?}  (one low-priority thread)");
    println!(
        "  render, 32 partitions:          {slow:>10.1?} baseline, {fast:.1?} optimized; ratio {:.2} (medians of {} calls)",
        slow.as_secs_f64() / fast.as_secs_f64(),
        on_baseline.len()
    );
}

/// The cache example's Database (4 partitions, 2 per node).
fn cache_database() -> PluginDatabase {
    PluginDatabase {
        name: "sessions".into(),
        namespace: "bench".into(),
        uid: "00000000-0000-0000-0000-000000000002".into(),
        generation: 1,
        labels: vec![],
        partitions: 4,
        config: r#"{"partitionsPerNode":2,"image":"atomix/cache-storage-node:v0.5.1","resources":{"limits":{"memory":"256Mi"}}}"#.into(),
        cluster_domain: "cluster.local".into(),
    }
}

fn cache_in_three_languages(registry: &Registry, iterations: u32) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let ports = [
        (
            "Python",
            std::env::var_os("ATOLL_PYTHON_CACHE_WASM")
                .map_or_else(|| target.join("python/cache.wasm"), PathBuf::from),
            "scripts/python-sdk.sh build guest-sdk/python/examples/cache target/python/cache.wasm",
        ),
        (
            "TypeScript",
            root.join("guest-sdk/typescript/dist/cache.wasm"),
            "(cd guest-sdk/typescript && npm ci && npm run build:cache)",
        ),
    ];
    let db = cache_database();
    let rust = registry.get("cache").unwrap();
    let expected = wasm(&rust, &db);
    let mut loaded = vec![("Rust", rust, Duration::ZERO)];
    for (language, path, build) in ports {
        let Ok(bytes) = std::fs::read(&path) else {
            println!(
                "\n{language} cache port not built ({}): {build}",
                path.display()
            );
            continue;
        };
        // A runtime of its own without a disk cache: a cold compile.
        let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
        let start = Instant::now();
        let plugin = Arc::new(runtime.load(language, &bytes).unwrap());
        let compile = start.elapsed();
        assert_eq!(
            wasm(&plugin, &db),
            expected,
            "the {language} port renders the Rust plugin's objects"
        );
        loaded.push((language, plugin, compile));
    }
    // Interleaved rounds, as above.
    let mut times = vec![Duration::ZERO; loaded.len()];
    for _ in 0..5 {
        for (i, (_, plugin, _)) in loaded.iter().enumerate() {
            times[i] += per_call(iterations, || drop(black_box(wasm(plugin, &db))));
        }
    }
    let rust_time = times[0] / 5;
    println!(
        "\ncache plugin, the example Database ({} objects per render):",
        expected.len()
    );
    println!("  language     per render   ratio to Rust   peak memory per call   cold compile");
    for ((language, plugin, compile), time) in loaded.iter().zip(&times) {
        let time = *time / 5;
        println!(
            "  {language:<10} {time:>12.1?} {:>15.2} {:>18.1} MiB {:>14}",
            time.as_secs_f64() / rust_time.as_secs_f64(),
            plugin.peak_memory() as f64 / f64::from(1 << 20),
            if *language == "Rust" {
                "(built in)".to_string()
            } else {
                format!("{compile:.1?}")
            },
        );
    }
}
