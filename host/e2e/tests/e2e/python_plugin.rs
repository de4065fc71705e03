//! The Python port of the cache plugin (guest-sdk/python/examples/cache),
//! loaded as a user ships it today — `--plugin-dir`, since its 18 MB
//! component fits no ConfigMap — replaces the built-in cache and reconciles
//! a Database to Ready against the real control plane.
//!
//! The component comes from `$ATOLL_PYTHON_CACHE_WASM` (CI builds it with
//! `scripts/python-sdk.sh build`), else this test builds it with that script.

use std::path::{Path, PathBuf};
use std::process::Command;

use atoll::contract::Digest;
use atoll::operator::PluginConfig;
use atoll::plugin::Source;
use atoll_e2e::{Operator, example, k, wait_ready, workspace};
use atoll_testenv::TestNamespace;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

fn python_cache() -> PathBuf {
    if let Some(path) = std::env::var_os("ATOLL_PYTHON_CACHE_WASM") {
        return PathBuf::from(path);
    }
    let out = target_dir().join("python/cache.wasm");
    let status = Command::new(workspace().join("scripts/python-sdk.sh"))
        .args(["build", "guest-sdk/python/examples/cache"])
        .arg(&out)
        .current_dir(workspace())
        .status()
        .expect("scripts/python-sdk.sh runs");
    assert!(
        status.success(),
        "building the Python cache port failed (python3 >= 3.11 and PyPI, or set ATOLL_PYTHON_CACHE_WASM)"
    );
    out
}

#[tokio::test]
async fn the_python_cache_port_reconciles_a_database_to_ready() {
    let wasm = python_cache();
    let bytes = std::fs::read(&wasm).unwrap();
    let dir = target_dir().join("e2e-python-plugin-dir");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&wasm, dir.join("cache.wasm")).unwrap();
    // As `atoll run --plugin-dir DIR` (compiled components kept on disk).
    let config = PluginConfig {
        dir: Some(dir.clone()),
        cache_dir: Some(target_dir().join("test-plugin-cache")),
        ..PluginConfig::default()
    };
    let renderer = config
        .renderer("cluster.local")
        .expect("the Python component loads");
    let entry = renderer.registry.entry("cache").unwrap();
    assert!(
        matches!(entry.source, Source::File(ref p) if p.starts_with(Path::new(&dir))),
        "the Python port replaces the built-in: {}",
        entry.source
    );

    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "python-plugin").await;
    let op = Operator::start_with(&client, ns.name(), renderer).await;
    k(ns.name(), &["apply", "-f", "-"], Some(&example("cache"))).await;
    let db = wait_ready(&client, ns.name(), "sessions").await;
    let status = db.status.unwrap();
    let plugin = status.plugin.unwrap();
    assert_eq!(plugin.name, "cache");
    assert_eq!(
        plugin.digest,
        Digest::of(&bytes).to_string(),
        "served by the Python component"
    );
    assert_eq!(status.partitions.len(), 4);
    assert!(status.partitions.iter().all(|p| p.ready));
    op.stop().await;
    ns.cleanup().await;
}
