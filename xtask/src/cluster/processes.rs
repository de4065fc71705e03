//! Starting the control-plane processes, and stopping exactly those again.
//!
//! Each started process is appended to the pids file as `pid<TAB>name<TAB>binary`
//! the moment it is spawned, so even a half-finished `up` can be cleaned up.
//! A process started again (a private control plane's restarted API server)
//! gets a line of its own; the exited one's line stays and is skipped.
//! A pid alone is not trusted: before signalling, `/proc/<pid>/exe` must still
//! be the binary we started, so a recycled pid never gets a signal from us.

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The number of processes a complete control plane runs.
const EXPECTED: usize = 5;

/// A process started by `up` or for a private control plane, with what it
/// takes to start it again.
pub struct Proc {
    pub name: String,
    child: RefCell<Child>,
    log: PathBuf,
    bin: PathBuf,
    args: Vec<String>,
}

impl Proc {
    /// Sends `sig` to the process unless it has exited (and been reaped) already.
    pub fn signal(&self, sig: i32) {
        if self.exited().is_none() {
            crate::signal(self.child.borrow().id() as i32, sig);
        }
    }

    /// Waits up to `timeout` for the process to exit; true when it did.
    /// `try_wait` reaps it, so it never lingers as a zombie.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.exited().is_none() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// SIGKILL and reap.
    pub fn kill(&self) {
        let mut child = self.child.borrow_mut();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The exit status if the process has already exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child.borrow_mut().try_wait().ok().flatten()
    }

    /// The last `n` lines of the process's log, headed by its path.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(n)..].join("\n");
        format!("--- last lines of {} ---\n{tail}\n", self.log.display())
    }
}

/// Spawns processes and records them in the pids file.
pub struct Recorder {
    pids_file: PathBuf,
    detached: bool,
}

impl Recorder {
    /// For `cluster up`: each process in a process group of its own, so the
    /// control plane outlives the command and a Ctrl-C in the terminal that
    /// ran `up` does not reach it.
    pub fn detached(pids_file: PathBuf) -> Self {
        Self {
            pids_file,
            detached: true,
        }
    }

    /// For a private control plane: processes stay in the caller's process
    /// group, so a Ctrl-C that ends the caller (skipping its cleanup) ends
    /// them too.
    pub fn attached(pids_file: PathBuf) -> Self {
        Self {
            pids_file,
            detached: false,
        }
    }

    pub fn spawn(&mut self, name: &str, bin: &Path, log: &Path, args: &[String]) -> Result<Proc> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        self.spawn_logging_to(out, name, bin, log, args)
    }

    /// Starts `proc`'s binary again with the same arguments (after it
    /// exited), appending to the same log so both runs can be read.
    pub fn respawn(&mut self, proc: &Proc) -> Result<Proc> {
        let out = OpenOptions::new()
            .append(true)
            .open(&proc.log)
            .with_context(|| format!("opening {}", proc.log.display()))?;
        self.spawn_logging_to(out, &proc.name, &proc.bin, &proc.log, &proc.args)
    }

    fn spawn_logging_to(
        &mut self,
        out: File,
        name: &str,
        bin: &Path,
        log: &Path,
        args: &[String],
    ) -> Result<Proc> {
        let mut command = Command::new(bin);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if self.detached {
            command.process_group(0);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut pids = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.pids_file)?;
        writeln!(pids, "{}\t{name}\t{}", child.id(), bin.display())?;
        Ok(Proc {
            name: name.to_owned(),
            child: RefCell::new(child),
            log: log.to_owned(),
            bin: bin.to_owned(),
            args: args.to_vec(),
        })
    }
}

struct Record {
    pid: i32,
    name: String,
    bin: PathBuf,
}

fn records(pids_file: &Path) -> Result<Vec<Record>> {
    let text = match fs::read_to_string(pids_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", pids_file.display())),
    };
    text.lines()
        .map(|line| {
            let mut f = line.splitn(3, '\t');
            let (Some(pid), Some(name), Some(bin)) = (f.next(), f.next(), f.next()) else {
                anyhow::bail!("malformed line in {}: {line:?}", pids_file.display());
            };
            Ok(Record {
                pid: pid.parse()?,
                name: name.to_owned(),
                bin: bin.into(),
            })
        })
        .collect()
}

/// True when the pid still runs the binary we started (and is not a zombie).
fn alive(r: &Record) -> bool {
    let Ok(exe) = fs::read_link(format!("/proc/{}/exe", r.pid)) else {
        return false;
    };
    // A binary replaced on disk (rebuilt cache) shows as "<path> (deleted)".
    let exe = exe.to_string_lossy();
    let ours = exe == r.bin.to_string_lossy() || exe == format!("{} (deleted)", r.bin.display());
    let stat = fs::read_to_string(format!("/proc/{}/stat", r.pid)).unwrap_or_default();
    // The state letter follows the parenthesised command name.
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    ours && !zombie
}

/// A complete control plane was recorded and all of it is still running.
pub fn all_alive(pids_file: &Path) -> bool {
    all_alive_of(pids_file, EXPECTED)
}

/// Exactly `expected` processes were recorded in `pids_file` and all still run.
pub fn all_alive_of(pids_file: &Path, expected: usize) -> bool {
    records(pids_file).is_ok_and(|rs| rs.len() == expected && rs.iter().all(alive))
}

/// Stops every recorded process that is still ours, newest first (so etcd,
/// started first, goes last and the API server can shut down cleanly), and
/// waits for each to exit: SIGTERM, then SIGKILL after a grace period.
pub fn stop_all(pids_file: &Path) -> Result<()> {
    for r in records(pids_file)?.iter().rev() {
        if !alive(r) {
            continue;
        }
        eprintln!("stopping {} (pid {})", r.name, r.pid);
        crate::signal(r.pid, libc::SIGTERM);
        if !wait_gone(r, Duration::from_secs(20)) {
            eprintln!("{} did not exit after SIGTERM; sending SIGKILL", r.name);
            crate::signal(r.pid, libc::SIGKILL);
            anyhow::ensure!(
                wait_gone(r, Duration::from_secs(10)),
                "{} (pid {}) survived SIGKILL",
                r.name,
                r.pid
            );
        }
    }
    Ok(())
}

fn wait_gone(r: &Record, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(r) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}
