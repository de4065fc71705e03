//! Hot reload of plugins from ConfigMaps, against the real control plane: a
//! new raft release takes effect without a restart (a Database pinned to the
//! built-in keeps it, side by side), broken components are
//! refused while the last good version serves, deleting the ConfigMap
//! restores the built-in, and a gzip-compressed component loads the same way.
//!
//! One test function: the StoragePlugin record of `raft` is cluster-scoped,
//! so these steps must not interleave.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atoll::api::StoragePlugin;
use atoll::contract::Digest;
use atoll_e2e::{Operator, approve_as_told, example, k, wait_condition, wait_ready};
use atoll_testenv::{TestNamespace, client, wait_for};
use kube::api::Api;

const LABELLED: &str = env!("ATOLL_TEST_RAFT_LABELLED_WASM");
const OTHER_WORLD: &str = env!("ATOLL_TEST_OTHER_WORLD_WASM");
/// What the labelled release adds to every object it renders.
const RELEASE_LABEL: &str = "atoll.dev/test-release";

/// A small raft Database pinned to the built-in release.
const PINNED: &str = r#"
apiVersion: atoll.dev/v1alpha1
kind: Database
metadata:
  name: pinned
spec:
  partitions: 1
  storage:
    plugin: raft
    version: "=0.1.0"
    config:
      clusters: 1
      replicas: 1
"#;

/// A raft Database the labelled release renders without its
/// PodDisruptionBudget: that release would prune it.
const DROPPING: &str = r#"
apiVersion: atoll.dev/v1alpha1
kind: Database
metadata:
  name: dropping
  labels:
    atoll.dev/test-drop: pdb
spec:
  partitions: 1
  storage:
    plugin: raft
    config:
      clusters: 1
      replicas: 3
"#;

#[tokio::test]
async fn configmap_plugins_reload_refuse_broken_ones_and_fall_back() {
    let _records = atoll_e2e::plugin_records_exclusive().await; // asserts on raft's record
    let client = client().await;
    let ns = TestNamespace::new(&client, "hot-reload").await;
    let n = ns.name();
    let operator = Operator::start_with_plugin_source(&client, n).await;
    let dir = scratch_dir(n);

    k(n, &["apply", "-f", "-"], Some(&example("raft"))).await;
    k(n, &["apply", "-f", "-"], Some(PINNED)).await;
    k(n, &["apply", "-f", "-"], Some(DROPPING)).await;
    wait_ready(&client, n, "orders").await;
    wait_ready(&client, n, "pinned").await;
    wait_ready(&client, n, "dropping").await;
    assert_labelled(n, false).await;

    // A new release: every object of `orders` carries its label within
    // seconds; the StoragePlugin shows version, digest and the shadow render.
    let labelled = std::fs::read(LABELLED).unwrap();
    load_configmap(n, "raft-next", "plugin.wasm", Path::new(LABELLED)).await;
    wait_labelled(n, true).await;
    let record = wait_record(&client, "the new raft release", |s| {
        s.version == "0.1.1" && s.source == format!("configmap/{n}/raft-next")
    })
    .await;
    assert_eq!(record.state, "Loaded");
    assert_eq!(record.digest, Digest::of(&labelled).to_string());
    let shadow = record.shadow_render.expect("a shadow render was recorded");
    assert!(
        shadow.databases >= 2 && shadow.changed >= 1 && shadow.failed >= 1,
        "orders changes, pinned (=0.1.0) fails to render: {shadow:?}"
    );
    assert!(shadow.from.starts_with("0.1.0 sha256:"), "{shadow:?}");
    assert!(
        shadow.prunes >= 1,
        "dropping would lose its PDB: {shadow:?}"
    );
    event(n, "raft-next", "PluginLoaded").await;
    // Versions live side by side: the pinned Database keeps rendering with
    // the built-in 0.1.0, its objects unlabelled, while `orders` moved.
    let pinned = wait_ready(&client, n, "pinned").await;
    let plugin = pinned.status.and_then(|s| s.plugin).expect("status.plugin");
    assert_eq!(plugin.version, "0.1.0", "{plugin:?}");
    assert_ne!(plugin.digest, Digest::of(&labelled).to_string());
    let pinned_labels = k(
        n,
        &[
            "get",
            "statefulset",
            "pinned-1",
            "-o",
            "jsonpath={.metadata.labels}",
        ],
        None,
    )
    .await;
    assert!(!pinned_labels.contains(RELEASE_LABEL), "{pinned_labels}");
    wait_ready(&client, n, "orders").await;

    // The release would prune `dropping`'s PodDisruptionBudget: kept, and
    // the Database says so, until it approves this one change.
    let message = wait_condition(&client, n, "dropping", "Degraded", "PruneRefused").await;
    assert!(
        message.contains("no longer renders PodDisruptionBudget dropping-1"),
        "{message}"
    );
    let pdbs = k(n, &["get", "pdb", "-o", "name"], None).await;
    assert!(pdbs.contains("dropping-1"), "kept: {pdbs}");
    approve_as_told(&message).await;
    wait_for(
        "dropping's PDB pruned once approved",
        Duration::from_secs(30),
        || async {
            let pdbs = k(n, &["get", "pdb", "-o", "name"], None).await;
            (!pdbs.contains("dropping-1")).then_some(()).ok_or(pdbs)
        },
    )
    .await;
    wait_ready(&client, n, "dropping").await;

    // Broken components are refused; the last good release keeps serving.
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, [0xff, 0xfe, 0x00, 0x01, 0x80, 0x90]).unwrap();
    load_configmap(n, "raft-garbage", "plugin.wasm", &garbage).await;
    let record = wait_record(&client, "raft refused garbage", |s| {
        s.state == "Failed" && s.source == format!("configmap/{n}/raft-garbage")
    })
    .await;
    let error = record.last_error.unwrap_or_default();
    assert!(error.contains("not a WebAssembly component"), "{error}");
    assert_eq!(
        record.version, "0.1.1",
        "the last good version still serves"
    );
    event(n, "raft-garbage", "PluginRejected").await;

    load_configmap(n, "raft-other", "plugin.wasm", Path::new(OTHER_WORLD)).await;
    let record = wait_record(&client, "raft refused another world", |s| {
        s.state == "Failed" && s.source == format!("configmap/{n}/raft-other")
    })
    .await;
    let error = record.last_error.unwrap_or_default();
    assert!(error.contains("atoll:storage/plugin world"), "{error}");
    event(n, "raft-other", "PluginRejected").await;

    // Nothing changed for the Databases meanwhile.
    wait_ready(&client, n, "orders").await;
    assert_labelled(n, true).await;
    k(
        n,
        &["delete", "configmap", "raft-garbage", "raft-other"],
        None,
    )
    .await;
    wait_record(&client, "raft loaded again", |s| {
        s.state == "Loaded" && s.version == "0.1.1"
    })
    .await;

    // Deleting the ConfigMap restores the built-in, label gone.
    k(n, &["delete", "configmap", "raft-next"], None).await;
    wait_labelled(n, false).await;
    wait_record(&client, "the built-in raft", |s| {
        s.source == "built-in" && s.version == "0.1.0" && s.state == "Loaded"
    })
    .await;
    wait_ready(&client, n, "pinned").await;

    // The same release, gzip-compressed.
    let gz = dir.join("raft.wasm.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&labelled).unwrap();
    std::fs::write(&gz, encoder.finish().unwrap()).unwrap();
    load_configmap(n, "raft-gz", "plugin.wasm.gz", &gz).await;
    wait_labelled(n, true).await;
    wait_record(&client, "the gzip release", |s| {
        s.version == "0.1.1" && s.source == format!("configmap/{n}/raft-gz")
    })
    .await;
    k(n, &["delete", "configmap", "raft-gz"], None).await;
    wait_labelled(n, false).await;
    wait_record(&client, "the built-in raft again", |s| {
        s.source == "built-in"
    })
    .await;

    operator.stop().await;
    ns.cleanup().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A plugin whose ConfigMap is deleted, with no built-in of its name, is gone:
/// its Databases turn Degraded, naming the ConfigMap.
#[tokio::test]
async fn a_removed_plugin_without_a_built_in_degrades_its_databases() {
    let _records = atoll_e2e::plugin_records_shared().await; // its plugin source writes them
    let client = client().await;
    let ns = TestNamespace::new(&client, "plugin-gone").await;
    let n = ns.name();
    let operator = Operator::start_with_plugin_source(&client, n).await;
    // The hostile test plugin behaves by default (mode ok).
    let hostile = Path::new(env!("ATOLL_TEST_HOSTILE_WASM"));
    load_plugin_configmap(n, "hostile", "hostile", "plugin.wasm", hostile).await;
    let db = r#"{"apiVersion": "atoll.dev/v1alpha1", "kind": "Database",
        "metadata": {"name": "tame"},
        "spec": {"partitions": 1, "storage": {"plugin": "hostile"}}}"#;
    k(n, &["apply", "-f", "-"], Some(db)).await;
    wait_ready(&client, n, "tame").await;

    k(n, &["delete", "configmap", "hostile"], None).await;
    let message = wait_condition(&client, n, "tame", "Degraded", "UnknownPlugin").await;
    assert!(
        message.contains(&format!("configmap/{n}/hostile was deleted")),
        "{message}"
    );
    operator.stop().await;
    ns.cleanup().await;
}

fn scratch_dir(ns: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("atoll-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `kubectl create configmap NAME --from-file=KEY=FILE` labelled
/// `atoll.dev/plugin=raft`.
async fn load_configmap(ns: &str, name: &str, key: &str, file: &Path) {
    load_plugin_configmap(ns, name, "raft", key, file).await;
}

/// A ConfigMap holding `file` under `key`, labelled `atoll.dev/plugin=PLUGIN`.
async fn load_plugin_configmap(ns: &str, name: &str, plugin: &str, key: &str, file: &Path) {
    let from = format!("--from-file={key}={}", file.display());
    let yaml = k(
        ns,
        &[
            "create",
            "configmap",
            name,
            &from,
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        None,
    )
    .await;
    let labelled = k(
        ns,
        &[
            "label",
            "--local",
            "-f",
            "-",
            &format!("atoll.dev/plugin={plugin}"),
            "-o",
            "yaml",
        ],
        Some(&yaml),
    )
    .await;
    k(ns, &["create", "-f", "-"], Some(&labelled)).await;
}

/// The `atoll.dev/test-release` label on every StatefulSet, Service and
/// ConfigMap of `orders`: present or absent as `want` says.
async fn labels_match(ns: &str, want: bool) -> Result<(), String> {
    let out = k(
        ns,
        &[
            "get",
            "statefulsets,services,configmaps",
            "-l",
            "atoll.dev/database=orders",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.labels.atoll\\.dev/test-release}{\"\\n\"}{end}",
        ],
        None,
    )
    .await;
    // The partition-group Service `orders` is the host's own, not the
    // plugin's: its labels do not follow the plugin version.
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("Service/orders="))
        .collect();
    if lines.is_empty() {
        return Err("no children of orders".into());
    }
    let wrong: Vec<&&str> = lines
        .iter()
        .filter(|l| l.ends_with("=labelled") != want)
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("want {RELEASE_LABEL} {want}, got {wrong:?}"))
    }
}

async fn assert_labelled(ns: &str, want: bool) {
    if let Err(e) = labels_match(ns, want).await {
        panic!("{e}");
    }
}

async fn wait_labelled(ns: &str, want: bool) {
    wait_for(
        &format!("{RELEASE_LABEL} on every child of orders = {want}"),
        Duration::from_secs(30),
        || labels_match(ns, want),
    )
    .await;
}

/// Wait until the `raft` StoragePlugin's status satisfies `check`.
async fn wait_record(
    client: &kube::Client,
    what: &str,
    check: impl Fn(&atoll::api::StoragePluginStatus) -> bool,
) -> atoll::api::StoragePluginStatus {
    let api: Api<StoragePlugin> = Api::all(client.clone());
    let check = &check;
    wait_for(
        &format!("StoragePlugin raft: {what}"),
        Duration::from_secs(30),
        || {
            let api = api.clone();
            async move {
                let status = api
                    .get("raft")
                    .await
                    .map_err(|e| e.to_string())?
                    .status
                    .unwrap_or_default();
                if check(&status) {
                    Ok(status)
                } else {
                    Err(format!("{status:?}"))
                }
            }
        },
    )
    .await
}

/// Wait for an Event with `reason` on ConfigMap `name`.
async fn event(ns: &str, name: &str, reason: &str) {
    wait_for(
        &format!("Event {reason} on ConfigMap {name}"),
        Duration::from_secs(30),
        || async move {
            let out = k(
                ns,
                &[
                    "get",
                    "events.events.k8s.io",
                    "--field-selector",
                    &format!("regarding.name={name},regarding.kind=ConfigMap"),
                    "-o",
                    "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
                ],
                None,
            )
            .await;
            if out.lines().any(|l| l == reason) {
                Ok(())
            } else {
                Err(out)
            }
        },
    )
    .await;
}
