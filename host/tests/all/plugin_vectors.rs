//! `atoll plugin test` and `atoll plugin new` as a plugin author runs them:
//! the shared cache vectors (guest-sdk/vectors/cache) through the built-in
//! Rust cache plugin and its Python port in the sandbox, a failing vector's
//! diff, `--update`, and the scaffolds.
//!
//! The Python component comes from `$ATOLL_PYTHON_CACHE_WASM` (CI builds it
//! with `scripts/python-sdk.sh build`), else this test builds it with that
//! script (python3 >= 3.11 and PyPI access the first time).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("target"))
}

/// Run `atoll args...` with compiled components cached across runs (an
/// 18 MB Python component takes long to compile).
fn atoll(args: &[&str]) -> Output {
    crate::support::atoll()
        .args(args)
        .current_dir(REPO)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn vectors() -> PathBuf {
    Path::new(REPO).join("guest-sdk/vectors/cache")
}

fn case_count() -> usize {
    std::fs::read_dir(vectors())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count()
}

fn read_case(name: &str) -> Value {
    let path = vectors().join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The built-in cache component, as a file.
fn rust_cache() -> PathBuf {
    let (_, bytes) = atoll::plugin::builtin::BUILTIN
        .iter()
        .find(|(name, _)| *name == "cache")
        .unwrap();
    let path = target_dir().join("test-vectors/rust-cache.wasm");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn python_cache() -> PathBuf {
    if let Some(path) = std::env::var_os("ATOLL_PYTHON_CACHE_WASM") {
        return PathBuf::from(path);
    }
    let out = target_dir().join("python/cache.wasm");
    let status = Command::new(Path::new(REPO).join("scripts/python-sdk.sh"))
        .args(["build", "guest-sdk/python/examples/cache"])
        .arg(&out)
        .current_dir(REPO)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "building the Python cache port failed: scripts/python-sdk.sh needs python3 >= 3.11 and PyPI (or set ATOLL_PYTHON_CACHE_WASM)"
    );
    out
}

fn passes_every_vector(component: &Path) {
    let vectors = vectors();
    let out = atoll(&[
        "plugin",
        "test",
        component.to_str().unwrap(),
        "--cases",
        vectors.to_str().unwrap(),
    ]);
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("{} passed, 0 failed", case_count())),
        "{text}"
    );
}

#[test]
fn the_rust_cache_plugin_passes_the_shared_vectors() {
    passes_every_vector(&rust_cache());
}

#[test]
fn the_python_cache_port_passes_the_shared_vectors() {
    passes_every_vector(&python_cache());
}

/// The goldens were recorded from the Rust plugin once; these assertions
/// are written from the cache plugin's documentation, so a wrong recording
/// cannot pass silently.
#[test]
fn the_vectors_say_what_the_cache_plugin_documents() {
    let case = read_case("default-three-partitions");
    let objects = case["render"]["objects"].as_array().unwrap();
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    // Per node: ConfigMap, headless Service, StatefulSet; per partition: a Service.
    assert_eq!(objects.len(), 3 * 3 + 3);
    let sts = find("StatefulSet", "sessions-2");
    assert_eq!(sts["spec"]["replicas"], 1);
    assert_eq!(sts["spec"]["serviceName"], "sessions-2-hs");
    assert!(
        sts["spec"].get("volumeClaimTemplates").is_none(),
        "in memory only"
    );
    let volumes = &sts["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "data" && v["emptyDir"] == serde_json::json!({}))
    );
    assert_eq!(
        find("Service", "sessions-2-hs")["spec"]["clusterIP"],
        "None"
    );
    let cluster: Value = serde_json::from_str(
        find("ConfigMap", "sessions-2")["data"]["cluster.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        cluster["replicas"][0]["host"],
        "sessions-2-0.sessions-2-hs.web.svc.cluster.local"
    );
    assert_eq!(cluster["partitions"], serde_json::json!([{"partition": 2}]));
    for b in case["render"]["partitions"].as_array().unwrap() {
        assert_eq!(b["placement"], "nowhere", "a cache keeps nothing durable");
        assert_eq!(b["port"], 5678);
    }
    let status = &case["status"];
    assert_eq!(
        status[0]["expect"]["readyPartitions"],
        serde_json::json!([])
    );
    assert_eq!(
        status[1]["expect"]["readyPartitions"],
        serde_json::json!([2])
    );
    assert_eq!(status[2]["expect"]["message"], "all 3 nodes ready");

    // 7 partitions at 3 per node: node 3 serves partition 7 alone, and the
    // Service of partition 4 selects node 2.
    let case = read_case("packed-seven-by-three");
    let objects = case["render"]["objects"].as_array().unwrap();
    let p4 = objects
        .iter()
        .find(|o| o["metadata"]["name"] == "sessions-p4")
        .unwrap();
    assert_eq!(p4["spec"]["selector"]["atoll.dev/node"], "2");
    let cm3 = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "sessions-3")
        .unwrap();
    assert!(
        cm3["data"]["cluster.json"]
            .as_str()
            .unwrap()
            .contains("\"partition\": 7")
    );

    // The cluster domain reaches the replicas' host names; resources reach the container.
    let case = read_case("image-pull-policy-and-resources");
    let o = &case["render"]["objects"];
    assert!(
        o[0]["data"]["cluster.json"]
            .as_str()
            .unwrap()
            .contains("orders-1-0.orders-1-hs.shop.svc.corp.example")
    );
    let container = &o[2]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(container["resources"]["limits"]["memory"], "2Gi");

    // Every check at once, each naming its field; nothing renders.
    let case = read_case("invalid-checks");
    let fields: Vec<&str> = case["validate"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.storage.config.partitionsPerNode",
            "spec.storage.config.image",
            "spec.storage.config.resources.requests.memory",
            "spec.storage.config.resources.limits.cpu",
        ]
    );
    assert_eq!(case["render"]["invalid"], case["validate"]);
    let message = case["status"][0]["expect"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("invalid config: spec.storage.config.partitionsPerNode"),
        "{message}"
    );
}

#[test]
fn a_vector_the_plugin_fails_prints_the_object_diff_and_update_rewrites_it() {
    let dir = target_dir().join("test-vectors/tampered");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut case = read_case("more-per-node-than-partitions");
    case["render"]["objects"][2]["spec"]["template"]["spec"]["containers"][0]["image"] =
        "example/other:v9".into();
    case["status"][0]["expect"]["message"] = "all 2 nodes ready".into();
    let path = dir.join("tampered.json");
    std::fs::write(&path, serde_json::to_string_pretty(&case).unwrap()).unwrap();
    let wasm = rust_cache();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "plugin",
            "test",
            wasm.to_str().unwrap(),
            "--cases",
            dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        atoll(&args)
    };

    let out = run(&[]);
    let text = text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("FAILED  tampered"), "{text}");
    assert!(
        text.contains("render object 2 (StatefulSet sessions-1) differs"),
        "{text}"
    );
    // A diff line: the mark, then the pretty-printed JSON line.
    let diff_line = |mark: char, json: &str| {
        text.lines().any(|l| {
            l.trim_start()
                .strip_prefix(mark)
                .is_some_and(|rest| rest.trim() == json)
        })
    };
    assert!(diff_line('-', r#""image": "example/other:v9","#), "{text}");
    assert!(
        diff_line('+', r#""image": "atomix/cache-storage-node:v0.5.1","#),
        "{text}"
    );
    assert!(
        diff_line('-', r#""message": "all 2 nodes ready","#),
        "{text}"
    );
    assert!(text.contains("0 passed, 1 failed"), "{text}");

    let out = run(&["--update"]);
    assert!(out.status.success(), "{}", self::text(&out));
    let out = run(&[]);
    assert!(out.status.success(), "{}", self::text(&out));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        std::fs::read_to_string(vectors().join("more-per-node-than-partitions.json")).unwrap(),
        "--update writes what the committed vector holds"
    );
}

#[test]
fn plugin_new_scaffolds_a_python_plugin_whose_golden_case_passes() {
    let dir = target_dir().join("test-vectors/scaffold-py");
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["plugin", "new", "demo-store", "--lang", "python", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("atoll plugin test"),
        "prints the commands"
    );
    // The build finds componentize-py where scripts/python-sdk.sh puts it.
    let python_sdk = Command::new(Path::new(REPO).join("scripts/python-sdk.sh"))
        .arg("setup")
        .status()
        .unwrap();
    assert!(python_sdk.success());
    let out = atoll(&["plugin", "test", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 passed, 0 failed"), "{}", text(&out));
}

/// The Rust scaffold as its author gets it: its native unit tests pass and
/// `atoll plugin test DIR` builds the component and passes its golden case.
#[test]
fn plugin_new_scaffolds_a_rust_plugin_whose_tests_and_golden_case_pass() {
    let dir = target_dir().join("test-vectors/scaffold-rs");
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["plugin", "new", "demo-rust", "--lang", "rust", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains("cargo test --manifest-path") && printed.contains("atoll plugin test"),
        "prints the commands: {printed}"
    );
    // One target directory for the scaffold's dependencies across runs.
    let scaffold_target = target_dir().join("scaffold-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let unit = Command::new(&cargo)
        .args(["test", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &scaffold_target)
        .output()
        .unwrap();
    assert!(unit.status.success(), "cargo test: {}", text(&unit));
    let out = crate::support::atoll()
        .args(["plugin", "test"])
        .arg(&dir)
        .env("CARGO_TARGET_DIR", &scaffold_target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 passed, 0 failed"), "{}", text(&out));
}

#[test]
fn plugin_new_refuses_a_bad_name_and_an_existing_directory() {
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["plugin", "new", "My_Store", "--lang", "python"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is not a plugin name"),
        "{}",
        text(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["plugin", "new", "store", "--lang", "rust", "--dir", REPO])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("exists"), "{}", text(&out));
}
