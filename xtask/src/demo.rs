//! `cargo xtask demo`: atoll reconciling the examples on the local control plane.
//!
//! Starts (or reuses) the control plane, builds `atoll`, installs the CRDs,
//! starts `atoll run --namespace default` in the background, applies
//! `examples/` to the `default` namespace, waits until every example
//! Database is Ready and prints what atoll made. atoll keeps running
//! afterwards, so the demo can be explored with kubectl; the command to stop
//! it is printed at the end.
//!
//! The demo's atoll is not one of the control plane's processes: it is not
//! in the pids file (so `cargo xtask cluster up/down` behave exactly as
//! without it, and `down` does not stop it). Its log goes to
//! `<state dir>/logs/atoll-demo.log`; its pid file sits beside the state
//! directory (`<state dir>.demo-atoll.pid`, like the `.lock` file), so it
//! survives a `cluster down` and the next demo still finds and stops it.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::cluster;

/// Where the examples go.
const NAMESPACE: &str = "default";
/// How long the example Databases get to become Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub fn run() -> Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is inside the workspace");
    let cluster = cluster::ensure_up()?;
    let kubeconfig = cluster.kubeconfig.clone();
    let state_dir = kubeconfig
        .parent()
        .context("the kubeconfig lives in the state directory")?
        .to_path_buf();
    let kubectl = Kubectl {
        kubeconfig: kubeconfig.clone(),
        workspace: workspace.to_path_buf(),
    };

    step("building atoll (cargo build -p atoll)");
    let status = xtask::nested_cargo()
        .current_dir(workspace)
        .args(["build", "-p", "atoll"])
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "cargo build -p atoll failed");
    let atoll = target_dir(workspace).join("debug").join("atoll");
    ensure!(atoll.is_file(), "{} was not built", atoll.display());

    step("installing the CRDs (deploy/crds/)");
    kubectl.run(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "deploy/crds/",
    ])?;
    kubectl.run(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "-f",
        "deploy/crds/",
    ])?;

    let pid_file = sibling(&state_dir, ".demo-atoll.pid");
    stop_previous(&pid_file)?;

    step("starting atoll run");
    let log = state_dir.join("logs").join("atoll-demo.log");
    fs::create_dir_all(state_dir.join("logs"))?;
    let pid = start_atoll(&atoll, &kubeconfig, &log)?;
    fs::write(&pid_file, format!("{pid}\t{}\n", atoll.display()))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    eprintln!("atoll is running as pid {pid}; log: {}", log.display());

    step(&format!("applying examples/ to namespace {NAMESPACE}"));
    let applied = kubectl.run(&["apply", "-n", NAMESPACE, "-f", "examples/", "-o", "name"])?;
    let databases: Vec<String> = applied
        .lines()
        .filter_map(|line| line.trim().strip_prefix("database.atoll.dev/"))
        .map(str::to_owned)
        .collect();
    ensure!(
        !databases.is_empty(),
        "examples/ holds no Database (kubectl printed: {applied})"
    );
    eprintln!("Databases: {}", databases.join(", "));

    step(&format!(
        "waiting up to {}s for every Database to be Ready",
        READY_TIMEOUT.as_secs()
    ));
    let waited = wait_ready(&kubectl, &databases, pid, &log);

    println!();
    let table = kubectl.run(&[
        "get",
        "-n",
        NAMESPACE,
        "databases,partitions,statefulsets,services",
    ]);
    match &table {
        Ok(table) => print!("{table}"),
        Err(e) => eprintln!("{e:#}"),
    }
    println!();
    println!(
        "atoll keeps running (pid {pid}); its log: {}",
        log.display()
    );
    println!("  export KUBECONFIG={}", kubeconfig.display());
    let hints = [
        (
            format!("kubectl get databases -n {NAMESPACE} -w"),
            "watch it reconcile",
        ),
        (format!("tail -f {}", log.display()), "follow atoll's log"),
        (
            format!("kill {pid}"),
            "stop atoll (rerunning the demo restarts it)",
        ),
        (
            format!("kubectl delete -n {NAMESPACE} -f examples/"),
            "remove the demo Databases and all atoll made for them",
        ),
    ];
    let width = hints.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    for (command, what) in &hints {
        println!("  {command:<width$}  # {what}");
    }
    println!("`cargo xtask cluster down` stops the control plane but not atoll; stop atoll first.");
    waited?;
    table.map(drop)
}

/// The target directory cargo builds into: `$CARGO_TARGET_DIR` (relative to
/// the workspace) or `target/`.
fn target_dir(workspace: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    }
}

/// `<dir><suffix>`: a file beside `dir`, not in it.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn step(what: &str) {
    eprintln!("\n=== {what}");
}

/// Stops the atoll a previous demo started, if the pid file names a process
/// that is still that atoll binary (a recycled pid is left alone).
fn stop_previous(pid_file: &Path) -> Result<()> {
    let Ok(text) = fs::read_to_string(pid_file) else {
        return Ok(());
    };
    let mut fields = text.trim().splitn(2, '\t');
    let (Some(pid), Some(binary)) = (fields.next(), fields.next()) else {
        fs::remove_file(pid_file)?;
        return Ok(());
    };
    let pid: i32 = pid.parse().unwrap_or(0);
    if pid > 0 && is_binary(pid, Path::new(binary)) {
        eprintln!("stopping the previous demo's atoll (pid {pid})");
        xtask::signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while is_binary(pid, Path::new(binary)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if is_binary(pid, Path::new(binary)) {
            eprintln!("atoll (pid {pid}) ignored SIGTERM for 15s; killing it");
            xtask::signal(pid, libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    fs::remove_file(pid_file)?;
    Ok(())
}

/// Whether `pid` is alive and runs `binary` (also when the file was replaced
/// by a rebuild since: the kernel then reports it as `<path> (deleted)`).
fn is_binary(pid: i32, binary: &Path) -> bool {
    let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    let exe = exe.to_string_lossy();
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe);
    // A zombie (exited, not yet reaped) has no exe link, so it reads as gone.
    Path::new(exe) == binary
}

/// Starts `atoll run` detached from this command (own process group, so a
/// Ctrl-C here does not reach it), logging to `log`. Returns its pid.
fn start_atoll(atoll: &Path, kubeconfig: &Path, log: &Path) -> Result<u32> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    // Free loopback port for /metrics, /healthz and /readyz: the default
    // (0.0.0.0:8080) may be taken, and a demo need not listen on every interface.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let args = [
        "run".to_owned(),
        // Only the demo's namespace: tests running on the same control plane
        // (`cargo xtask test`) run their own controllers in their own namespaces.
        format!("--namespace={NAMESPACE}"),
        format!("--metrics-addr=127.0.0.1:{port}"),
        // As in the Deployment: should an earlier demo's atoll still be
        // running (its pid file lost), the two never reconcile at once.
        "--leader-elect".to_owned(),
        format!("--leader-election-namespace={NAMESPACE}"),
    ];
    let child = Command::new(atoll)
        .args(&args)
        .env("KUBECONFIG", kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        // What the downward API gives the in-cluster pods: the instance name
        // on Events and the leader election identity.
        .env("POD_NAME", "atoll-demo")
        // A plain-text log file, without terminal colour codes.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", atoll.display()))?;
    // Not waited for: it outlives this command (init reaps it when it exits).
    Ok(child.id())
}

/// Polls the Ready condition of `databases` until all are True. Fails early
/// when atoll exits, and on timeout with what it saw last and atoll's log.
fn wait_ready(kubectl: &Kubectl, databases: &[String], pid: u32, log: &Path) -> Result<()> {
    // Text outside braces (the tabs and newline) is printed as it is.
    let jsonpath = "jsonpath={range .items[*]}{.metadata.name}\t\
        {.status.conditions[?(@.type==\"Ready\")].status}\t\
        {.status.conditions[?(@.type==\"Ready\")].reason}\t\
        {.status.conditions[?(@.type==\"Ready\")].message}\n{end}";
    let started = Instant::now();
    let deadline = started + READY_TIMEOUT;
    let mut last_report = String::new();
    loop {
        if fs::metadata(format!("/proc/{pid}")).is_err() || is_zombie(pid) {
            bail!("atoll (pid {pid}) exited; {}", log_tail(log, 30).trim_end());
        }
        let seen = kubectl.run(&["get", "databases", "-n", NAMESPACE, "-o", jsonpath]);
        let (ready, report) = match &seen {
            Ok(text) => summarize(text, databases),
            Err(e) => (false, format!("  kubectl failed: {e:#}")),
        };
        if ready {
            eprintln!(
                "every Database is Ready after {:.0}s:\n{report}",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if report != last_report {
            eprintln!("[{:>3.0}s]\n{report}", started.elapsed().as_secs_f64());
            last_report = report.clone();
        }
        if Instant::now() >= deadline {
            bail!(
                "not every Database became Ready within {}s; last seen:\n{report}\n{}",
                READY_TIMEOUT.as_secs(),
                log_tail(log, 30).trim_end()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// `(all Ready, one line per Database)` from the jsonpath output
/// (`name<TAB>status<TAB>reason<TAB>message` lines).
fn summarize(text: &str, databases: &[String]) -> (bool, String) {
    let mut all_ready = true;
    let mut report = String::new();
    for db in databases {
        let line = text
            .lines()
            .find(|l| l.split('\t').next() == Some(db.as_str()));
        let fields: Vec<&str> = line.map(|l| l.split('\t').collect()).unwrap_or_default();
        let field = |i: usize| fields.get(i).copied().unwrap_or("").trim();
        let status = match (line, field(1)) {
            (None, _) => "missing",
            (Some(_), "") => "no Ready condition yet",
            (Some(_), s) => s,
        };
        all_ready &= status == "True";
        report.push_str(&format!("  {db:<16} Ready={status}"));
        if !field(2).is_empty() {
            report.push_str(&format!(" {}: {}", field(2), field(3)));
        }
        report.push('\n');
    }
    (all_ready, report.trim_end().to_owned())
}

/// `Z` in `/proc/<pid>/stat`: exited but not yet reaped by its new parent.
fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn log_tail(log: &Path, n: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "last lines of {}:\n{}\n",
        log.display(),
        lines[lines.len().saturating_sub(n)..].join("\n")
    )
}

/// kubectl against the local control plane, run from the workspace.
struct Kubectl {
    kubeconfig: PathBuf,
    workspace: PathBuf,
}

impl Kubectl {
    /// Runs kubectl and returns its stdout; fails with its stderr.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(&self.workspace)
            .stdin(Stdio::null())
            .output()
            .context("running kubectl (is it installed?)")?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
