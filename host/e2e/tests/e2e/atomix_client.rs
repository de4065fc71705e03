//! Atomix's own Go client (`github.com/atomix/go-client` v0.4.1) against
//! atoll's Atomix-compatible gRPC API: the Go test module in `host/e2e/atomix`
//! (see its package doc) is built with `go test -c` and run against an
//! in-process controller and gRPC server. Two clients join a group through
//! atoll and see each other, one writes keys through a Map and the other
//! reads them back, every partition served by Atomix's local node
//! (`github.com/atomix/go-local` v0.5.1). Then one raft replica goes away and
//! stays gone, and a fresh client that asks atoll for the Database again
//! still reads every key: discovery must keep listing every partition while
//! quorum serves. Without `go` on PATH the test fails; it never skips.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_e2e::{Operator, k, wait_ready, workspace};
use atoll_testenv::{TestNamespace, wait_for};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::grpc::start_grpc;

const DB: &str = "shop";

/// The Database: 3 partitions on 3 raft clusters of 3 replicas.
const DATABASE: &str = "apiVersion: atoll.dev/v1alpha1
kind: Database
metadata: {name: shop}
spec:
  partitions: 3
  storage:
    plugin: raft
    config: {clusters: 3, replicas: 3}
";

/// The quota that keeps a deleted replica from coming back.
const QUOTA: &str = "hold-replicas";

fn module_dir() -> PathBuf {
    workspace().join("host/e2e/atomix")
}

/// `go test -c` of the module: the test binary. Panics with go's output when
/// the build fails, and when there is no `go` at all.
fn build_go_test(dir: &Path) -> PathBuf {
    let bin = Path::new(env!("CARGO_TARGET_TMPDIR")).join("atomix-client.test");
    let out = std::process::Command::new("go")
        .args(["test", "-c", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(dir)
        // go.sum is committed: nothing is resolved anew, only downloaded.
        .env("GOFLAGS", "-mod=readonly -buildvcs=false")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `go` ({e}): the Atomix client test needs the Go toolchain \
                 (1.22 or later) on PATH, see https://go.dev/dl"
            )
        });
    assert!(
        out.status.success(),
        "go test -c in {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// `id=host:port,...` from the Database's status: the endpoints the
/// controller recorded for each partition.
fn endpoints(db: &atoll::api::Database) -> String {
    let status = db.status.as_ref().expect("a Ready Database has a status");
    let mut pairs: Vec<String> = status
        .partitions
        .iter()
        .map(|p| format!("{}={}", p.id, p.endpoint))
        .collect();
    pairs.sort();
    assert_eq!(pairs.len(), 3, "{pairs:?}");
    pairs.join(",")
}

/// The conditions of Database `shop` in `ns`, as JSON.
async fn conditions(ns: &str) -> Vec<Value> {
    let out = k(ns, &["get", "db", DB, "-o", "json"], None).await;
    let db: Value = serde_json::from_str(&out).unwrap();
    db["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn condition<'a>(conditions: &'a [Value], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str())
}

/// Every pod in `ns` (the quota counts them all).
async fn pod_names(ns: &str) -> Vec<String> {
    let out = k(ns, &["get", "pods", "-o", "name"], None).await;
    out.lines()
        .map(|l| l.trim_start_matches("pod/").to_string())
        .collect()
}

/// One replica of raft cluster 2 goes away and stays gone: a ResourceQuota
/// in the test's namespace allows one pod fewer than run, then the pod is
/// deleted, so its StatefulSet cannot create it again. Cordoning or
/// tainting nodes would reach other tests on the shared control plane; the
/// quota reaches this namespace only. Returns the pod's name.
async fn take_one_replica_away(ns: &str) -> String {
    let statefulsets = atoll_e2e::children(ns, "statefulsets", DB).await;
    assert_eq!(statefulsets.len(), 3, "{statefulsets:?}");
    let pod = format!("{}-2", statefulsets[1]);
    let pods = pod_names(ns).await;
    assert!(pods.contains(&pod), "{pod} in {pods:?}");
    let quota = format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: {QUOTA}}}\nspec: {{hard: {{pods: \"{}\"}}}}\n",
        pods.len() - 1
    );
    k(ns, &["apply", "-f", "-"], Some(&quota)).await;
    k(ns, &["delete", "pod", &pod, "--wait=true"], None).await;
    // Gone for good: the StatefulSet controller tried and was refused.
    wait_for(
        "the quota to refuse the replica",
        Duration::from_secs(60),
        || async {
            let refused = k(
                ns,
                &[
                    "get",
                    "events",
                    "--field-selector",
                    "reason=FailedCreate",
                    "-o",
                    "jsonpath={.items[*].message}",
                ],
                None,
            )
            .await;
            if refused.contains(&pod) && refused.contains("exceeded quota") {
                Ok(())
            } else {
                Err(refused)
            }
        },
    )
    .await;
    let left = pod_names(ns).await;
    assert!(!left.contains(&pod), "{pod} came back: {left:?}");
    eprintln!("driver: {pod} deleted, the quota keeps it from coming back");
    pod
}

/// The Database notices: not Ready, yet Available (quorum still serves).
async fn wait_disrupted(ns: &str) {
    wait_for(
        "the Database to be Available but not Ready",
        Duration::from_secs(90),
        || async {
            let conditions = conditions(ns).await;
            let ready = condition(&conditions, "Ready");
            let available = condition(&conditions, "Available");
            if ready == Some("False") && available == Some("True") {
                eprintln!("driver: disrupted, conditions {conditions:?}");
                Ok(())
            } else {
                Err(format!("{conditions:?}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn atomix_go_client_reads_every_key_before_and_after_a_replica_goes() {
    let dir = module_dir();
    let build = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || build_go_test(&dir)
    });
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "atomix-client").await;
    let op = Operator::start(&client, ns.name()).await;
    // Compatibility mode for the namespace: go-client v0.4.1 cannot present
    // credentials (it takes no dial options).
    let grpc = start_grpc(&client, true, &[ns.name()]).await;
    k(ns.name(), &["apply", "-f", "-"], Some(DATABASE)).await;
    let db = wait_ready(&client, ns.name(), DB).await;
    let bin = build.await.expect("building the Go test");

    let mut child = tokio::process::Command::new(&bin)
        .args([
            "-test.v",
            "-test.count=1",
            "-test.run=^TestAtomixClient$",
            "-test.timeout=15m",
        ])
        .current_dir(&dir)
        .env("ATOLL_GRPC_ADDR", grpc.addr.to_string())
        .env("ATOLL_NAMESPACE", ns.name())
        .env("ATOLL_DATABASE", DB)
        .env("ATOLL_ENDPOINTS", endpoints(&db))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    let transcript = Arc::new(Mutex::new(String::new()));
    let stderr = tokio::spawn({
        let transcript = Arc::clone(&transcript);
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("go: {line}");
                transcript.lock().unwrap().push_str(&format!("{line}\n"));
            }
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut disrupted = None;
    let run = async {
        while let Some(line) = stdout.next_line().await.expect("reading go's output") {
            eprintln!("go: {line}");
            transcript.lock().unwrap().push_str(&format!("{line}\n"));
            if line == "PHASE1-DONE" {
                disrupted = Some(take_one_replica_away(ns.name()).await);
                wait_disrupted(ns.name()).await;
                stdin.write_all(b"PHASE2\n").await.unwrap();
                stdin.flush().await.unwrap();
            }
        }
        child.wait().await.expect("waiting for the Go test")
    };
    let status = tokio::time::timeout(Duration::from_secs(20 * 60), run)
        .await
        .expect("the Go test finishes within 20 minutes");
    stderr.await.unwrap();
    let transcript = transcript.lock().unwrap().clone();
    assert!(
        status.success(),
        "the Atomix client test failed ({status}):\n{transcript}"
    );
    let pod = disrupted.expect("the Go test reached the disruption");

    // Restored: the replica comes back and the Database is Ready again.
    k(ns.name(), &["delete", "resourcequota", QUOTA], None).await;
    wait_ready(&client, ns.name(), DB).await;
    let pods = pod_names(ns.name()).await;
    assert!(pods.contains(&pod), "{pod} back in {pods:?}");

    op.stop().await;
    ns.cleanup().await;
}
