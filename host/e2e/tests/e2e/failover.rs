//! Two `atoll run` replicas with leader election: only the Lease holder
//! reconciles; SIGKILL it and the other takes over and converges.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atoll_e2e::{children, example, k, patch_database, wait_ready};
use atoll_testenv::{TestNamespace, wait_for};

struct Replica {
    name: &'static str,
    child: Child,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(name: &'static str, ns: &str) -> Self {
        let log = std::env::temp_dir().join(format!("atoll-failover-{ns}-{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(atoll_e2e::atoll_bin())
            .args([
                "run",
                "--namespace",
                ns,
                "--leader-elect",
                "--leader-election-namespace",
                ns,
            ])
            .args([
                "--lease-duration",
                "4s",
                "--renew-period",
                "1s",
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

    fn leading(&self) -> bool {
        self.log().contains("leading: reconciling Databases")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn holder(ns: &str) -> String {
    k(
        ns,
        &[
            "get",
            "lease",
            "atoll",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    )
    .await
}

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_the_other_takes_over() {
    let _records = atoll_e2e::plugin_records_shared().await; // atoll run writes them
    let client = atoll_testenv::client().await;
    atoll_testenv::install_crds(&client, atoll::api::crds()).await;
    let ns = TestNamespace::new(&client, "failover").await;
    let n = ns.name();
    let mut replicas = [
        Replica::start("replica-a", n),
        Replica::start("replica-b", n),
    ];
    k(n, &["apply", "-f", "-"], Some(&example("raft"))).await;
    wait_ready(&client, n, "orders").await;

    let leader = holder(n).await;
    let (lead, standby) = if leader.starts_with("replica-a_") {
        (0, 1)
    } else {
        (1, 0)
    };
    assert!(
        leader.starts_with(replicas[lead].name),
        "lease held by {leader:?}"
    );
    assert!(replicas[lead].leading(), "{}", replicas[lead].log());
    assert!(
        !replicas[standby].leading(),
        "the standby never reconciles:\n{}",
        replicas[standby].log()
    );

    replicas[lead].child.kill().unwrap(); // SIGKILL: no release, the Lease must expire
    let killed = Instant::now();
    patch_database(n, "orders", r#"{"spec":{"partitions":8}}"#).await;
    wait_for(
        "the standby to take over and converge",
        // Lease expiry (4 s) plus a start and a reconcile; generous because
        // CI runs this beside sixty other tests on two cores.
        Duration::from_secs(60),
        || async {
            let partitions = children(n, "partitions", "orders").await.len();
            (partitions == 8).then_some(()).ok_or(format!(
                "{partitions} partitions; holder {}",
                holder(n).await
            ))
        },
    )
    .await;
    let took = killed.elapsed();
    assert!(holder(n).await.starts_with(replicas[standby].name));
    assert!(replicas[standby].leading());
    wait_ready(&client, n, "orders").await;
    eprintln!("failover: converged {took:?} after SIGKILL of the leader");

    // At no time did both write: in the API server's audit log, every write
    // of the old leader comes before every write of the new one. The Lease
    // itself is left out: competing for it is how the standby takes over.
    let writes = |replica: &str| -> Vec<String> {
        let agent = format!("({replica}_");
        let mut at: Vec<String> = atoll_testenv::audit_log()
            .iter()
            .filter(|e| {
                e["objectRef"]["namespace"] == n
                    && e["objectRef"]["resource"] != "leases"
                    && e["userAgent"].as_str().is_some_and(|a| a.contains(&agent))
            })
            .map(|e| e["requestReceivedTimestamp"].as_str().unwrap().to_owned())
            .collect();
        // RFC 3339 in UTC with fixed microseconds: text order is time order.
        at.sort();
        at
    };
    let (old, new) = (writes(replicas[lead].name), writes(replicas[standby].name));
    assert!(
        !old.is_empty() && !new.is_empty(),
        "both replicas wrote while leading ({} and {} writes audited)",
        old.len(),
        new.len()
    );
    assert!(
        old.last() < new.first(),
        "the new leader wrote at {:?}, before the old leader's last write at {:?}",
        new.first(),
        old.last()
    );
    eprintln!(
        "failover: {} writes by the old leader, then {} by the new one, none overlapping",
        old.len(),
        new.len()
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn a_single_replica_without_election_reconciles_and_stops_on_sigterm() {
    let _records = atoll_e2e::plugin_records_shared().await; // atoll run writes them
    let client = atoll_testenv::client().await;
    atoll_testenv::install_crds(&client, atoll::api::crds()).await;
    let ns = TestNamespace::new(&client, "single-replica").await;
    let n = ns.name();
    let log = std::env::temp_dir().join(format!("atoll-single-{n}.log"));
    let mut child = Command::new(atoll_e2e::atoll_bin())
        .args([
            "run",
            "--namespace",
            n,
            "--log-json",
            "--metrics-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", atoll_testenv::kubeconfig_env())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    k(n, &["apply", "-f", "-"], Some(&example("cache"))).await;
    wait_ready(&client, n, "sessions").await;

    // SIGTERM: a graceful stop, exit status 0.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "atoll did not stop within 15s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.lines().count() >= 2, "{log}");
    for line in log.lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(entry["level"].is_string(), "{line}");
    }
    ns.cleanup().await;
}
