//! The `atoll` command as a user runs it: render the examples, refuse bad input.

use std::process::{Output, Stdio};

use serde_json::Value;

fn atoll(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = crate::support::atoll()
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn render_json(file: &str) -> Vec<Value> {
    let out = atoll(&["render", "-f", file, "-o", "json"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn names(objects: &[Value], kind: &str) -> Vec<String> {
    let mut names: Vec<String> = objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn raft_example_renders_what_the_brief_says() {
    let objects = render_json("examples/raft.yaml");
    assert_eq!(
        names(&objects, "ConfigMap"),
        ["orders-1", "orders-2", "orders-3"]
    );
    assert_eq!(
        names(&objects, "StatefulSet"),
        ["orders-1", "orders-2", "orders-3"]
    );
    assert_eq!(names(&objects, "PodDisruptionBudget").len(), 3);
    let services = names(&objects, "Service");
    for s in [
        "orders-1-hs",
        "orders-2-hs",
        "orders-3-hs",
        "orders-p1",
        "orders-p6",
    ] {
        assert!(services.contains(&s.to_string()), "{s} in {services:?}");
    }
    assert_eq!(services.len(), 9);
    assert_eq!(names(&objects, "Partition").len(), 6);

    for o in &objects {
        let m = &o["metadata"];
        assert_eq!(m["namespace"], "default", "{}", m["name"]);
        assert_eq!(m["labels"]["app.kubernetes.io/managed-by"], "atoll");
        assert_eq!(m["labels"]["atoll.dev/database"], "orders");
        assert_eq!(m["labels"]["atoll.dev/plugin"], "raft");
        assert_eq!(m["ownerReferences"][0]["kind"], "Database");
    }
    for o in objects.iter().filter(|o| o["kind"] == "StatefulSet") {
        assert_eq!(o["spec"]["replicas"], 3);
    }
    let cm2 = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "orders-2")
        .unwrap();
    let cluster: Value =
        serde_json::from_str(cm2["data"]["cluster.json"].as_str().unwrap()).unwrap();
    assert_eq!(
        cluster["partitions"],
        serde_json::json!([{"partition": 1}, {"partition": 4}])
    );
    assert_eq!(
        cluster["replicas"][0]["host"],
        "orders-2-0.orders-2-hs.default.svc.cluster.local"
    );
}

#[test]
fn every_example_renders_as_yaml() {
    for example in ["raft", "cache", "redis", "primary-backup", "log"] {
        let file = format!("examples/{example}.yaml");
        let out = atoll(&["render", "-f", &file], None);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with("---\n"), "{file}");
        assert!(
            text.matches("\n---\n").count() >= 4,
            "{file} has several documents"
        );
    }
}

#[test]
fn invalid_config_exits_non_zero_naming_file_and_field() {
    let bad = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/raft.yaml"
    ))
    .unwrap()
    .replace("      replicas: 3\n", "      replicas: 4\n");
    let out = atoll(&["render", "-f", "-"], Some(&bad));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("<stdin>: Database default/orders"), "{err}");
    assert!(
        err.contains("spec.storage.config.replicas: must be odd"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing is printed for a failed render"
    );

    let unknown = bad.replace(
        "      replicas: 4\n",
        "      replicas: 3\n      colour: blue\n",
    );
    let out = atoll(&["render", "-f", "-"], Some(&unknown));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.storage.config.colour: unknown field `colour`"),
        "{err}"
    );

    let out = atoll(&["render", "-f", "examples/missing.yaml"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read examples/missing.yaml"));
}

#[test]
fn plugin_dir_overrides_a_builtin_and_inspect_shows_the_schema() {
    let dir = std::env::temp_dir().join(format!("atoll-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(env!("ATOLL_TEST_HOSTILE_WASM"), dir.join("hostile.wasm")).unwrap();
    let out = atoll(
        &["plugins", "list", "--plugin-dir", dir.to_str().unwrap()],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for name in ["raft", "cache", "redis", "primary-backup", "log"] {
        assert!(text.contains(&format!("\n{name} ")), "{text}");
    }
    assert!(text.contains("hostile") && text.contains("file:"), "{text}");

    let out = atoll(
        &["plugins", "inspect", env!("ATOLL_TEST_HOSTILE_WASM")],
        None,
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["name"], "hostile");
    assert!(info["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(
        info["configSchema"]["properties"]["mode"].is_object(),
        "{info}"
    );

    std::fs::write(dir.join("broken.wasm"), b"nope").unwrap();
    let out = atoll(
        &["plugins", "list", "--plugin-dir", dir.to_str().unwrap()],
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.wasm is not a WebAssembly component")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn crds_are_generated_for_every_kind() {
    let out = atoll(&["crds"], None);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for name in [
        "databases",
        "partitions",
        "members",
        "primitives",
        "storageplugins",
    ] {
        assert!(text.contains(&format!("name: {name}.atoll.dev")), "{name}");
    }
    assert!(text.contains("x-kubernetes-preserve-unknown-fields: true"));
    assert!(text.contains("- db"), "short name");
}

/// The redis example with `spec.pod` appended (it has no other `pod:` key).
fn redis_with_pod(pod: &str) -> String {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/redis.yaml"
    ))
    .unwrap();
    format!("{}  pod:\n{pod}", example.trim_end().to_string() + "\n")
}

#[test]
fn offline_render_applies_spec_pod_and_config_checksums() {
    let text = redis_with_pod(
        "    env:\n    - {name: LOG_LEVEL, value: debug}\n    nodeSelector: {pool: db}\n",
    );
    let out = atoll(&["render", "-f", "-", "-o", "json"], Some(&text));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let workloads: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "StatefulSet" || o["kind"] == "Deployment")
        .collect();
    assert_eq!(workloads.len(), 2, "redis servers and proxies");
    for w in workloads {
        let template = &w["spec"]["template"];
        assert_eq!(template["spec"]["nodeSelector"]["pool"], "db", "{w}");
        for c in template["spec"]["containers"].as_array().unwrap() {
            let env = c["env"].as_array().unwrap();
            assert!(
                env.contains(&serde_json::json!({"name": "LOG_LEVEL", "value": "debug"})),
                "{c}"
            );
        }
        let checksum = &template["metadata"]["annotations"]["atoll.dev/config-checksum"];
        match w["kind"].as_str() {
            // Mounts ConfigMap <db>-redis.
            Some("StatefulSet") => assert_eq!(checksum.as_str().unwrap().len(), 64, "{w}"),
            // Reads no ConfigMap or Secret.
            _ => assert!(checksum.is_null(), "{w}"),
        }
    }
}

#[test]
fn an_invalid_spec_pod_is_refused_naming_the_field() {
    let text = redis_with_pod(
        "    env:\n    - {name: OK, value: x}\n    - {name: 9LIVES, value: z}\n    labels: {atoll.dev/database: x}\n",
    );
    let out = atoll(&["render", "-f", "-"], Some(&text));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.pod.env[1].name: `9LIVES` is not an environment variable name"),
        "{err}"
    );
    assert!(err.contains("spec.pod.labels[atoll.dev/database]"), "{err}");

    let selector = redis_with_pod("    labels: {app.kubernetes.io/component: x}\n");
    let out = atoll(&["render", "-f", "-"], Some(&selector));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.pod.labels[app.kubernetes.io/component]: `app.kubernetes.io/component` is a label of the pod selector"),
        "{err}"
    );
}

/// Every example Database renders under `--pod-security=restricted`: the
/// built-in plugins' pods meet the Pod Security Standards' `restricted`.
#[test]
fn every_example_renders_under_the_restricted_pod_policy() {
    for example in [
        "examples/raft.yaml",
        "examples/cache.yaml",
        "examples/log.yaml",
        "examples/primary-backup.yaml",
        "examples/redis.yaml",
    ] {
        let out = atoll(
            &[
                "render",
                "-f",
                example,
                "-o",
                "json",
                "--pod-security=restricted",
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let objects: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let pods: Vec<&Value> = objects
            .iter()
            .filter_map(|o| o["spec"]["template"]["spec"].as_object().map(|_| o))
            .collect();
        assert!(!pods.is_empty(), "{example} renders pods");
        for o in pods {
            let spec = &o["spec"]["template"]["spec"];
            assert_eq!(spec["automountServiceAccountToken"], false, "{example}");
            for c in spec["containers"].as_array().unwrap() {
                let sc = &c["securityContext"];
                assert_eq!(
                    sc["allowPrivilegeEscalation"], false,
                    "{example} {}",
                    c["name"]
                );
                assert_eq!(sc["runAsNonRoot"], true, "{example} {}", c["name"]);
                assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{example}");
                assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{example}");
            }
        }
    }
}

/// The pod rules judge what would be applied: a Database's `spec.pod`
/// security context that unconfines seccomp is refused as the Database's
/// fault, naming the field and the flag; `--pod-security=privileged` allows it.
#[test]
fn spec_pod_overrides_are_judged_by_the_pod_policy() {
    let db = "apiVersion: atoll.dev/v1alpha1
kind: Database
metadata: {name: orders, namespace: shop}
spec:
  partitions: 1
  storage: {plugin: cache}
  pod:
    securityContext:
      seccompProfile: {type: Unconfined}
";
    let out = atoll(&["render", "-f", "-"], Some(db));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.pod"), "{err}");
    assert!(
        err.contains("spec.template.spec.securityContext.seccompProfile.type"),
        "{err}"
    );
    assert!(err.contains("--pod-security=privileged"), "{err}");
    let out = atoll(
        &["render", "-f", "-", "--pod-security=privileged"],
        Some(db),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn policy_flags_are_checked() {
    let out = atoll(
        &[
            "render",
            "-f",
            "examples/cache.yaml",
            "--pod-security=strict",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("privileged, baseline or restricted"));
    let out = atoll(
        &[
            "render",
            "-f",
            "examples/cache.yaml",
            "--allow-service-type=Public",
        ],
        None,
    );
    assert!(!out.status.success());
}
