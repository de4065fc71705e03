//! Fenced leadership: a leader that is paused (SIGSTOP) mid-reconcile,
//! not killed, loses its Lease to the standby; resumed (SIGCONT), it writes
//! nothing more. The API server's audit log (every write, with the user
//! agent `atoll/<version> (<identity>)` naming the replica) is the witness.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{WatchEvent, WatchParams};

use atoll_e2e::{children, example, k, patch_database, wait_ready};
use atoll_testenv::{TestNamespace, wait_for};

const LEASE: Duration = Duration::from_secs(4);

struct Replica {
    name: &'static str,
    child: Child,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(name: &'static str, ns: &str) -> Self {
        let log = std::env::temp_dir().join(format!("atoll-split-{ns}-{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(atoll_e2e::atoll_bin())
            .args(["run", "--namespace", ns, "--leader-elect"])
            .args(["--leader-election-namespace", ns])
            .args(["--lease-duration", &format!("{}s", LEASE.as_secs())])
            .args(["--renew-period", "1s"])
            .args([
                "--metrics-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
            ])
            .env("KUBECONFIG", atoll_testenv::kubeconfig_env())
            .env("POD_NAME", name)
            .env("RUST_LOG", "atoll=info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Replica { name, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // A stopped process does not die of SIGKILL until continued.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn holder(ns: &str) -> String {
    let path = "jsonpath={.spec.holderIdentity}";
    k(ns, &["get", "lease", "atoll", "-o", path], None).await
}

/// Whether audit event `e` is a write the API server carried out.
fn succeeded(e: &serde_json::Value) -> bool {
    matches!(
        e["verb"].as_str(),
        Some("create" | "update" | "patch" | "delete" | "deletecollection")
    ) && e["stage"] == "ResponseComplete"
        && e["responseStatus"]["code"]
            .as_u64()
            .is_some_and(|c| (200..300).contains(&c))
}

/// `(time, verb, resource/name)` of every write in `ns` by `replica` that
/// the API server carried out (one cut off by the fence fails there), the
/// Lease left out (competing for it is how the standby takes over; each
/// replica's own instance Lease is renewed by every replica, leader or not).
fn writes(ns: &str, replica: &str) -> Vec<(String, String, String)> {
    let agent = format!("({replica}_");
    let mut at: Vec<(String, String, String)> = atoll_testenv::audit_log()
        .iter()
        .filter(|e| {
            e["objectRef"]["namespace"] == ns
                && e["objectRef"]["resource"] != "leases"
                && succeeded(e)
                && e["userAgent"].as_str().is_some_and(|a| a.contains(&agent))
        })
        .map(|e| {
            (
                e["requestReceivedTimestamp"].as_str().unwrap().to_owned(),
                e["verb"].as_str().unwrap().to_owned(),
                format!(
                    "{}/{}",
                    e["objectRef"]["resource"].as_str().unwrap_or_default(),
                    e["objectRef"]["name"].as_str().unwrap_or_default()
                ),
            )
        })
        .collect();
    // RFC 3339 in UTC with fixed microseconds: text order is time order.
    at.sort();
    at
}

/// When `replica` took the `atoll` Lease in `ns`: its first successful write
/// of it. A candidate writes the Lease only to create, renew or take it over,
/// and the standby created nothing (the first replica's Lease was there).
fn took_lease(ns: &str, replica: &str) -> Option<String> {
    let agent = format!("({replica}_");
    atoll_testenv::audit_log()
        .iter()
        .filter(|e| {
            e["objectRef"]["namespace"] == ns
                && e["objectRef"]["resource"] == "leases"
                && e["objectRef"]["name"] == "atoll"
                && succeeded(e)
                && e["userAgent"].as_str().is_some_and(|a| a.contains(&agent))
        })
        .filter_map(|e| e["requestReceivedTimestamp"].as_str().map(str::to_owned))
        .min()
}

#[tokio::test]
async fn a_paused_leader_writes_nothing_after_the_new_leader_took_over() {
    let _records = atoll_e2e::plugin_records_shared().await; // atoll run writes them
    let client = atoll_testenv::client().await;
    atoll_testenv::install_crds(&client, atoll::api::crds()).await;
    let ns = TestNamespace::new(&client, "split-brain").await;
    let n = ns.name();
    let mut replicas = [Replica::start("split-a", n), Replica::start("split-b", n)];
    k(n, &["apply", "-f", "-"], Some(&example("raft"))).await;
    wait_ready(&client, n, "orders").await;
    let leader = holder(n).await;
    let (lead, standby) = if leader.starts_with("split-a_") {
        (0, 1)
    } else {
        (1, 0)
    };

    // Mid-reconcile: growing from 6 to 64 partitions is hundreds of writes
    // (a Service and a Partition each, among others); stop the leader as
    // soon as the first new Service shows, with the rest under way.
    let services: Api<Service> = Api::namespaced(client.clone(), n);
    let listed = services.list(&Default::default()).await.unwrap();
    let version = listed.metadata.resource_version.unwrap();
    let mut events = services
        .watch(&WatchParams::default(), &version)
        .await
        .unwrap()
        .boxed();
    let before = writes(n, replicas[lead].name).len();
    patch_database(n, "orders", r#"{"spec":{"partitions":64}}"#).await;
    let first = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.next().await {
            if let WatchEvent::Added(service) = event.unwrap() {
                return service.metadata.name.unwrap();
            }
        }
        panic!("the watch of Services ended")
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the leader did not start the resize within 20s:\n{}",
            replicas[lead].log()
        )
    });
    replicas[lead].signal("-STOP");
    let stopped = Instant::now();

    wait_for(
        "the standby to take the Lease over and converge",
        Duration::from_secs(30),
        || async {
            let partitions = children(n, "partitions", "orders").await.len();
            let holder = holder(n).await;
            (partitions == 64 && holder.starts_with(replicas[standby].name))
                .then_some(())
                .ok_or(format!("{partitions} partitions; holder {holder}"))
        },
    )
    .await;
    let took_over = stopped.elapsed();
    drop(events);

    // Resume the old leader: its fence fell long ago, so whatever it had in
    // flight or queued is refused, and it exits having lost the Lease.
    replicas[lead].signal("-CONT");
    let resumed = Instant::now();
    let status = loop {
        if let Some(status) = replicas[lead].child.try_wait().unwrap() {
            break status;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(20),
            "the old leader did not exit within 20s of SIGCONT:\n{}",
            replicas[lead].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let exited = resumed.elapsed();
    assert!(
        !status.success(),
        "lost the Lease: a failure exit ({status})"
    );
    let old_log = replicas[lead].log();
    assert!(
        old_log.contains("stopped leading") || old_log.contains("leader fence fell"),
        "{old_log}"
    );
    // Let the audit log catch up with anything the old leader sent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_ready(&client, n, "orders").await;

    // The reference is the takeover itself, not the new leader's first
    // write: when the old leader finished the resize before it was stopped,
    // the new leader has nothing to write (a converged Database costs none).
    let taken = took_lease(n, replicas[standby].name)
        .expect("the audit log records the standby taking the Lease over");
    let old = writes(n, replicas[lead].name);
    let new = writes(n, replicas[standby].name);
    let late: Vec<_> = old.iter().filter(|(at, ..)| *at >= taken).collect();
    assert!(
        late.is_empty(),
        "the old leader wrote after the standby took the Lease at {taken}: {late:?}\nold leader's log:\n{old_log}"
    );
    let refused = old_log.matches("write refused").count();
    let cancelled = old_log.matches("reconcile cancelled").count();
    eprintln!(
        "split-brain: stopped when {first} appeared; takeover {took_over:?} after SIGSTOP (lease {LEASE:?}); old leader: {} writes \
         for the resize before, 0 after the takeover; new leader: {} writes; on SIGCONT {refused} writes refused, {cancelled} \
         reconciles cancelled, exit after {exited:?}",
        old.len() - before,
        new.len()
    );
    ns.cleanup().await;
}
