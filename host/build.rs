//! Builds the built-in plugins (and the test components) for
//! wasm32-wasip2 and embeds the built-ins in the `atoll` binary, so it works
//! with no plugin files.

#[path = "../xtask/src/wasm_build.rs"]
mod wasm_build;

use std::fmt::Write;
use std::path::Path;

fn main() {
    compile_protos();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest.parent().expect("host/ is inside the workspace");
    wasm_build::rerun_if_inputs_change(workspace);

    let packages: Vec<&str> = wasm_build::BUILTIN.iter().map(|(_, p)| *p).collect();
    let paths = wasm_build::build(workspace, &packages).unwrap_or_else(|e| panic!("{e}"));

    let mut src = String::from(
        "/// Built-in plugins: (name, component bytes).\npub static BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for ((name, _), path) in wasm_build::BUILTIN.iter().zip(&paths) {
        writeln!(
            src,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    src.push_str("];\n");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    std::fs::write(Path::new(&out).join("builtin.rs"), src).expect("writing OUT_DIR/builtin.rs");

    wasm_build::export_test_components(workspace);
}

/// Generates the gRPC messages and services from `host/proto` (into
/// `OUT_DIR/atoll.grpc.rs`) plus the encoded descriptor set that server
/// reflection serves. protox parses the protos in Rust, so no system
/// `protoc` is needed.
fn compile_protos() {
    const PROTOS: &[&str] = &[
        "atomix/database/database.proto",
        "atomix/membership/membership.proto",
        "atomix/primitive/primitive.proto",
        "atoll/v1alpha1/plugin.proto",
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = match protox::compile(PROTOS, [&root]) {
        Ok(fds) => fds,
        Err(e) => panic!("compiling host/proto: {e}"),
    };
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    let descriptor = Path::new(&out).join("atoll_descriptor.bin");
    std::fs::write(&descriptor, prost::Message::encode_to_vec(&fds))
        .expect("writing OUT_DIR/atoll_descriptor.bin");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .include_file("atoll.grpc.rs")
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating gRPC code: {e}"));
}
