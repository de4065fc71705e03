//! Test support for running atoll's tests against the real local control plane
//! (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok)
//! that `cargo xtask cluster up` starts.
//!
//! - [`client`] connects to it and panics with instructions when it is not running:
//!   tests that need Kubernetes fail loudly, they never pass by skipping.
//! - [`TestNamespace`] gives each test its own namespace and deletes it afterwards.
//! - [`install_crds`] applies CustomResourceDefinitions and waits until they are served.
//! - [`wait_for`] polls a condition with a deadline and reports what it saw last.
//! - [`kubectl`] runs kubectl against the same control plane.
//! - [`grpcurl`] installs the pinned grpcurl (a gRPC client sharing no code
//!   with atoll) and returns its path.
//! - [`PrivateControlPlane`] starts a control plane of a test's own, for
//!   faults the shared one must not see (an API server restart).
//! - [`Dns`] queries the CoreDNS running beside the control plane (A and SRV
//!   records of Services, as Pods would resolve them).
//! - [`registries`] finds the OCI registries beside it (one anonymous, one
//!   with basic auth).
//! - [`plugin_cache::env`] lets the `atoll` processes tests start share
//!   their compiled plugins.
//!
//! The control plane is shared by every test process: tests must only touch
//! their own namespace and cluster-scoped objects they name uniquely (CRDs are
//! the exception: installing the same CRD from several tests is idempotent).
//! kwok fakes the kubelet, so Pods turn Running and Ready without running any
//! container: nothing listens on Pod or Service IPs, and nothing is written to
//! the PersistentVolumes it binds to claims of the default StorageClass.

mod dns;
pub mod plugin_cache;
mod private;
mod registry;

pub use dns::{DNS_ENV, Dns, Srv};
pub use registry::{
    REGISTRY_AUTH_ENV, REGISTRY_ENV, REGISTRY_PASSWORD_ENV, REGISTRY_USER_ENV, Registries,
    registries,
};
/// Runs cargo from a test without the test's package variables.
pub use xtask::nested_cargo;

pub use private::{PrivateControlPlane, Restart};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// How to start the control plane; part of every "cannot connect" panic.
const HOW_TO_START: &str = "start the local control plane first:\n\
     \n    cargo xtask cluster up\n    eval \"$(cargo xtask cluster env)\"\n\
     \nor run the whole suite with `cargo xtask test`, which starts it for you";

/// The state directory `cargo xtask cluster up` uses: `$ATOLL_TESTENV_DIR`,
/// else `/tmp/atoll-testenv-$UID` (`$TMPDIR` replaces `/tmp`). Must match xtask.
pub fn state_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    match std::env::var_os("ATOLL_TESTENV_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let uid = std::fs::metadata("/proc/self")
                .map(|m| m.uid())
                .expect("reading /proc/self");
            std::env::temp_dir().join(format!("atoll-testenv-{uid}"))
        }
    }
}

/// Set by [`PrivateControlPlane::use_by_default`]: a process-wide setting
/// rather than `$KUBECONFIG`, which cannot be changed safely once threads run.
static KUBECONFIG_OVERRIDE: RwLock<Option<PathBuf>> = RwLock::new(None);

/// The kubeconfig tests use: a [`PrivateControlPlane`]'s after its
/// [`use_by_default`](PrivateControlPlane::use_by_default); else `$KUBECONFIG`
/// when set (kubectl's rules, so it may list several files), else the admin
/// kubeconfig in [`state_dir`].
pub fn kubeconfig_env() -> std::ffi::OsString {
    let override_ = KUBECONFIG_OVERRIDE
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(private) = override_.as_ref() {
        return private.clone().into_os_string();
    }
    match std::env::var_os("KUBECONFIG") {
        Some(paths) if !paths.is_empty() => paths,
        _ => state_dir().join("kubeconfig").into_os_string(),
    }
}

/// The API server's audit log of write requests (JSON lines, Metadata level:
/// verb, object, user agent, timestamps), beside the kubeconfig in use as
/// `cargo xtask cluster up` writes it. Panics, saying how to get one, when
/// the control plane was started without audit logging.
pub fn audit_log() -> Vec<serde_json::Value> {
    let kubeconfig = std::env::split_paths(&kubeconfig_env())
        .next()
        .unwrap_or_default();
    let path = kubeconfig
        .parent()
        .unwrap_or(Path::new("."))
        .join("logs")
        .join("audit.log");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading the audit log {}: {e}\n(the control plane predates audit logging: \
             restart it with `cargo xtask cluster down && cargo xtask cluster up`)",
            path.display()
        )
    });
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Client configuration for the control plane (see [`kubeconfig_env`]).
///
/// Panics with instructions when no kubeconfig can be loaded. Refuses a
/// kubeconfig whose server is not on loopback, so a stray `$KUBECONFIG` cannot
/// point the tests (which create and delete things) at a real cluster;
/// `ATOLL_TESTENV_ALLOW_REMOTE=1` lifts that guard deliberately.
pub async fn config() -> Config {
    let paths = kubeconfig_env();
    let loaded = match std::env::split_paths(&paths)
        .filter(|p| p.exists())
        .map(Kubeconfig::read_from)
        .reduce(|a, b| a?.merge(b?))
    {
        Some(kubeconfig) => match kubeconfig {
            Ok(kubeconfig) => {
                Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        },
        None => Err("no such file".to_owned()),
    };
    let config =
        loaded.unwrap_or_else(|e| panic!("cannot load kubeconfig {paths:?}: {e}\n{HOW_TO_START}"));
    let host = config.cluster_url.host().unwrap_or_default();
    let loopback = matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1");
    if !loopback && std::env::var_os("ATOLL_TESTENV_ALLOW_REMOTE").is_none_or(|v| v != "1") {
        panic!(
            "kubeconfig {paths:?} points at {}, not at a local control plane; refusing to run tests there \
             (set ATOLL_TESTENV_ALLOW_REMOTE=1 to insist)\n{HOW_TO_START}",
            config.cluster_url
        );
    }
    config
}

/// A client for the control plane, checked to be reachable and ready.
///
/// Panics, saying how to start the control plane, when it does not answer
/// `/readyz` with `ok` within ten seconds. Each call builds a new client: a
/// client belongs to the tokio runtime it was made on, and every
/// `#[tokio::test]` has its own.
pub async fn client() -> Client {
    let config = config().await;
    let url = config.cluster_url.clone();
    let client =
        Client::try_from(config).unwrap_or_else(|e| panic!("cannot build a client for {url}: {e}"));
    match tokio::time::timeout(Duration::from_secs(10), readyz(&client)).await {
        Ok(Ok(body)) if body.trim() == "ok" => client,
        Ok(Ok(body)) => {
            panic!("control plane at {url} is not ready: /readyz says {body}\n{HOW_TO_START}")
        }
        Ok(Err(e)) => panic!("cannot reach the control plane at {url}: {e}\n{HOW_TO_START}"),
        Err(_) => {
            panic!("control plane at {url} did not answer /readyz within 10s\n{HOW_TO_START}")
        }
    }
}

/// A client for the same control plane that authenticates with a bearer
/// `token` (for example from a TokenRequest) instead of the admin certificate,
/// so requests are authorized as that token's user.
pub async fn client_with_token(token: &str) -> Client {
    let mut config = config().await;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_owned().into()),
        ..Default::default()
    };
    Client::try_from(config).expect("building a token client")
}

/// `GET /readyz` as the body text.
///
/// # Errors
/// The API server does not answer, or answers not ready.
pub async fn readyz(client: &Client) -> Result<String, kube::Error> {
    // kube has no raw-path helper; an empty collection path plus the name "readyz" is `/readyz`.
    let request = kube::core::Request::new("")
        .get("readyz", &Default::default())
        .map_err(kube::Error::BuildRequest)?;
    client.request_text(request).await
}

/// Output of [`kubectl`].
#[derive(Debug)]
pub struct KubectlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `kubectl <args>` against the control plane (`KUBECONFIG` set as in
/// [`kubeconfig_env`]), feeding `stdin` if given. Returns its output whatever
/// the exit status (`kubectl auth can-i` exits 1 for "no"); panics only when
/// kubectl cannot be run at all.
pub async fn kubectl(args: &[&str], stdin: Option<&str>) -> KubectlOutput {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig_env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kubectl (is it installed?): {e}"));
    let mut pipe = child.stdin.take().expect("piped stdin");
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes())
            .await
            .expect("writing kubectl's stdin");
    }
    drop(pipe); // EOF
    let out = child.wait_with_output().await.expect("waiting for kubectl");
    KubectlOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The grpcurl release [`grpcurl`] installs.
pub const GRPCURL_VERSION: &str = "v1.9.3";

/// Path of grpcurl [`GRPCURL_VERSION`], built with `go install` from the Go
/// module proxy on first use into `$ATOLL_TOOLS_DIR` (default
/// `~/.cache/atoll/tools`), in a directory per version; later calls reuse
/// it. Panics when go is missing or the build fails: tests that need it
/// must fail, not skip. Blocking; call it from `spawn_blocking` in async code.
pub fn grpcurl() -> PathBuf {
    static GRPCURL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    GRPCURL
        .get_or_init(|| {
            let tools = match std::env::var_os("ATOLL_TOOLS_DIR") {
                Some(dir) if !dir.is_empty() => PathBuf::from(dir),
                _ => {
                    let cache = std::env::var_os("XDG_CACHE_HOME")
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                        .or_else(|| {
                            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
                        })
                        .expect("HOME or XDG_CACHE_HOME must be set to cache grpcurl");
                    cache.join("atoll/tools")
                }
            };
            let dir = tools.join(format!("grpcurl-{GRPCURL_VERSION}"));
            let bin = dir.join("grpcurl");
            if bin.is_file() {
                return bin;
            }
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
            // Build into a private directory and rename into place, so parallel
            // test processes and interrupted builds never expose half a binary.
            let tmp = dir.join(format!(".build-{}", std::process::id()));
            let module = format!("github.com/fullstorydev/grpcurl/cmd/grpcurl@{GRPCURL_VERSION}");
            eprintln!(
                "atoll-testenv: building grpcurl {GRPCURL_VERSION} into {} (once)",
                dir.display()
            );
            let status = std::process::Command::new("go")
                .args(["install", "-trimpath", &module])
                .env("GOBIN", &tmp)
                .env("CGO_ENABLED", "0")
                .env("GOFLAGS", "-buildvcs=false")
                .status()
                .unwrap_or_else(|e| {
                    panic!("cannot run go to install grpcurl (is Go installed?): {e}")
                });
            assert!(status.success(), "go install {module} failed ({status})");
            std::fs::rename(tmp.join("grpcurl"), &bin)
                .unwrap_or_else(|e| panic!("moving grpcurl into {}: {e}", dir.display()));
            let _ = std::fs::remove_dir_all(&tmp);
            bin
        })
        .clone()
}

/// Polls `check` until it returns `Ok`, and returns that value.
///
/// `check` returns `Err(what it saw)` while the condition does not hold; the
/// last such description ends up in the panic message when `timeout` expires:
/// `timed out after 60s waiting for <what>; last seen: <...>`. A single slow
/// attempt cannot overrun the deadline: it is cut off when time runs out.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("(no attempt finished)");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(seen)) => last = seen,
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {}s waiting for {what}; last seen: {last}",
                timeout.as_secs_f64()
            );
        }
        tokio::time::sleep(
            Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}

/// Applies `crds` with server-side apply (field manager `atoll-testenv`,
/// forcing ownership) and waits up to 30s for each to be `Established`, i.e.
/// served. CRDs are cluster-scoped and outlive the test: re-applying the same
/// definition from another test is harmless, a different one replaces it.
pub async fn install_crds(
    client: &Client,
    crds: impl IntoIterator<Item = CustomResourceDefinition>,
) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("atoll-testenv").force();
    let mut names = Vec::new();
    for crd in crds {
        let name = crd
            .metadata
            .name
            .clone()
            .expect("a CRD needs metadata.name");
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        names.push(name);
    }
    for name in names {
        let api = &api;
        wait_for(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(30),
            || async {
                let crd = api.get(&name).await.map_err(|e| e.to_string())?;
                let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
                if conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                {
                    Ok(())
                } else {
                    Err(format!(
                        "conditions {:?}",
                        conditions
                            .iter()
                            .map(|c| (&c.type_, &c.status))
                            .collect::<Vec<_>>()
                    ))
                }
            },
        )
        .await;
    }
}

/// A namespace of its own for one test, deleted afterwards.
///
/// The name is `<test name>-<random suffix>`, cut to a valid DNS label, so
/// parallel tests and reruns never share one; it carries the label
/// `atoll.dev/testenv-namespace=true` for finding leftovers.
///
/// Call [`cleanup`](Self::cleanup) at the end of the test. If the test panics
/// before that, `Drop` still requests the deletion (best effort: a failure is
/// only printed), on a helper thread with its own runtime so it works inside
/// or outside a tokio runtime.
///
/// Either way the namespace's content is removed asynchronously by the
/// namespace controller (about five seconds here); nothing waits for it.
pub struct TestNamespace {
    name: String,
    client: Client,
    config: Config,
    cleaned_up: bool,
}

impl TestNamespace {
    /// Creates the namespace; panics if that fails.
    pub async fn new(client: &Client, test_name: &str) -> Self {
        let name = unique_name(test_name);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "atoll.dev/testenv-namespace": "true" } }
        }))
        .expect("namespace literal");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        Self {
            name,
            client: client.clone(),
            config: config().await,
            cleaned_up: false,
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the namespace and returns once the API server has accepted the
    /// deletion (the namespace is Terminating), without waiting the seconds the
    /// namespace controller takes to empty and remove it: tests would spend
    /// most of their time there. Panics if the deletion is refused. A test that
    /// must see everything gone can poll for it with [`wait_for`].
    pub async fn cleanup(mut self) {
        self.cleaned_up = true;
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.delete(&self.name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => panic!("deleting namespace {}: {e}", self.name),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.cleaned_up {
            return;
        }
        let (name, config) = (self.name.clone(), self.config.clone());
        // A fresh runtime and client on another thread: blocking on the test's own
        // runtime from inside it would deadlock, and that runtime may be shutting down.
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let client = Client::try_from(config).ok()?;
                let api: Api<Namespace> = Api::all(client);
                let params = DeleteParams::background();
                tokio::time::timeout(Duration::from_secs(10), api.delete(&name, &params))
                    .await
                    .ok()?
                    .ok()
            })
        })
        .join();
        if !matches!(deleted, Ok(Some(_))) {
            eprintln!(
                "atoll-testenv: could not delete namespace {}; delete it by hand",
                self.name
            );
        }
    }
}

/// `<sanitised test name>-<8 hex digits>`, at most 63 characters.
fn unique_name(test_name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    // Test names are paths like `module::case`; keep the most specific end.
    let mut base: String = test_name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if base.len() > 50 {
        base = base[base.len() - 50..].to_owned();
    }
    let base = base.trim_matches('-');
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let mixed = nanos
        ^ std::process::id().rotate_left(16)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9);
    if base.is_empty() {
        format!("test-{mixed:08x}")
    } else {
        format!("{base}-{mixed:08x}")
    }
}

#[cfg(test)]
mod tests {
    use super::unique_name;

    #[test]
    fn unique_names_are_valid_dns_labels() {
        let long =
            "control_plane::a_test_name_that_is_much_longer_than_any_kubernetes_label_allows";
        for input in ["statefulset_pods_become_ready", long, "::", "UPPER::Case"] {
            let name = unique_name(input);
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        assert_ne!(unique_name("same"), unique_name("same"));
    }
}
