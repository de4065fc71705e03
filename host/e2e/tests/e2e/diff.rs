//! `atoll diff` (the workspace's binary) against the real API server: an
//! unchanged manifest says so and exits 0, an edited one prints the change
//! and exits 1, lowering partitions is named as refused by the data-loss
//! guard (exit 3), and none of it writes anything.

use std::io::Write;
use std::process::{Command, Stdio};

use atoll_e2e::{Operator, atoll_bin, k, wait_ready};
use atoll_testenv::TestNamespace;

/// A cache Database `sessions` with `partitions` partitions, two per node,
/// running `image`.
fn cache(partitions: u32, image: &str) -> String {
    format!(
        r#"apiVersion: atoll.dev/v1alpha1
kind: Database
metadata:
  name: sessions
spec:
  partitions: {partitions}
  storage:
    plugin: cache
    config:
      partitionsPerNode: 2
      image: {image}
"#
    )
}

const IMAGE: &str = "atomix/cache-storage-node:v0.5.1";

/// `atoll diff -f -` of `manifest` placed in namespace `ns`; returns the
/// exit code, stdout and stderr.
fn diff(ns: &str, manifest: &str) -> (i32, String, String) {
    let manifest = manifest.replace(
        "  name: sessions\n",
        &format!("  name: sessions\n  namespace: {ns}\n"),
    );
    let mut child = Command::new(atoll_bin())
        .args(["diff", "-f", "-"])
        .env("KUBECONFIG", atoll_testenv::kubeconfig_env())
        .envs(atoll_e2e::plugin_cache_env())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every object of the Database and its children with what a write would
/// change: resourceVersion of those nothing else writes, generation of
/// the workloads (whose status the cluster's controllers keep writing).
async fn fingerprint(ns: &str) -> String {
    let rv = k(
        ns,
        &[
            "get",
            "configmaps,services,partitions,poddisruptionbudgets",
            "-l",
            "atoll.dev/database=sessions",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion}{'\\n'}{end}",
        ],
        None,
    )
    .await;
    let generation = k(
        ns,
        &[
            "get",
            "databases,statefulsets",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}@{.metadata.generation}{'\\n'}{end}",
        ],
        None,
    )
    .await;
    rv + &generation
}

#[tokio::test]
async fn diff_shows_no_change_an_edit_and_a_refused_change_writing_nothing() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "diff").await;
    let n = ns.name();
    let op = Operator::start(&client, n).await;
    k(n, &["apply", "-f", "-"], Some(&cache(4, IMAGE))).await;
    wait_ready(&client, n, "sessions").await;
    // Nothing reconciles while the diffs run: what they see is what stays.
    op.stop().await;
    let before = fingerprint(n).await;
    assert!(before.contains("StatefulSet/sessions-2@"), "{before}");

    let (code, out, err) = diff(n, &cache(4, IMAGE));
    assert_eq!(code, 0, "unchanged manifest: exit 0\n{out}{err}");
    assert!(out.contains("no changes ("), "{out}");
    assert!(!out.contains("---"), "no diff printed: {out}");

    let edited = "atomix/cache-storage-node:v0.5.2";
    let (code, out, err) = diff(n, &cache(6, edited));
    assert_eq!(code, 1, "edited manifest: exit 1\n{out}{err}");
    assert!(out.contains("~ StatefulSet sessions-1 (changed)"), "{out}");
    let line = |sign: char, image: &str| {
        out.lines()
            .any(|l| l.starts_with(sign) && l.trim_end().ends_with(&format!("image: {image}")))
    };
    assert!(
        line('-', IMAGE) && line('+', edited),
        "the image line as a unified diff: {out}"
    );
    assert!(out.contains("+++ after/StatefulSet/sessions-1"), "{out}");
    assert!(out.contains("+ StatefulSet sessions-3 (created)"), "{out}");
    assert!(out.contains("+ Partition sessions-6 (created)"), "{out}");
    assert!(
        !out.contains("managedFields"),
        "server noise left out: {out}"
    );
    assert!(
        !out.contains("resourceVersion"),
        "server noise left out: {out}"
    );
    assert!(!out.contains("REFUSED"), "{out}");

    let (code, out, err) = diff(n, &cache(2, IMAGE));
    assert_eq!(
        code, 3,
        "lowering partitions is refused: exit 3\n{out}{err}"
    );
    assert!(out.contains("- Partition sessions-3 (pruned)"), "{out}");
    assert!(out.contains("- StatefulSet sessions-2 (pruned)"), "{out}");
    assert!(
        out.contains("REFUSED (DataLossRefused): refusing to delete"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "kubectl annotate database sessions -n {n} atoll.dev/allow-data-loss=2 --overwrite"
        )),
        "the approval names the generation the edit would make: {out}"
    );

    let (code, out, err) = diff(
        n,
        "apiVersion: atoll.dev/v1alpha1\nkind: Database\nmetadata:\n  name: sessions\nspec:\n  partitions: 2\n  storage:\n    plugin: nosuch\n",
    );
    assert_eq!(code, 2, "an unknown plugin is an error: exit 2\n{out}{err}");
    assert!(err.contains("nosuch"), "{err}");

    assert_eq!(fingerprint(n).await, before, "atoll diff wrote nothing");
    ns.cleanup().await;
}
