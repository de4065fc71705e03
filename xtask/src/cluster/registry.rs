//! Two OCI registries beside the control plane, for plugins shipped as OCI
//! artifacts: the CNCF Distribution registry (`cmd/registry`, built from the
//! Go module proxy), once anonymous and once behind htpasswd basic auth.
//!
//! Both serve plain HTTP on loopback ports: atoll's OCI client speaks plain
//! HTTP to loopback registries (and HTTPS to everything else unless told
//! otherwise), so no certificates are needed. The authenticated one gets a
//! user `atoll` with a random password per start, hashed with bcrypt by the
//! `htpasswd` helper built beside the registry.
//!
//! Their files live in `<state>/registry/`: a pids file of their own (so `up`
//! adds them to a control plane started before they existed, touching
//! nothing else), one config and storage directory each, and `env` (the
//! `KEY=value` lines `cluster env` prints) written once both answer.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use super::processes::{self, Recorder};
use super::{State, build, start};

/// The anonymous registry, `127.0.0.1:<port>`.
pub const REGISTRY_ENV: &str = "ATOLL_TESTENV_REGISTRY";
/// The registry that wants basic auth, `127.0.0.1:<port>`.
pub const REGISTRY_AUTH_ENV: &str = "ATOLL_TESTENV_REGISTRY_AUTH";
/// Its user and password.
pub const REGISTRY_USER_ENV: &str = "ATOLL_TESTENV_REGISTRY_USER";
pub const REGISTRY_PASSWORD_ENV: &str = "ATOLL_TESTENV_REGISTRY_PASSWORD";

const USER: &str = "atoll";

/// The running test registries.
#[derive(Debug, Clone)]
pub struct Registries {
    pub anonymous: String,
    pub authenticated: String,
    pub user: String,
    pub password: String,
}

impl Registries {
    /// The variables tests read them from, with their values.
    pub fn env(&self) -> [(&'static str, &str); 4] {
        [
            (REGISTRY_ENV, &self.anonymous),
            (REGISTRY_AUTH_ENV, &self.authenticated),
            (REGISTRY_USER_ENV, &self.user),
            (REGISTRY_PASSWORD_ENV, &self.password),
        ]
    }

    fn parse(text: &str) -> Option<Self> {
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        Some(Self {
            anonymous: get(REGISTRY_ENV)?,
            authenticated: get(REGISTRY_AUTH_ENV)?,
            user: get(REGISTRY_USER_ENV)?,
            password: get(REGISTRY_PASSWORD_ENV)?,
        })
    }
}

fn dir(state: &State) -> PathBuf {
    state.dir.join("registry")
}

fn pids_file(state: &State) -> PathBuf {
    dir(state).join("pids")
}

/// The registries running for `state`, if both run and answer `/v2/`.
pub(super) fn running(state: &State) -> Option<Registries> {
    if !processes::all_alive_of(&pids_file(state), 2) {
        return None;
    }
    let registries = Registries::parse(&fs::read_to_string(dir(state).join("env")).ok()?)?;
    probe(&registries.anonymous, "200").ok()?;
    probe(&registries.authenticated, "401").ok()?;
    Some(registries)
}

/// Returns the registries for `state`, starting them (and building the
/// registry on first use) when they do not run. Touches no other process.
///
/// # Errors
/// The build fails, or a registry does not start or answer within a minute.
pub(super) fn ensure(state: &State) -> Result<Registries> {
    if let Some(registries) = running(state) {
        return Ok(registries);
    }
    // Registries that died or never answered: stop what is left of them only.
    processes::stop_all(&pids_file(state))?;
    let dir = dir(state);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::create_dir_all(state.dir.join("logs"))?;
    let bins = build::ensure_registry()?;

    let password = random_hex(16)?;
    let htpasswd = dir.join("htpasswd");
    fs::write(&htpasswd, hash(&bins.join("htpasswd"), &password)?)
        .with_context(|| format!("writing {}", htpasswd.display()))?;

    let mut recorder = Recorder::detached(pids_file(state));
    let mut addresses = Vec::new();
    for (name, auth) in [("registry", None), ("registry-auth", Some(&htpasswd))] {
        let port = TcpListener::bind("127.0.0.1:0")
            .context("picking a loopback port")?
            .local_addr()?
            .port();
        let storage = dir.join(format!("{name}-data"));
        let config = dir.join(format!("{name}.yml"));
        fs::write(&config, config_text(port, &storage, auth))
            .with_context(|| format!("writing {}", config.display()))?;
        eprintln!("starting {name} (CNCF Distribution) on 127.0.0.1:{port}");
        let proc = recorder.spawn(
            name,
            &bins.join("registry"),
            &state.log(name),
            &["serve".into(), config.display().to_string()],
        )?;
        let address = format!("127.0.0.1:{port}");
        let expected = if auth.is_some() { "401" } else { "200" };
        start::wait_until(
            &[&proc],
            &format!("{name} /v2/"),
            Duration::from_secs(60),
            || probe(&address, expected),
        )?;
        addresses.push(address);
    }
    let registries = Registries {
        anonymous: addresses[0].clone(),
        authenticated: addresses[1].clone(),
        user: USER.into(),
        password,
    };
    let env: String = registries
        .env()
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    fs::write(dir.join("env"), env)?;
    Ok(registries)
}

/// Stops the registries for `state` if they run.
///
/// # Errors
/// Their pids file cannot be read.
pub(super) fn stop(state: &State) -> Result<()> {
    processes::stop_all(&pids_file(state))
}

/// Filesystem storage, deletes allowed (tests may remove what they pushed),
/// htpasswd auth when given; no debug server.
fn config_text(port: u16, storage: &std::path::Path, htpasswd: Option<&PathBuf>) -> String {
    let mut text = format!(
        "version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: atoll-testenv
",
        storage = storage.display()
    );
    if let Some(htpasswd) = htpasswd {
        text.push_str(&format!(
            "auth:
  htpasswd:
    realm: atoll-testenv
    path: {}
",
            htpasswd.display()
        ));
    }
    text
}

/// `user:bcrypt(password)` from the htpasswd helper (the password on its stdin).
fn hash(helper: &std::path::Path, password: &str) -> Result<String> {
    let mut child = Command::new(helper)
        .arg(USER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", helper.display()))?;
    child
        .stdin
        .take()
        .context("htpasswd's stdin")?
        .write_all(password.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "htpasswd failed ({})", out.status);
    Ok(String::from_utf8(out.stdout)?)
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// `GET /v2/` answers with the `expected` status (200 anonymous, 401 with auth).
fn probe(address: &str, expected: &str) -> Result<(), String> {
    let mut conn = std::net::TcpStream::connect(address).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    conn.write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status = response.split_whitespace().nth(1).unwrap_or_default();
    if status == expected {
        Ok(())
    } else {
        Err(format!("GET /v2/ answered {status:?}, expected {expected}"))
    }
}
