//! Whole-system bench helpers: API server request counts and CPU time.

use std::time::Duration;

use atoll_testenv::kubectl;

/// Requests the API server has served, from `apiserver_request_total`:
/// `(all, LIST + GET, writes)`. Counts every client (kube-controller-manager
/// and kwok too), so compare figures taken the same way.
pub async fn api_requests() -> (u64, u64, u64) {
    let out = kubectl(&["get", "--raw", "/metrics"], None).await;
    assert!(out.success, "{}", out.stderr);
    let (mut all, mut reads, mut writes) = (0, 0, 0);
    for line in out
        .stdout
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let value = value as u64;
        let verb = line
            .find("verb=\"")
            .map(|i| &line[i + 6..])
            .and_then(|r| r.split('"').next())
            .unwrap_or("");
        all += value;
        match verb {
            "LIST" | "GET" => reads += value,
            "WATCH" | "CONNECT" => {}
            _ => writes += value,
        }
    }
    (all, reads, writes)
}

/// CPU time (user + system) the kube-apiserver process has used.
pub fn apiserver_cpu() -> Option<Duration> {
    control_plane_cpu("kube-apiserver")
}

/// CPU time (user + system) control-plane process `name` (`kube-apiserver`,
/// `etcd`, ...) has used: its pid from the pids file `cargo xtask cluster
/// up` wrote in [`atoll_testenv::state_dir`] (so `ATOLL_TESTENV_DIR`
/// selects the control plane; the last line of that name, as a restarted
/// process gets a line of its own), else the oldest process of that name.
pub fn control_plane_cpu(name: &str) -> Option<Duration> {
    let pid = std::fs::read_to_string(atoll_testenv::state_dir().join("pids"))
        .ok()
        .and_then(|pids| {
            pids.lines()
                .rfind(|l| l.split_whitespace().nth(1) == Some(name))
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
        })
        .or_else(|| {
            let out = std::process::Command::new("pgrep")
                .args(["-o", name])
                .output()
                .ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
        })?;
    process_cpu(pid.trim().parse().ok()?)
}

/// utime + stime of process `pid`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// Field `field` (`VmRSS`, `VmHWM`, ...) of `/proc/<pid>/status`, in KiB.
#[allow(dead_code, reason = "not every bench measures memory")]
pub fn process_memory_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// Snapshot of the API server's counters, to diff around a phase.
#[derive(Debug, Clone, Copy)]
pub struct ApiSnapshot {
    pub requests: (u64, u64, u64),
    pub cpu: Duration,
}

impl ApiSnapshot {
    pub async fn take() -> Self {
        ApiSnapshot {
            requests: api_requests().await,
            cpu: apiserver_cpu().unwrap_or_default(),
        }
    }

    /// `(requests, reads, writes, cpu)` since `earlier`.
    pub fn since(&self, earlier: &ApiSnapshot) -> (u64, u64, u64, Duration) {
        (
            self.requests.0 - earlier.requests.0,
            self.requests.1 - earlier.requests.1,
            self.requests.2 - earlier.requests.2,
            self.cpu.saturating_sub(earlier.cpu),
        )
    }
}

/// Wait (up to 3 minutes) until namespace `name` is gone, so the garbage
/// collection of one scenario does not load the API server during the next.
#[allow(dead_code, reason = "not every bench uses it")]
pub async fn wait_namespace_gone(client: &kube::Client, name: &str) {
    if !wait_namespace_gone_within(client, name, Duration::from_secs(180)).await {
        eprintln!("namespace {name} still terminating after 180s");
    }
}

/// Wait up to `timeout` until namespace `name` is gone; false if it is not.
pub async fn wait_namespace_gone_within(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
) -> bool {
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        match api.get_opt(name).await {
            Ok(None) => return true,
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    false
}

/// Create Databases `database(0..count)` (16 requests at a time) and poll
/// every 250 ms until all of them are Ready.
#[allow(dead_code, reason = "not every bench uses it")]
pub async fn create_and_wait_ready(
    dbs: &kube::Api<atoll::api::Database>,
    count: usize,
    database: impl Fn(usize) -> atoll::api::Database,
) {
    use futures::{StreamExt, stream};
    let database = &database;
    stream::iter(0..count)
        .for_each_concurrent(16, |i| async move {
            dbs.create(&kube::api::PostParams::default(), &database(i))
                .await
                .expect("create Database");
        })
        .await;
    loop {
        let ready = dbs
            .list(&kube::api::ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|db| {
                db.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if ready == count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
