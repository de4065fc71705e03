//! The on-disk cache of compiled plugins: a restart loads from it without
//! compiling, and a corrupt or foreign file falls back to compiling.

use std::sync::Arc;
use std::time::Instant;

use atoll::contract::Digest;
use atoll::plugin::{Limits, Runtime, SealKey};

/// A runtime sealing with the key in `<dir>.key` (written once per
/// directory), as replicas sharing `--plugin-cache-key-file` do.
fn runtime(dir: &std::path::Path) -> Arc<Runtime> {
    let key_file = dir.with_extension("key");
    if !key_file.exists() {
        std::fs::write(&key_file, [42u8; 32]).unwrap();
    }
    runtime_with(
        dir,
        Some(SealKey::from_file(&key_file).unwrap()),
        Limits::default(),
    )
}

fn runtime_with(dir: &std::path::Path, key: Option<SealKey>, limits: Limits) -> Arc<Runtime> {
    let mut runtime = Runtime::new(limits).unwrap();
    if let Some(key) = key {
        runtime = runtime.with_seal_key(key);
    }
    Arc::new(runtime.with_disk_cache(dir))
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

#[test]
fn files_sealed_with_another_key_are_refused_and_recompiled() {
    let dir = tempdir("foreign-key");
    load_builtins(&runtime(&dir));
    let before = cache_files(&dir);
    // Without a key file, a process draws its own key: files of an earlier
    // process (or forged by anyone who can write the directory) fail the
    // seal and are never deserialized.
    let stranger = runtime_with(&dir, None, Limits::default());
    load_builtins(&stranger);
    assert_eq!(
        stranger.compilations(),
        atoll::plugin::builtin::BUILTIN.len(),
        "every file was refused"
    );
    // The stranger rewrote the files under its key, so the first key's
    // holder refuses them in turn.
    let again = runtime(&dir);
    load_builtins(&again);
    assert_eq!(again.compilations(), atoll::plugin::builtin::BUILTIN.len());
    // A genuine body under a seal of zeros is refused too.
    let files = cache_files(&dir);
    assert_eq!(files.len(), before.len());
    let mut forged = vec![0u8; 32];
    forged.extend_from_slice(&std::fs::read(&files[0]).unwrap()[32..]);
    std::fs::write(&files[0], &forged).unwrap();
    let third = runtime(&dir);
    load_builtins(&third);
    assert_eq!(
        third.compilations(),
        1,
        "only the forged file was recompiled"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_disk_cache_is_bounded_in_bytes() {
    let dir = tempdir("bounded");
    load_builtins(&runtime(&dir));
    let sizes: Vec<u64> = cache_files(&dir)
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .collect();
    let max = sizes.iter().max().unwrap() * 2;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bounded = runtime_with(
        &dir,
        None,
        Limits {
            disk_cache_bytes: max,
            ..Limits::default()
        },
    );
    load_builtins(&bounded);
    let kept: u64 = cache_files(&dir)
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(kept <= max, "{kept} bytes kept, bound {max}");
    assert!(!cache_files(&dir).is_empty(), "the newest files stay");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("atoll-disk-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
