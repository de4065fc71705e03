//! The scale curve of issue 20: converge, resync and hot reload at growing
//! numbers of Databases, against `atoll run` as a real process on the local
//! control plane (kwok makes the pods).
//!
//! ```sh
//! cargo xtask cluster up && eval "$(cargo xtask cluster env)"
//! ATOLL_BENCH_SIZES=1000,3000 cargo bench -p atoll-e2e --bench scale
//! ```
//!
//! `ATOLL_BENCH_SIZES` (comma list, default `1000,3000,10000`) are the sizes,
//! smallest first; `ATOLL_BENCH_TIMEOUT_SECS` (default 1800) bounds each
//! phase. At each size N, in a fresh namespace (deleted, and waited for,
//! before the next size):
//!
//! 1. **converge**: N raft Databases of one partition (one Raft cluster of
//!    one replica) are created, 16 requests at a time, with one `atoll run`
//!    reconciling the namespace; timed from the first create until every
//!    Database is Ready for its generation. raft at this size renders as few
//!    objects as `cache` with `partitionsPerNode: 1` (4 children: ConfigMap,
//!    headless Service, StatefulSet, partition Service; no PDB at one
//!    replica, no PVC without `persistence`; plus the Partition, atoll's
//!    partition-group Service and its EndpointSlice) and it has a second
//!    release to reload (`ATOLL_TEST_RAFT_LABELLED_WASM`), so raft it is.
//! 2. **resync**: that atoll stopped (SIGTERM), a second `atoll run` started;
//!    timed from its spawn until it has finished N reconciles (its
//!    `atoll_reconciles_total`), which is what a resync does: visit every
//!    Database once. The API counters are read once its reconcile counter
//!    has been still for 3 s, so late writes count. Also printed: when it
//!    began serving metrics (start-up, part of the time), its `render`
//!    plugin calls, memoized renders and applies.
//! 3. **reload**: the raft release `raft-labelled` (which adds a label to
//!    every child) created as a ConfigMap labelled `atoll.dev/plugin=raft`
//!    in the namespace; timed until every Database is Ready on its digest.
//!
//! Per phase it prints the time; atoll's VmRSS and VmHWM
//! (`/proc/<pid>/status`) at the end of the phase and its CPU seconds
//! (utime + stime) during it; API requests per Database (the increase of the
//! API server's `apiserver_request_total`, all, reads, writes) and the API
//! server's and etcd's CPU seconds. After each size (before its namespace
//! is deleted, which at 10,000 takes the garbage collector longer than the
//! phases): per phase, atoll's RSS per
//! Database and CPU per Database at each size divided by the same at the
//! smallest size (issue 20's target: ≤ 1.2 from 1,000 to 10,000), and the
//! marginal RSS per Database added between consecutive sizes. A size that
//! does not fit (a create refused, a phase past the timeout, the control
//! plane not answering `/readyz`) is printed with the reason, and no larger
//! size is tried.
//!
//! Caveats:
//! - The binary is [`atoll_e2e::atoll_bin`]: built with the profile of this
//!   bench, so release under `cargo bench`.
//! - API requests count every client: kube-controller-manager, kwok (pod and
//!   node status, leases), atoll's instance Lease and StoragePlugin records,
//!   and this bench's own Database watch. A resync's writes are therefore
//!   not atoll's alone; atoll's own applies (`atoll_objects_applied_total`)
//!   are printed beside them.
//! - The resync is a fresh process: its render memo and plugin instances
//!   start empty, and its CPU and VmHWM include start-up (plugins from the
//!   disk cache when warm, compiled when cold). A warm process's timed resync
//!   (every 5 min) would cost less; `atoll run` has no flag to shorten it.
//! - The reload's VmHWM is the second process's peak since its start; the
//!   compile of the new release runs in a child process (`atoll
//!   compile-plugin`) whose CPU and memory are not atoll's figures here.
//! - RSS per Database includes atoll's fixed cost (runtime, five compiled
//!   plugins), so at small sizes the ratio falls below 1 by construction; the
//!   marginal figure shows growth without it.
//! - The machine is shared and has 2 cores: compare figures within one run.

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use atoll::api::Database;
use atoll::contract::Digest;
use atoll_e2e::KillOnDrop;
use atoll_testenv::{TestNamespace, client};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use support::ApiSnapshot;

const LABELLED: &str = env!("ATOLL_TEST_RAFT_LABELLED_WASM");
/// Creates in flight at once.
const CREATES_IN_FLIGHT: usize = 16;

/// A raft Database of one partition on one cluster of one replica.
fn database(i: usize) -> Database {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "atoll.dev/v1alpha1",
        "kind": "Database",
        "metadata": {"name": format!("db-{i:05}")},
        "spec": {"partitions": 1, "storage": {"plugin": "raft",
            "config": {"clusters": 1, "replicas": 1}}},
    }))
    .unwrap()
}

/// Ready for its current generation.
fn ready(db: &Database) -> bool {
    db.status.as_ref().is_some_and(|s| {
        s.observed_generation == db.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("ATOLL_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,3000,10000".into())
        .split(',')
        .map(|s| {
            s.trim().parse().unwrap_or_else(|_| {
                panic!("ATOLL_BENCH_SIZES: {s:?} is not a number; give sizes like 1000,3000")
            })
        })
        .collect();
    let timeout = Duration::from_secs(
        std::env::var("ATOLL_BENCH_TIMEOUT_SECS")
            .ok()
            .map(|v| {
                v.parse().unwrap_or_else(|_| {
                    panic!("ATOLL_BENCH_TIMEOUT_SECS: {v:?} is not a number of seconds")
                })
            })
            .unwrap_or(1800),
    );
    let client = client().await;
    atoll_testenv::install_crds(&client, atoll::api::crds()).await;
    let bin = atoll_e2e::atoll_bin();
    println!("atoll binary {}", bin.display());
    let mut results: Vec<Size> = Vec::new();
    for &n in &sizes {
        // Ratios print as soon as a size is measured, before its namespace
        // is deleted: at 10,000 Databases the garbage collector takes longer
        // to delete them than the phases took.
        let fits = size(&client, n, timeout, |size| {
            results.push(size);
            if results.len() > 1 {
                ratios(&results);
            }
        })
        .await;
        if let Err(reason) = fits {
            println!("{n} Databases do not fit: {reason}; not trying larger sizes");
            break;
        }
    }
}

/// What one phase cost.
struct Phase {
    time: Duration,
    rss_kib: u64,
    hwm_kib: u64,
    atoll_cpu: Duration,
    requests: u64,
    reads: u64,
    writes: u64,
    apiserver_cpu: Duration,
    etcd_cpu: Duration,
}

/// The three phases at one size.
struct Size {
    n: usize,
    phases: [(&'static str, Phase); 3],
}

/// Counters before a phase.
struct Before {
    api: ApiSnapshot,
    etcd_cpu: Duration,
    atoll_cpu: Duration,
    started: Instant,
}

impl Before {
    /// Take them; `atoll` is the process measured (none: one not started yet).
    async fn take(atoll: Option<&Atoll>) -> Self {
        Before {
            api: ApiSnapshot::take().await,
            etcd_cpu: support::control_plane_cpu("etcd").unwrap_or_default(),
            atoll_cpu: atoll.map(Atoll::cpu).unwrap_or_default(),
            started: Instant::now(),
        }
    }

    /// The phase from then until `end` (its time), counters read now.
    async fn phase(&self, atoll: &Atoll, end: Instant) -> Phase {
        let (requests, reads, writes, apiserver_cpu) = ApiSnapshot::take().await.since(&self.api);
        Phase {
            time: end - self.started,
            rss_kib: atoll.memory_kib("VmRSS"),
            hwm_kib: atoll.memory_kib("VmHWM"),
            atoll_cpu: atoll.cpu().saturating_sub(self.atoll_cpu),
            requests,
            reads,
            writes,
            apiserver_cpu,
            etcd_cpu: support::control_plane_cpu("etcd")
                .unwrap_or_default()
                .saturating_sub(self.etcd_cpu),
        }
    }
}

/// atoll's own counters of the work a phase did: whether cost per
/// Database grows because each costs more or because each is visited more.
#[derive(Default)]
struct Work {
    reconciles: u64,
    renders: u64,
    memoized: u64,
    applies: u64,
}

impl Work {
    async fn take(atoll: &Atoll) -> Result<Self, String> {
        Ok(Work {
            reconciles: atoll.metric("atoll_reconciles_total").await?,
            renders: atoll
                .metric(
                    r#"atoll_plugin_call_duration_seconds_count{plugin="raft",function="render"}"#,
                )
                .await?,
            memoized: atoll
                .metric(r#"atoll_plugin_calls_memoized_total{plugin="raft",function="render"}"#)
                .await?,
            applies: atoll.metric("atoll_objects_applied_total").await?,
        })
    }

    /// Per Database since `before`, as a line for [`print_phase`].
    async fn line(atoll: &Atoll, before: &Work, n: usize) -> Result<String, String> {
        let now = Work::take(atoll).await?;
        let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / n as f64;
        Ok(format!(
            "\n           per Database: reconciles {:.2}, render calls {:.2} (memoized {:.2}), objects applied {:.2}",
            per(now.reconciles, before.reconciles),
            per(now.renders, before.renders),
            per(now.memoized, before.memoized),
            per(now.applies, before.applies),
        ))
    }
}

fn print_phase(n: usize, name: &str, p: &Phase, extra: &str) {
    let per = |v: u64| v as f64 / n as f64;
    println!(
        "  {name:<8} {:>7.1}s  atoll RSS {:>6.1} MiB (HWM {:>6.1})  atoll CPU {:>6.1}s  \
         API req/DB {:>5.1} (reads {:.1}, writes {:.1})  API server CPU {:.1}s  etcd CPU {:.1}s{extra}",
        p.time.as_secs_f64(),
        p.rss_kib as f64 / 1024.0,
        p.hwm_kib as f64 / 1024.0,
        p.atoll_cpu.as_secs_f64(),
        per(p.requests),
        per(p.reads),
        per(p.writes),
        p.apiserver_cpu.as_secs_f64(),
        p.etcd_cpu.as_secs_f64(),
    );
}

/// The three phases at size `n`, handed to `measured` when all ran, then
/// the namespace deleted whatever happened; `Err` says why the size does not
/// fit.
async fn size(
    client: &Client,
    n: usize,
    timeout: Duration,
    measured: impl FnOnce(Size),
) -> Result<(), String> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!("{n} Databases (load average {}):", load.join(" "));
    let ns = TestNamespace::new(client, "bench-scale").await;
    let name = ns.name().to_string();
    let result = phases(client, &name, n, timeout).await;
    let result = match result {
        Err(e) => Err(explain(client, e).await),
        Ok(size) => {
            measured(size);
            Ok(())
        }
    };
    println!("  deleting namespace {name}");
    ns.cleanup().await;
    let gone_within = timeout.max(Duration::from_secs(180));
    if !support::wait_namespace_gone_within(client, &name, gone_within).await {
        return Err(format!(
            "namespace {name} still terminating after {}s",
            gone_within.as_secs()
        ));
    }
    result
}

/// `error`, or that the control plane stopped answering if it did.
async fn explain(client: &Client, error: String) -> String {
    match tokio::time::timeout(Duration::from_secs(10), atoll_testenv::readyz(client)).await {
        Ok(Ok(body)) if body.trim() == "ok" => error,
        Ok(Ok(body)) => format!("{error} (the API server's /readyz says {body})"),
        Ok(Err(e)) => format!("{error} (the API server does not answer /readyz: {e})"),
        Err(_) => format!("{error} (the API server did not answer /readyz within 10s)"),
    }
}

async fn phases(client: &Client, ns: &str, n: usize, timeout: Duration) -> Result<Size, String> {
    let dbs: Api<Database> = Api::namespaced(client.clone(), ns);
    let log_dir = std::env::temp_dir();

    // 1. Converge.
    let first = Atoll::start(ns, log_dir.join(format!("atoll-scale-{ns}-1.log"))).await?;
    let tracker = Tracker::start(dbs.clone(), ready).await;
    let before = Before::take(Some(&first)).await;
    futures::stream::iter(0..n)
        .map(|i| {
            let dbs = &dbs;
            async move {
                dbs.create(&PostParams::default(), &database(i))
                    .await
                    .map_err(|e| format!("creating Database {i}: {e}"))
            }
        })
        .buffer_unordered(CREATES_IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await?;
    let end = tracker.wait(n, before.started + timeout, &first).await?;
    let converge = before.phase(&first, end).await;
    let work = Work::line(&first, &Work::default(), n).await?;
    print_phase(n, "converge", &converge, &work);

    // 2. Resync: a second process visits every Database once.
    first.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = Before::take(None).await;
    let second = Atoll::start(ns, log_dir.join(format!("atoll-scale-{ns}-2.log"))).await?;
    let serving = before.started.elapsed();
    let deadline = before.started + timeout;
    let end = loop {
        if second.metric("atoll_reconciles_total").await? >= n as u64 {
            break Instant::now();
        }
        second.alive(deadline)?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Until it is quiet, so the writes it makes late are counted.
    let mut last = second.metric("atoll_reconciles_total").await?;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = second.metric("atoll_reconciles_total").await?;
        if now == last {
            break;
        }
        last = now;
        second.alive(deadline)?;
    }
    let resync = before.phase(&second, end).await;
    let extra = format!(
        "\n           serving metrics after {:.1}s; reconciles {last}{}",
        serving.as_secs_f64(),
        Work::line(&second, &Work::default(), n).await?,
    );
    print_phase(n, "resync", &resync, &extra);
    let resynced = Work::take(&second).await?;

    // 3. Reload: a new raft release from a labelled ConfigMap.
    let wasm = std::fs::read(LABELLED).unwrap();
    let digest = Digest::of(&wasm).to_string();
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("raft-next".into());
    cm.metadata.labels = Some([("atoll.dev/plugin".to_string(), "raft".to_string())].into());
    cm.binary_data = Some([("plugin.wasm".to_string(), ByteString(wasm))].into());
    let tracker = Tracker::start(dbs.clone(), move |db| atoll_e2e::ready_on(db, &digest)).await;
    let before = Before::take(Some(&second)).await;
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .map_err(|e| format!("creating ConfigMap raft-next: {e}"))?;
    let end = tracker.wait(n, before.started + timeout, &second).await?;
    let reload = before.phase(&second, end).await;
    let work = Work::line(&second, &resynced, n).await?;
    print_phase(n, "reload", &reload, &work);

    second.stop().await;
    Ok(Size {
        n,
        phases: [
            ("converge", converge),
            ("resync", resync),
            ("reload", reload),
        ],
    })
}

/// Ratios to the smallest size, per phase.
fn ratios(results: &[Size]) {
    let Some(base) = results.first() else {
        return;
    };
    println!(
        "ratios to {} Databases (atoll RSS per Database at the phase's end, atoll CPU per Database in the phase; target <= 1.2):",
        base.n
    );
    for (i, (phase, _)) in base.phases.iter().enumerate() {
        let per_db = |s: &Size| {
            let p = &s.phases[i].1;
            (
                p.rss_kib as f64 / s.n as f64,
                p.atoll_cpu.as_secs_f64() / s.n as f64,
            )
        };
        let (rss0, cpu0) = per_db(base);
        let mut line = format!("  {phase:<8}");
        for (j, s) in results.iter().enumerate() {
            let (rss, cpu) = per_db(s);
            line.push_str(&format!(
                "  {}: RSS/DB {:.2}, CPU/DB {:.2}",
                s.n,
                rss / rss0,
                cpu / cpu0
            ));
            if let Some(prev) = j.checked_sub(1).map(|k| &results[k]) {
                let added = s.phases[i].1.rss_kib as f64 - prev.phases[i].1.rss_kib as f64;
                line.push_str(&format!(
                    " (+{:.1} KiB RSS per added DB)",
                    added / (s.n - prev.n) as f64
                ));
            }
        }
        println!("{line}");
    }
}

/// Counts the Databases of a namespace that satisfy a predicate, from a
/// watch (a LIST of thousands of Databases every poll would load the API
/// server more than what is measured).
struct Tracker {
    count: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Tracker {
    /// Start watching; returns once the initial list is in.
    async fn start(
        api: Api<Database>,
        predicate: impl Fn(&Database) -> bool + Send + 'static,
    ) -> Self {
        let (tx, count) = tokio::sync::watch::channel(0);
        let (listed_tx, listed) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut listed_tx = Some(listed_tx);
            let mut state: HashMap<String, bool> = HashMap::new();
            let mut stream =
                std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(db) | watcher::Event::InitApply(db)) => {
                        state.insert(db.name_any(), predicate(&db));
                    }
                    Ok(watcher::Event::Delete(db)) => {
                        state.remove(&db.name_any());
                    }
                    Ok(watcher::Event::Init) => state.clear(),
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = listed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Err(_) => continue, // retried with backoff
                }
                let _ = tx.send(state.values().filter(|v| **v).count());
            }
        });
        let _ = listed.await;
        Tracker { count, task }
    }

    /// Wait until `n` satisfy the predicate; when they did, or why not by
    /// `deadline` (`atoll` exited, or the time is up).
    async fn wait(mut self, n: usize, deadline: Instant, atoll: &Atoll) -> Result<Instant, String> {
        loop {
            if *self.count.borrow_and_update() >= n {
                self.task.abort();
                return Ok(Instant::now());
            }
            atoll
                .alive(deadline)
                .map_err(|e| format!("{e}; {} of {n} Databases there", *self.count.borrow()))?;
            let _ = tokio::time::timeout(Duration::from_secs(1), self.count.changed()).await;
        }
    }
}

/// `atoll run` over one namespace as a process, logging JSON to a file,
/// killed when dropped.
struct Atoll {
    process: KillOnDrop,
    metrics: SocketAddr,
    log: PathBuf,
}

impl Atoll {
    /// Spawn it and wait (up to 2 minutes) until it serves its metrics.
    async fn start(ns: &str, log: PathBuf) -> Result<Self, String> {
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = atoll_e2e::atoll_command(ns)
            .arg("--log-json")
            .env("RUST_LOG", "warn,atoll::serve=info")
            .stderr(file)
            .spawn()
            .map_err(|e| format!("spawning atoll: {e}"))?;
        let mut process = KillOnDrop(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(metrics) =
                atoll_e2e::logged_addr(&text, "serving /metrics, /healthz and /readyz")
            {
                return Ok(Atoll {
                    process,
                    metrics,
                    log,
                });
            }
            if let Some(status) = process.0.try_wait().unwrap() {
                return Err(format!("atoll exited ({status}) at start:\n{text}"));
            }
            if Instant::now() > deadline {
                return Err(format!("atoll served no metrics within 120s:\n{text}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.process.0.id()
    }

    fn cpu(&self) -> Duration {
        support::process_cpu(self.pid()).unwrap_or_default()
    }

    fn memory_kib(&self, field: &str) -> u64 {
        support::process_memory_kib(self.pid(), field).unwrap_or_default()
    }

    /// Ok while it runs and `deadline` is ahead.
    fn alive(&self, deadline: Instant) -> Result<(), String> {
        // `try_wait` needs `&mut`; /proc says as much without reaping.
        let state = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .ok()
            .and_then(|s| s[s.rfind(')')? + 2..].chars().next());
        if matches!(state, None | Some('Z')) {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            return Err(format!(
                "atoll exited; its log ({}):\n{log}",
                self.log.display()
            ));
        }
        if Instant::now() > deadline {
            return Err("timed out (ATOLL_BENCH_TIMEOUT_SECS)".into());
        }
        Ok(())
    }

    /// The sum of atoll's counter series whose line starts with `prefix`
    /// (a family name, or a name with its labels); 0 when none is recorded.
    async fn metric(&self, prefix: &str) -> Result<u64, String> {
        let text = atoll_e2e::metrics_text(self.metrics).await?;
        Ok(text
            .lines()
            .filter(|l| {
                l.strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum())
    }

    /// SIGTERM, and wait (up to 60 s) until it has exited.
    async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.process.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
