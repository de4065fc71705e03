//! The on-disk cache of compiled plugins: a restart loads from it without
//! compiling, and a corrupt or foreign file falls back to compiling.

use std::sync::Arc;
use std::time::Instant;

use atoll::contract::Digest;
use atoll::plugin::{Limits, Runtime};

fn runtime(dir: &std::path::Path) -> Arc<Runtime> {
    Arc::new(
        Runtime::new(Limits::default())
            .unwrap()
            .with_disk_cache(dir),
    )
}

fn load_builtins(runtime: &Arc<Runtime>) {
    for (name, bytes) in atoll::plugin::builtin::BUILTIN {
        let plugin = runtime.load(name, bytes).unwrap();
        assert_eq!(plugin.metadata().name, *name);
    }
}

fn cache_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn a_restart_with_a_warm_cache_does_not_compile() {
    let dir = tempdir("warm");
    let cold = runtime(&dir);
    let started = Instant::now();
    load_builtins(&cold);
    let cold_time = started.elapsed();
    assert_eq!(cold.compilations(), atoll::plugin::builtin::BUILTIN.len());
    let files = cache_files(&dir);
    assert_eq!(
        files.len(),
        atoll::plugin::builtin::BUILTIN.len(),
        "{files:?}"
    );
    // Files are named by the component's digest.
    let raft = atoll::plugin::builtin::BUILTIN
        .iter()
        .find(|(n, _)| *n == "raft")
        .unwrap();
    let hex = Digest::of(raft.1).to_string().replace("sha256:", "");
    assert!(files.iter().any(|f| f.to_string_lossy().contains(&hex)));

    // "Restart": a new runtime (new engine) over the same directory.
    let warm = runtime(&dir);
    let started = Instant::now();
    load_builtins(&warm);
    let warm_time = started.elapsed();
    assert_eq!(warm.compilations(), 0, "every plugin came from the cache");
    eprintln!("five built-ins: cold {cold_time:?}, warm {warm_time:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn corrupt_truncated_or_foreign_files_are_recompiled() {
    let dir = tempdir("corrupt");
    load_builtins(&runtime(&dir));
    let files = cache_files(&dir);
    // Corrupt one in the middle, truncate one, and replace one with another
    // plugin's valid cache file (foreign for that name).
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&files[0], bytes).unwrap();
    std::fs::write(&files[1], b"short").unwrap();
    std::fs::copy(&files[3], &files[2]).unwrap();

    let again = runtime(&dir);
    load_builtins(&again);
    assert_eq!(
        again.compilations(),
        3,
        "the three bad files were recompiled"
    );
    // And rewritten: a third start compiles nothing.
    let third = runtime(&dir);
    load_builtins(&third);
    assert_eq!(third.compilations(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("atoll-disk-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
