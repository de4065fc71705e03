//! Builds the test components (`host/test-plugins/*`) as `host/build.rs`
//! does and hands their paths to the tests in the same variables
//! (`ATOLL_TEST_HOSTILE_WASM`, ...). Already built by the atoll package's
//! build script, so this normally finds them up to date.

#[path = "../../xtask/src/wasm_build.rs"]
mod wasm_build;

use std::path::Path;

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("host/e2e is two levels inside the workspace");
    wasm_build::rerun_if_inputs_change(workspace);
    wasm_build::export_test_components(workspace);
}
