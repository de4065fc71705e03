//! CoreDNS beside the control plane: the cluster DNS a real cluster runs,
//! serving `cluster.local` from the API server through CoreDNS's
//! `kubernetes` plugin, so tests resolve Service names (A and SRV records)
//! exactly as Pods would.
//!
//! It listens on a loopback port (UDP and TCP) and keeps its own files in
//! `<state>/coredns/`: the Corefile, a pids file of its own and `address`
//! (`127.0.0.1:<port>`, written once it is ready). Its own pids file lets
//! `up` add CoreDNS to a control plane started before CoreDNS was part of
//! it, without restarting anything else.

use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::processes::{self, Recorder};
use super::{State, build, start};

/// Where CoreDNS's files live in a state directory.
fn dir(state: &State) -> PathBuf {
    state.dir.join("coredns")
}

fn pids_file(state: &State) -> PathBuf {
    dir(state).join("pids")
}

fn address_file(state: &State) -> PathBuf {
    dir(state).join("address")
}

/// The address of the CoreDNS running for `state`, if it runs and answers
/// its readiness probe.
pub(super) fn running(state: &State) -> Option<String> {
    if !processes::all_alive_of(&pids_file(state), 1) {
        return None;
    }
    let address = fs::read_to_string(address_file(state)).ok()?;
    let ready = fs::read_to_string(dir(state).join("ready-port")).ok()?;
    let ready: u16 = ready.trim().parse().ok()?;
    ready_probe(ready).ok()?;
    Some(address.trim().to_owned())
}

/// Returns the address of CoreDNS for `state`'s control plane, starting it
/// (and building it on first use) when it is not running. Touches no other
/// process.
///
/// # Errors
/// The build fails, or CoreDNS does not start or become ready within a minute.
pub(super) fn ensure(state: &State) -> Result<String> {
    if let Some(address) = running(state) {
        return Ok(address);
    }
    // A CoreDNS that died or never got ready: stop what is left of it only.
    processes::stop_all(&pids_file(state))?;
    let dir = dir(state);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::create_dir_all(state.dir.join("logs"))?;
    let bin = build::ensure_coredns()?;

    let (dns, ready) = pick_ports()?;
    let corefile = dir.join("Corefile");
    fs::write(&corefile, corefile_text(dns, ready, &state.kubeconfig()))
        .with_context(|| format!("writing {}", corefile.display()))?;
    eprintln!("starting CoreDNS on 127.0.0.1:{dns} (UDP and TCP)");
    let mut recorder = Recorder::detached(pids_file(state));
    let proc = recorder.spawn(
        "coredns",
        &bin,
        &state.log("coredns"),
        &["-conf".into(), corefile.display().to_string()],
    )?;
    // `ready` answers 200 once every plugin is: for `kubernetes`, once its
    // informers synced Services, EndpointSlices and Namespaces.
    start::wait_until(&[&proc], "CoreDNS /ready", Duration::from_secs(60), || {
        ready_probe(ready)
    })?;
    let address = format!("127.0.0.1:{dns}");
    fs::write(dir.join("ready-port"), ready.to_string())?;
    fs::write(address_file(state), &address)?;
    Ok(address)
}

/// Stops CoreDNS for `state` if it runs (the rest of the control plane is
/// `down`'s business).
///
/// # Errors
/// Its pids file cannot be read.
pub(super) fn stop(state: &State) -> Result<()> {
    processes::stop_all(&pids_file(state))
}

/// Serve the cluster zones (and reverse lookups) from the API server with
/// the admin kubeconfig; `log` records every query in CoreDNS's log, which
/// is what a failing DNS test wants to read.
fn corefile_text(dns: u16, ready: u16, kubeconfig: &Path) -> String {
    format!(
        ".:{dns} {{
    bind 127.0.0.1
    errors
    log
    ready 127.0.0.1:{ready}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods disabled
    }}
}}
",
        kubeconfig = kubeconfig.display()
    )
}

/// A port free for both UDP and TCP on loopback, and one for the readiness probe.
fn pick_ports() -> Result<(u16, u16)> {
    for _ in 0..20 {
        let tcp = TcpListener::bind("127.0.0.1:0").context("picking a loopback port")?;
        let port = tcp.local_addr()?.port();
        let Ok(_udp) = UdpSocket::bind(("127.0.0.1", port)) else {
            continue;
        };
        let ready = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if ready != port {
            return Ok((port, ready));
        }
    }
    anyhow::bail!("found no loopback port free for both UDP and TCP in 20 tries")
}

/// `GET /ready` on CoreDNS's `ready` plugin: 200 when every plugin is ready,
/// 503 naming those that are not.
fn ready_probe(port: u16) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    conn.write_all(b"GET /ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    if response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(response)
    }
}
