//! `up`'s start sequence: credentials, then etcd, kube-apiserver, the
//! controller-manager, scheduler and kwok, then the fake Nodes, each step
//! waiting until the previous one answers.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::processes::{self, Proc};
use super::{State, build, certs};

/// Number of kwok-managed fake Nodes registered by `up`.
const NODES: usize = 3;

/// Audit every write request at Metadata level (no bodies), nothing else.
const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
";

/// Generates credentials, starts the five processes through `procs` in
/// dependency order and waits until the control plane can run Pods. Returns
/// the processes in start order (etcd first); dropping them leaves them running.
pub(super) fn start(
    state: &State,
    bins: &build::Binaries,
    procs: &mut processes::Recorder,
) -> Result<Vec<Proc>> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700) // holds private keys
        .create(state.dir.join("logs"))
        .with_context(|| format!("creating {}", state.dir.display()))?;
    let ports = Ports::pick()?;
    let pki = certs::generate(&state.dir, ports.apiserver)?;
    let dir = |name: &str| state.dir.join(name).display().to_string();
    let loopback = |port: u16| format!("http://127.0.0.1:{port}");

    eprintln!("starting etcd on 127.0.0.1:{}", ports.etcd_client);
    let etcd = procs.spawn(
        "etcd",
        &bins.etcd,
        &state.log("etcd"),
        &[
            "--name=atoll".into(),
            format!("--data-dir={}", dir("etcd")),
            format!("--listen-client-urls={}", loopback(ports.etcd_client)),
            format!("--advertise-client-urls={}", loopback(ports.etcd_client)),
            format!("--listen-peer-urls={}", loopback(ports.etcd_peer)),
            format!(
                "--initial-advertise-peer-urls={}",
                loopback(ports.etcd_peer)
            ),
            format!("--initial-cluster=atoll={}", loopback(ports.etcd_peer)),
            // Throwaway data: not worth an fsync per write.
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ],
    )?;
    wait_until(&[&etcd], "etcd /health", Duration::from_secs(30), || {
        etcd_healthy(ports.etcd_client)
    })?;

    // Writes are audited (who, what, when): tests use it to show, for
    // example, that only the leader among atoll's replicas ever writes.
    let audit_policy = state.dir.join("audit-policy.yaml");
    fs::write(&audit_policy, AUDIT_POLICY)
        .with_context(|| format!("writing {}", audit_policy.display()))?;

    eprintln!(
        "starting kube-apiserver on https://127.0.0.1:{}",
        ports.apiserver
    );
    let apiserver = procs.spawn(
        "kube-apiserver",
        &bins.apiserver,
        &state.log("kube-apiserver"),
        &[
            format!("--etcd-servers={}", loopback(ports.etcd_client)),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", ports.apiserver),
            format!("--cert-dir={}", dir("apiserver")),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            "--authorization-mode=Node,RBAC".into(),
            format!("--service-account-key-file={}", pki.sa_public.display()),
            format!(
                "--service-account-signing-key-file={}",
                pki.sa_private.display()
            ),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-cluster-ip-range={}", certs::SERVICE_CIDR),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            format!("--audit-policy-file={}", audit_policy.display()),
            format!("--audit-log-path={}", state.log("audit").display()),
            "--audit-log-format=json".into(),
            "--audit-log-maxsize=200".into(),
            "--audit-log-maxbackup=1".into(),
        ],
    )?;
    let kubeconfig = state.kubeconfig();
    wait_until(
        &[&etcd, &apiserver],
        "kube-apiserver /readyz",
        Duration::from_secs(120),
        || readyz(&kubeconfig),
    )?;

    eprintln!("starting kube-controller-manager, kube-scheduler and kwok");
    let kcm = procs.spawn(
        "kube-controller-manager",
        &bins.controller_manager,
        &state.log("kube-controller-manager"),
        &[
            format!(
                "--kubeconfig={}",
                pki.controller_manager_kubeconfig.display()
            ),
            format!(
                "--authentication-kubeconfig={}",
                pki.controller_manager_kubeconfig.display()
            ),
            format!(
                "--authorization-kubeconfig={}",
                pki.controller_manager_kubeconfig.display()
            ),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", ports.controller_manager),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!(
                "--service-account-private-key-file={}",
                pki.sa_private.display()
            ),
            format!("--root-ca-file={}", pki.ca_cert.display()),
            format!("--cluster-signing-cert-file={}", pki.ca_cert.display()),
            format!("--cluster-signing-key-file={}", pki.ca_key.display()),
            // Each controller acts as its own ServiceAccount, as in a real cluster,
            // so RBAC mistakes in the bootstrap roles would show up here too.
            "--use-service-account-credentials=true".into(),
            "--cluster-name=atoll".into(),
            "--leader-elect=false".into(),
        ],
    )?;
    let scheduler = procs.spawn(
        "kube-scheduler",
        &bins.scheduler,
        &state.log("kube-scheduler"),
        &[
            format!("--kubeconfig={}", pki.scheduler_kubeconfig.display()),
            format!(
                "--authentication-kubeconfig={}",
                pki.scheduler_kubeconfig.display()
            ),
            format!(
                "--authorization-kubeconfig={}",
                pki.scheduler_kubeconfig.display()
            ),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", ports.scheduler),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            "--leader-elect=false".into(),
        ],
    )?;
    let kwok = procs.spawn(
        "kwok",
        &bins.kwok,
        &state.log("kwok"),
        &[
            format!("--kubeconfig={}", pki.kwok_kubeconfig.display()),
            format!("--config={}", bins.kwok_stages.display()),
            "--manage-all-nodes=false".into(),
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
            format!("--server-address=127.0.0.1:{}", ports.kwok),
            // Fake Pod IPs only; the default /24 would cap the cluster at 254 Pods.
            "--cidr=10.244.0.0/16".into(),
            "--node-lease-duration-seconds=40".into(),
        ],
    )?;
    let all = [&etcd, &apiserver, &kcm, &scheduler, &kwok];
    for (what, port) in [
        ("kube-controller-manager", ports.controller_manager),
        ("kube-scheduler", ports.scheduler),
    ] {
        wait_until(
            &all,
            &format!("{what} /healthz"),
            Duration::from_secs(60),
            || {
                kubectl(
                    &kubeconfig,
                    &[
                        &format!("--server=https://127.0.0.1:{port}"),
                        "get",
                        "--raw",
                        "/healthz",
                    ],
                )
                .map(drop)
            },
        )?;
    }

    kubectl_stdin(
        &kubeconfig,
        &["apply", "-f", "-"],
        &(nodes_yaml() + STORAGE_CLASS),
    )?;
    wait_until(
        &all,
        "kwok to mark the Nodes Ready",
        Duration::from_secs(60),
        || {
            let out = kubectl(
                &kubeconfig,
                &[
                    "get",
                    "nodes",
                    "-l",
                    "atoll.dev/testenv=true",
                    "-o",
                    r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
                ],
            )?;
            let ready = out.lines().filter(|l| *l == "True").count();
            if ready == NODES {
                Ok(())
            } else {
                Err(format!("{ready}/{NODES} Nodes Ready"))
            }
        },
    )?;
    // Pods cannot be created in a namespace before its `default`
    // ServiceAccount exists; waiting here proves the controllers work.
    wait_until(
        &all,
        "the `default` ServiceAccount",
        Duration::from_secs(60),
        || {
            kubectl(
                &kubeconfig,
                &[
                    "get",
                    "serviceaccount",
                    "default",
                    "-n",
                    "default",
                    "-o",
                    "name",
                ],
            )
            .map(drop)
        },
    )?;
    Ok(Vec::from([etcd, apiserver, kcm, scheduler, kwok]))
}

/// The default StorageClass; kwok's volume Stages provision and bind its claims
/// (PersistentVolumes with no storage behind them), so StatefulSets with
/// volumeClaimTemplates run too.
const STORAGE_CLASS: &str = r#"apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: kwok-volume
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kwok.x-k8s.io/volume
reclaimPolicy: Delete
volumeBindingMode: Immediate
"#;

/// Three kwok-managed Nodes in three zones, 5,000 Pods each: the scale bench
/// runs up to 10,000 single-replica Databases (500 each stopped it at 1,500).
fn nodes_yaml() -> String {
    (0..NODES)
        .map(|i| {
            let zone = ["a", "b", "c"][i % 3];
            format!(
                r#"apiVersion: v1
kind: Node
metadata:
  name: atoll-node-{i}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    atoll.dev/testenv: "true"
    kubernetes.io/hostname: atoll-node-{i}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node.kubernetes.io/instance-type: kwok
    topology.kubernetes.io/region: atoll
    topology.kubernetes.io/zone: atoll-{zone}
    type: kwok
status:
  allocatable: {{cpu: "64", memory: 256Gi, pods: "5000"}}
  capacity: {{cpu: "64", memory: 256Gi, pods: "5000"}}
---
"#
            )
        })
        .collect()
}

/// Loopback ports for this control plane. Picked free at `up` so several users
/// (or a stray local etcd) do not collide; the apiserver's ends up in the kubeconfig.
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
    controller_manager: u16,
    scheduler: u16,
    kwok: u16,
}

impl Ports {
    fn pick() -> Result<Self> {
        // Hold all listeners until every port is chosen so none repeats.
        let listeners = (0..6)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()
            .context("picking free loopback ports")?;
        let port = |i: usize| listeners[i].local_addr().map(|a| a.port());
        Ok(Self {
            etcd_client: port(0)?,
            etcd_peer: port(1)?,
            apiserver: port(2)?,
            controller_manager: port(3)?,
            scheduler: port(4)?,
            kwok: port(5)?,
        })
    }
}

/// Polls `check` until it succeeds. Fails early, with the end of its log, if a
/// process in `procs` exits; on timeout reports what `check` said last.
pub(super) fn wait_until(
    procs: &[&Proc],
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        for p in procs {
            if let Some(status) = p.exited() {
                bail!(
                    "{} exited ({status}) while waiting for {what}\n{}",
                    p.name,
                    p.log_tail(30)
                );
            }
        }
        let last = match check() {
            Ok(()) => return Ok(()),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            let logs: String = procs.iter().map(|p| p.log_tail(10)).collect();
            bail!(
                "timed out after {}s waiting for {what}; last seen: {last}\n{logs}",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub(super) fn readyz(kubeconfig: &Path) -> Result<(), String> {
    let out = kubectl(kubeconfig, &["get", "--raw", "/readyz"])?;
    if out.trim() == "ok" { Ok(()) } else { Err(out) }
}

/// Plain-HTTP health probe: etcd listens without TLS, and only on loopback.
fn etcd_healthy(port: u16) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    conn.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    conn.read_to_string(&mut body).map_err(|e| e.to_string())?;
    if body.contains(r#""health":"true""#) {
        Ok(())
    } else {
        Err(body)
    }
}

/// Runs kubectl against the control plane; the error is what kubectl said.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("kubectl")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg("--request-timeout=10s")
        .args(args)
        .output()
        .map_err(|e| format!("running kubectl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn kubectl_stdin(kubeconfig: &Path, args: &[&str], input: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .stdin(std::process::Stdio::piped())
        // stdout is reserved for the `export KUBECONFIG=...` line.
        .stdout(std::io::stderr())
        .spawn()
        .context("running kubectl")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())?;
    let status = child.wait()?;
    anyhow::ensure!(
        status.success(),
        "kubectl {} failed ({status})",
        args.join(" ")
    );
    Ok(())
}
