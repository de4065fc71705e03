//! `cargo xtask bench-startup`: how long `atoll run` takes from exec to
//! `/readyz` answering 200, with a cold and with a warm compiled-plugin cache.
//!
//! Builds `atoll` in release mode, starts (or reuses) the local control plane,
//! then runs `atoll run` once with an empty `--plugin-cache-dir` (every
//! built-in is compiled) and five times with the cache that run left (nothing
//! is compiled), each time polling `/readyz` every 2 ms and stopping atoll
//! with SIGTERM once it answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::cluster;

const WARM_RUNS: usize = 5;

pub fn run() -> Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is inside the workspace");
    let cluster = cluster::ensure_up()?;
    let status = xtask::nested_cargo()
        .current_dir(workspace)
        .args(["build", "--release", "-p", "atoll"])
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "cargo build --release -p atoll failed");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    };
    let atoll = target.join("release").join("atoll");

    let cache = std::env::temp_dir().join(format!("atoll-startup-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let cold = time_to_ready(&atoll, &cluster.kubeconfig, &cache)?;
    let mut warm = Vec::new();
    for _ in 0..WARM_RUNS {
        warm.push(time_to_ready(&atoll, &cluster.kubeconfig, &cache)?);
    }
    let _ = std::fs::remove_dir_all(&cache);
    if cluster.started_here {
        cluster::down()?;
    }
    warm.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("atoll run -> /readyz 200 (release build, five built-in plugins)");
    println!("  cold cache: {:.0} ms", ms(cold));
    println!(
        "  warm cache: median {:.0} ms (min {:.0}, max {:.0}, {WARM_RUNS} runs)",
        ms(warm[WARM_RUNS / 2]),
        ms(warm[0]),
        ms(warm[WARM_RUNS - 1])
    );
    println!("  cold / warm: {:.1}x", ms(cold) / ms(warm[WARM_RUNS / 2]));
    Ok(())
}

fn time_to_ready(atoll: &Path, kubeconfig: &Path, cache: &Path) -> Result<Duration> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let started = Instant::now();
    let mut child = Command::new(atoll)
        .args([
            "run",
            "--namespace=atoll-bench-startup",
            "--plugin-namespace=atoll-bench-startup",
        ])
        .arg(format!("--metrics-addr=127.0.0.1:{port}"))
        .arg("--plugin-cache-dir")
        .arg(cache)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", atoll.display()))?;
    let result = loop {
        if ready(port) {
            break Ok(started.elapsed());
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!(
                "atoll exited before it was ready: {status}"
            ));
        }
        if started.elapsed() > Duration::from_secs(120) {
            break Err(anyhow::anyhow!("atoll was not ready within 120s"));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    xtask::signal(child.id() as i32, libc::SIGTERM);
    let status = child.wait()?;
    if result.is_ok() && !status.success() {
        bail!("atoll exited with {status} after SIGTERM");
    }
    result
}

/// `GET /readyz` answers 200.
fn ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let request = "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}
