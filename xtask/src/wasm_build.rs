//! Building plugin components for `wasm32-wasip2`.
//!
//! One copy of this logic: `host/build.rs` includes this file with `#[path]`
//! so a plain `cargo build -p atoll` embeds fresh plugins (and builds the test
//! components), `host/e2e/build.rs` includes it to find the test components,
//! and `cargo xtask plugins` uses it to build and report sizes. Only `std`
//! here: build scripts should not pull in dependencies.

#![allow(dead_code)] // each includer uses a different part

use std::path::{Path, PathBuf};
use std::process::Command;

/// The built-in plugins: (plugin name, cargo package).
pub const BUILTIN: &[(&str, &str)] = &[
    ("raft", "atoll-plugin-raft"),
    ("cache", "atoll-plugin-cache"),
    ("redis", "atoll-plugin-redis"),
    ("primary-backup", "atoll-plugin-primary-backup"),
    ("log", "atoll-plugin-log"),
];

/// Test-only components, never embedded: (package, environment variable the
/// tests of `atoll` and `atoll-e2e` find the component's path in). Built in
/// their own cargo invocation, so features they enable on a plugin (raft's
/// `library`) do not change the built-in plugin.
pub const TEST_COMPONENTS: &[(&str, &str)] = &[
    ("atoll-test-hostile", "ATOLL_TEST_HOSTILE_WASM"),
    ("atoll-test-raft-labelled", "ATOLL_TEST_RAFT_LABELLED_WASM"),
    ("atoll-test-other-world", "ATOLL_TEST_OTHER_WORLD_WASM"),
    ("atoll-test-v0-1", "ATOLL_TEST_V0_1_WASM"),
    ("atoll-test-v0-2", "ATOLL_TEST_V0_2_WASM"),
    ("atoll-test-bomb", "ATOLL_TEST_BOMB_WASM"),
];

/// The size limit a plugin must fit: a ConfigMap's 1 MiB.
pub const SIZE_LIMIT: u64 = 1024 * 1024;

/// Build the built-in plugins' `packages` with the size-optimised `plugin`
/// profile and return the path of each component, in order.
pub fn build(workspace: &Path, packages: &[&str]) -> Result<Vec<PathBuf>, String> {
    build_in(workspace, "wasm", packages)
}

/// Build the [`TEST_COMPONENTS`] and return their paths, in order. They get
/// their own target directory: a test component that depends on a plugin as
/// a library would otherwise overwrite that plugin's component.
pub fn build_test_components(workspace: &Path) -> Result<Vec<PathBuf>, String> {
    let packages: Vec<&str> = TEST_COMPONENTS.iter().map(|(p, _)| *p).collect();
    build_in(workspace, "wasm-test", &packages)
}

/// For a build script: rerun when any input of the components changes.
pub fn rerun_if_inputs_change(workspace: &Path) {
    // Cargo.toml: the `plugin` profile lives there.
    for input in [
        "Cargo.toml",
        "plugins",
        "guest-sdk",
        "wit",
        "host/test-plugins",
        "host/wit-0.1",
        "host/wit-0.2",
        "xtask/src/wasm_build.rs",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
}

/// For a build script: build the [`TEST_COMPONENTS`] and hand each path to
/// the crate's tests in its variable (`ATOLL_TEST_HOSTILE_WASM`, ...).
///
/// # Panics
/// When a component does not build (the build script fails with why).
pub fn export_test_components(workspace: &Path) {
    let paths = build_test_components(workspace).unwrap_or_else(|e| panic!("{e}"));
    for ((_, var), path) in TEST_COMPONENTS.iter().zip(&paths) {
        println!("cargo:rustc-env={var}={}", path.display());
    }
}

/// Uses its own target directory `<target>/<dir>`: the outer cargo (when
/// called from a build script) holds the lock on the main one.
fn build_in(workspace: &Path, dir: &str, packages: &[&str]) -> Result<Vec<PathBuf>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(target) => PathBuf::from(target).join(dir),
        None => workspace.join("target").join(dir),
    };
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--profile", "plugin", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(&target_dir);
    for p in packages {
        cmd.args(["--package", p]);
    }
    // Flags meant for the host build (coverage, sanitizers, -D warnings via
    // RUSTFLAGS in CI) must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo to build plugins: {e}"))?;
    if !status.success() {
        return Err(
            "building the plugins for wasm32-wasip2 failed (see above). If the target is missing, run `rustup target add wasm32-wasip2`."
                .to_string(),
        );
    }
    Ok(packages
        .iter()
        .map(|p| {
            target_dir
                .join("wasm32-wasip2/plugin")
                .join(format!("{}.wasm", p.replace('-', "_")))
        })
        .collect())
}
