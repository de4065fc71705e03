//! `cargo xtask cluster up|down|env`: a real, local Kubernetes control plane.
//!
//! etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok and
//! CoreDNS run as plain processes on 127.0.0.1, built from the Go module proxy
//! on first use (see the `build` module). kwok plays the kubelet for three fake Nodes, so Pods are
//! scheduled and turn Running and Ready without containers, and provisions
//! claims of the default StorageClass `kwok-volume` (no storage behind them).
//! CoreDNS serves `cluster.local` from the API server on a loopback port
//! (see the `dns` module); `env` prints it as `ATOLL_TESTENV_DNS`. Two OCI
//! registries (CNCF Distribution, one anonymous, one with basic auth) serve
//! plain HTTP on loopback ports (see the `registry` module); `env` prints
//! them as `ATOLL_TESTENV_REGISTRY*`.
//!
//! Everything a running control plane owns lives in one state directory
//! (`/tmp/atoll-testenv-$UID`, or `$ATOLL_TESTENV_DIR`): certificates, the
//! admin kubeconfig, etcd's data, one log per process and the pids file that
//! `down` uses to stop exactly what `up` started. `atoll-testenv` (the Rust
//! test-support crate) finds the kubeconfig at the same well-known path.
//!
//! [`PrivatePlane`] starts the same processes (but not CoreDNS) in a
//! directory and on ports of a caller's own, for tests that must not disturb
//! the shared control plane.

mod build;
mod certs;
mod dns;
mod private;
mod processes;
mod registry;
mod start;

pub use private::{PrivatePlane, Restart};
pub use registry::{
    REGISTRY_AUTH_ENV, REGISTRY_ENV, REGISTRY_PASSWORD_ENV, REGISTRY_USER_ENV, Registries,
};

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[derive(clap::Subcommand)]
pub enum ClusterCmd {
    /// Build what is missing, start the control plane (or reuse a running
    /// one, adding CoreDNS and the registries if it lacks them) and print
    /// `export KUBECONFIG=...`, `export ATOLL_TESTENV_DNS=...` and the
    /// registries' `export ATOLL_TESTENV_REGISTRY*=...` on stdout.
    Up,
    /// Stop the processes `up` started, wait for them to exit and remove the state directory.
    Down,
    /// Print `export KUBECONFIG=...` (and `export ATOLL_TESTENV_DNS=...`
    /// when CoreDNS runs) for the running control plane; fails if none is running.
    Env,
    /// Start (or reuse) only the two test registries in the state directory
    /// and print their `export ATOLL_TESTENV_REGISTRY*=...`. Needs no control
    /// plane: with `ATOLL_TESTENV_DIR` it gives a private pair of registries
    /// (stop them with `cluster down` on the same directory).
    Registry,
}

/// A control plane that answers `/readyz`.
pub struct Cluster {
    /// Admin kubeconfig (client certificate in group `system:masters`).
    pub kubeconfig: PathBuf,
    /// CoreDNS serving `cluster.local` from this control plane, `127.0.0.1:<port>`.
    pub dns: String,
    /// The OCI registries beside it.
    pub registries: Registries,
    /// True when this call started the processes; false when it reused running ones.
    pub started_here: bool,
}

/// The variable tests read CoreDNS's address from (`atoll-testenv` also
/// finds it in the state directory).
pub const DNS_ENV: &str = "ATOLL_TESTENV_DNS";

/// `cargo xtask cluster up|down|env`.
///
/// # Errors
/// As [`ensure_up`] and [`down`].
pub fn run(cmd: ClusterCmd) -> Result<()> {
    match cmd {
        ClusterCmd::Up => {
            let cluster = ensure_up()?;
            println!("export KUBECONFIG={}", cluster.kubeconfig.display());
            println!("export {DNS_ENV}={}", cluster.dns);
            print_registries(&cluster.registries);
        }
        ClusterCmd::Down => down()?,
        ClusterCmd::Env => {
            let state = State::locate()?;
            if !state.is_running() {
                bail!(
                    "no control plane is running in {} (start one with `cargo xtask cluster up`)",
                    state.dir.display()
                );
            }
            println!("export KUBECONFIG={}", state.kubeconfig().display());
            match dns::running(&state) {
                Some(address) => println!("export {DNS_ENV}={address}"),
                None => eprintln!(
                    "CoreDNS is not running beside this control plane; `cargo xtask cluster up` starts it"
                ),
            }
            match registry::running(&state) {
                Some(registries) => print_registries(&registries),
                None => eprintln!(
                    "the OCI registries are not running beside this control plane; `cargo xtask cluster up` starts them"
                ),
            }
        }
        ClusterCmd::Registry => {
            let state = State::locate()?;
            let _lock = state.lock()?;
            print_registries(&registry::ensure(&state)?);
        }
    }
    Ok(())
}

fn print_registries(registries: &Registries) {
    for (key, value) in registries.env() {
        println!("export {key}={value}");
    }
}

/// Reuses the running control plane, or builds what is missing and starts one.
///
/// # Errors
/// A build fails, or a process does not start or become ready.
pub fn ensure_up() -> Result<Cluster> {
    let state = State::locate()?;
    let _lock = state.lock()?;
    if state.is_running() {
        eprintln!("control plane already running in {}", state.dir.display());
        // A control plane started before CoreDNS was part of it gets it now.
        let dns = dns::ensure(&state)?;
        let registries = registry::ensure(&state)?;
        return Ok(Cluster {
            kubeconfig: state.kubeconfig(),
            dns,
            registries,
            started_here: false,
        });
    }
    // Leftovers of a crashed or half-started control plane: stop what is still
    // ours and start from a clean directory.
    if state.dir.exists() {
        dns::stop(&state)?;
        registry::stop(&state)?;
        processes::stop_all(&state.pids_file())?;
        fs::remove_dir_all(&state.dir)
            .with_context(|| format!("removing stale state {}", state.dir.display()))?;
    }
    let bins = build::ensure_binaries()?;
    let started = Instant::now();
    let mut recorder = processes::Recorder::detached(state.pids_file());
    let started_all = start::start(&state, &bins, &mut recorder)
        .and_then(|_| Ok((dns::ensure(&state)?, registry::ensure(&state)?)));
    let (dns, registries) = match started_all {
        Ok(started) => started,
        Err(err) => {
            // Stop whatever did start but keep the directory: its logs explain the failure.
            let _ = dns::stop(&state);
            let _ = registry::stop(&state);
            let _ = processes::stop_all(&state.pids_file());
            return Err(err.context(format!(
                "starting the control plane failed; logs are in {}",
                state.dir.join("logs").display()
            )));
        }
    };
    eprintln!(
        "control plane ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(Cluster {
        kubeconfig: state.kubeconfig(),
        dns,
        registries,
        started_here: true,
    })
}

/// Stops the processes `up` recorded, waits for them to exit and removes the
/// state directory. Succeeds when nothing is running.
///
/// # Errors
/// The state directory cannot be read or removed.
pub fn down() -> Result<()> {
    let state = State::locate()?;
    let _lock = state.lock()?;
    if !state.dir.exists() {
        eprintln!("no control plane state in {}", state.dir.display());
        return Ok(());
    }
    dns::stop(&state)?;
    registry::stop(&state)?;
    processes::stop_all(&state.pids_file())?;
    fs::remove_dir_all(&state.dir).with_context(|| format!("removing {}", state.dir.display()))?;
    eprintln!("control plane stopped; removed {}", state.dir.display());
    Ok(())
}

/// The state directory and the files in it.
struct State {
    dir: PathBuf,
}

impl State {
    /// `$ATOLL_TESTENV_DIR`, else `/tmp/atoll-testenv-$UID`. The per-user name
    /// keeps users of a shared machine apart; `atoll-testenv` computes the same path.
    fn locate() -> Result<Self> {
        let dir = match std::env::var_os("ATOLL_TESTENV_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => {
                let uid = fs::metadata("/proc/self")
                    .context("reading /proc/self")?
                    .uid();
                std::env::temp_dir().join(format!("atoll-testenv-{uid}"))
            }
        };
        // Kubeconfigs and pid records hold absolute paths.
        let dir = std::env::current_dir()?.join(dir);
        Ok(Self { dir })
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    fn pids_file(&self) -> PathBuf {
        self.dir.join("pids")
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    /// Serialises `up` and `down` across processes (two `cargo xtask test`
    /// runs must not both start a control plane). The lock file sits beside
    /// the state directory because `down` removes the directory.
    fn lock(&self) -> Result<File> {
        let mut name = self.dir.clone().into_os_string();
        name.push(".lock");
        let file = File::create(&name).with_context(|| format!("creating {name:?}"))?;
        file.lock().with_context(|| format!("locking {name:?}"))?;
        Ok(file)
    }

    /// Every recorded process is alive and the API server says it is ready.
    /// A busy API server gets 30 seconds to answer before the control plane
    /// counts as broken, since `ensure_up` replaces a broken one.
    fn is_running(&self) -> bool {
        if !processes::all_alive(&self.pids_file()) {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if start::readyz(&self.kubeconfig()).is_ok() {
                return true;
            }
            if Instant::now() >= deadline || !processes::all_alive(&self.pids_file()) {
                return false;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}
