//! A private control plane: the same processes `cluster up` starts, in a
//! state directory and on ports of its own, owned by one caller and gone when
//! it is dropped.
//!
//! For tests that break the control plane on purpose (restarting the API
//! server): doing that to the shared one leaves kube-controller-manager and
//! kube-scheduler with stale caches that break every test running after it.
//! `atoll-testenv` wraps this for async tests.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::processes::{self, Proc, Recorder};
use super::{State, build, start};

/// A running control plane of the caller's own. Dropping it stops every
/// process (SIGKILL: nothing in it is worth a graceful shutdown) and removes
/// the state directory, except while panicking, when the directory is kept
/// for its logs (the next private control plane removes it). Its processes
/// are the caller's children in the caller's process group, so a Ctrl-C
/// that ends the caller ends them too.
pub struct PrivatePlane {
    state: State,
    recorder: Recorder,
    /// In start order: etcd, kube-apiserver, kube-controller-manager,
    /// kube-scheduler, kwok.
    procs: Vec<Proc>,
}

/// What [`PrivatePlane::restart_apiserver`] measured.
#[derive(Clone, Copy, Debug)]
pub struct Restart {
    /// From SIGTERM until the old process had exited.
    pub stopping: Duration,
    /// True when it had not exited within the grace period and got SIGKILL.
    pub killed: bool,
    /// From SIGTERM until the new process answered `/readyz` with `ok`: the
    /// time the API was unavailable.
    pub down: Duration,
}

const APISERVER: &str = "kube-apiserver";

impl PrivatePlane {
    /// Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler
    /// and kwok (three fake Nodes, a default StorageClass) exactly as
    /// `cargo xtask cluster up` does, in a fresh directory under the temp
    /// directory, and returns once Pods can run. Never builds: fails, naming
    /// `cargo xtask cluster up`, when the binaries are not cached yet.
    ///
    /// # Errors
    /// Binaries missing, a process that does not start, or a timeout.
    pub fn start() -> Result<Self> {
        let bins = build::built_binaries()?;
        remove_abandoned();
        let dir = std::env::temp_dir().join(format!(
            "{}{}-{}",
            prefix()?,
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir); // a previous process with this pid
        let state = State { dir };
        let mut recorder = Recorder::attached(state.pids_file());
        let started = Instant::now();
        match start::start(&state, &bins, &mut recorder) {
            Ok(procs) => {
                eprintln!(
                    "private control plane in {} ready in {:.1}s",
                    state.dir.display(),
                    started.elapsed().as_secs_f64()
                );
                Ok(Self {
                    state,
                    recorder,
                    procs,
                })
            }
            Err(err) => {
                // The processes that did start are only in the pids file now.
                let _ = processes::stop_all(&state.pids_file());
                Err(err.context(format!(
                    "starting a private control plane failed; logs are in {}",
                    state.dir.join("logs").display()
                )))
            }
        }
    }

    /// Admin kubeconfig (group `system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.state.kubeconfig()
    }

    /// The state directory (certificates, etcd data, `logs/`).
    pub fn dir(&self) -> &Path {
        &self.state.dir
    }

    /// Restarts kube-apiserver as a rolling update would: SIGTERM, SIGKILL
    /// if it is still shutting down after `grace` (with watches open its
    /// graceful shutdown takes about a minute), then the same binary with the
    /// same arguments and port. Returns once the new one answers `/readyz`.
    ///
    /// # Errors
    /// The old process cannot be signalled or the new one does not become ready.
    pub fn restart_apiserver(&mut self, grace: Duration) -> Result<Restart> {
        let i = self
            .procs
            .iter()
            .position(|p| p.name == APISERVER)
            .expect("a private control plane runs kube-apiserver");
        let old = &self.procs[i];
        let sigterm = Instant::now();
        old.signal(libc::SIGTERM);
        let killed = !old.wait_exit(grace);
        if killed {
            old.kill();
        }
        let stopping = sigterm.elapsed();
        let new = self.recorder.respawn(old)?;
        self.procs[i] = new;
        let kubeconfig = self.kubeconfig();
        start::wait_until(
            &[&self.procs[0], &self.procs[i]],
            "the restarted kube-apiserver's /readyz",
            Duration::from_secs(120),
            || start::readyz(&kubeconfig),
        )?;
        Ok(Restart {
            stopping,
            killed,
            down: sigterm.elapsed(),
        })
    }
}

impl Drop for PrivatePlane {
    fn drop(&mut self) {
        // Clients first, etcd last, as `cluster down` does.
        for p in self.procs.iter().rev() {
            p.kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "private control plane stopped; its logs are kept in {}",
                self.state.dir.join("logs").display()
            );
        } else if let Err(e) = fs::remove_dir_all(&self.state.dir) {
            eprintln!("removing {}: {e}", self.state.dir.display());
        }
    }
}

/// Distinguishes several private control planes of one process.
static SEQ: AtomicU32 = AtomicU32::new(0);

/// `atoll-testenv-<uid>-private-`: per user, like the shared state directory,
/// followed by the owning process's pid.
fn prefix() -> Result<String> {
    let uid = fs::metadata("/proc/self")
        .context("reading /proc/self")?
        .uid();
    Ok(format!("atoll-testenv-{uid}-private-"))
}

/// Stops the processes of, and removes, private control planes whose owner
/// is gone: killed by SIGKILL (a test timeout) before it could drop them, or
/// kept after a panic for their logs.
fn remove_abandoned() {
    let (Ok(prefix), Ok(entries)) = (prefix(), fs::read_dir(std::env::temp_dir())) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if owner == std::process::id() || process_exists(owner) {
            continue;
        }
        let dir = entry.path();
        if processes::stop_all(&dir.join("pids")).is_ok() {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// The pid runs and is not a zombie (an exited process nobody reaped).
fn process_exists(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
    })
}
