//! Builds the test components (`host/test-plugins/*`) as `host/build.rs`
//! does and hands their paths to the tests in the same variables
//! (`ATOLL_TEST_HOSTILE_WASM`, ...). Already built by the atoll package's
//! build script, so this normally finds them up to date.

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used)]

#[path = "../../xtask/src/wasm_build.rs"]
mod wasm_build;

use std::path::Path;

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("host/e2e is two levels inside the workspace");
    for dir in [
        "Cargo.toml",
        "plugins",
        "guest-sdk",
        "wit",
        "host/test-plugins",
        "host/wit-0.1",
        "xtask/src/wasm_build.rs",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let paths = wasm_build::build_test_components(workspace).unwrap_or_else(|e| panic!("{e}"));
    for ((_, var), path) in wasm_build::TEST_COMPONENTS.iter().zip(&paths) {
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
