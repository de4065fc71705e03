//! Restarting the control plane's API server, for tests of what survives it.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::Client;

use crate::{readyz, state_dir, wait_for};

/// Stops the kube-apiserver that `cargo xtask cluster up` started (SIGTERM,
/// as a rolling restart does, and SIGKILL if it is still shutting down after
/// 15 s), starts it again with the same arguments,
/// records the new pid in the pids file (so `cluster down` stops it), and
/// returns once `/readyz` answers `ok`, with how long the API was down.
///
/// Panics, saying why, when the control plane was not started by
/// `cargo xtask cluster up` or the API server does not come back.
pub async fn restart_apiserver(client: &Client) -> Duration {
    let dir = state_dir();
    let pids_file = dir.join("pids");
    let pids = std::fs::read_to_string(&pids_file).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e} (start the control plane with `cargo xtask cluster up`)",
            pids_file.display()
        )
    });
    let (pid, bin) = pids
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?, f.next()?, f.next()?))
        })
        .find(|(_, name, _)| *name == "kube-apiserver")
        .map(|(pid, _, bin)| (pid.parse::<i32>().expect("a pid"), bin.to_string()))
        .unwrap_or_else(|| panic!("no kube-apiserver in {}", pids_file.display()));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_else(|e| panic!("kube-apiserver (pid {pid}) is not running: {e}"));
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .skip(1)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();

    let down = Instant::now();
    // SAFETY: kill(2) on the pid the pids file records for the API server.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    // Its graceful shutdown waits up to a minute for long-running requests
    // (watches); a restart need not wait that long.
    if !wait_gone(pid, Duration::from_secs(15)) {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        assert!(
            wait_gone(pid, Duration::from_secs(30)),
            "kube-apiserver (pid {pid}) survived SIGKILL"
        );
    }

    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("logs").join("kube-apiserver.log"))
        .expect("opening the API server's log");
    let child = Command::new(&bin)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        // Like `cluster up`: its own process group, outliving this test.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("restarting {bin}: {e}"));
    let new_pid = child.id();
    // Reaped here should it exit while this process lives; otherwise it
    // outlives the test, like the rest of the control plane.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    let updated: String = pids
        .lines()
        .map(|l| {
            if l.split('\t').nth(1) == Some("kube-apiserver") {
                format!("{new_pid}\tkube-apiserver\t{bin}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let tmp = pids_file.with_extension("tmp");
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(updated.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &pids_file))
        .expect("recording the restarted API server's pid");

    wait_for(
        "the restarted API server to be ready",
        Duration::from_secs(120),
        || async {
            match readyz(client).await {
                Ok(text) if text == "ok" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    down.elapsed()
}

/// Waits up to `limit` for `pid` to exit; a zombie counts as exited (its
/// parent, `cluster up`, is gone and nothing may reap it).
fn wait_gone(pid: i32, limit: Duration) -> bool {
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
    };
    let deadline = Instant::now() + limit;
    while !gone() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    gone()
}
