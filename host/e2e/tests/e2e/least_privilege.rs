//! atoll reconciles with its own ServiceAccount token and the RBAC from
//! `deploy/` (and the Helm chart's, watching one namespace), not the admin
//! credential: least privilege is enough for the job.

use std::sync::Arc;

use atoll::controller::{self, Context};
use atoll_e2e::{example, k, patch_database, wait_condition, wait_ready};
use atoll_testenv::{TestNamespace, kubectl};

fn deploy(file: &str) -> String {
    std::fs::read_to_string(atoll_e2e::workspace().join("deploy").join(file)).unwrap()
}

#[tokio::test]
async fn reconciles_with_the_service_account_from_deploy() {
    let admin = atoll_testenv::client().await;
    atoll_testenv::install_crds(&admin, atoll::api::crds()).await;
    for file in ["namespace.yaml", "rbac.yaml"] {
        let out = kubectl(&["apply", "--server-side", "-f", "-"], Some(&deploy(file))).await;
        assert!(out.success, "{file}: {}", out.stderr);
    }
    let token = kubectl(&["create", "token", "atoll", "-n", "atoll-system"], None).await;
    assert!(token.success, "{}", token.stderr);
    let sa = atoll_testenv::client_with_token(token.stdout.trim()).await;

    let ns = TestNamespace::new(&admin, "least-privilege").await;
    let n = ns.name();
    // Leases: the leader's and each replica's instance Lease (random names,
    // swept when expired), in atoll's own namespace and nowhere else.
    let can = |verb: &'static str, namespace: &str| {
        let namespace = namespace.to_string();
        async move {
            let args = [
                "auth",
                "can-i",
                verb,
                "leases.coordination.k8s.io",
                "-n",
                &namespace,
                "--as",
                "system:serviceaccount:atoll-system:atoll",
            ];
            kubectl(&args, None).await.stdout.trim() == "yes"
        }
    };
    for verb in ["get", "list", "create", "update", "patch", "delete"] {
        assert!(
            can(verb, "atoll-system").await,
            "{verb} leases in atoll-system"
        );
        assert!(!can(verb, n).await, "{verb} leases in {n}");
    }
    let ctx = Arc::new(Context::new(sa, atoll_e2e::renderer()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ns_name = n.to_string();
    let task = tokio::spawn(async move {
        controller::run(ctx, Some(&ns_name), async {
            let _ = stopped.await;
        })
        .await
    });

    k(n, &["apply", "-f", "-"], Some(&example("raft"))).await;
    wait_ready(&admin, n, "orders").await;
    // Data-loss refusal writes status and an Event: both allowed.
    patch_database(n, "orders", r#"{"spec":{"partitions":4}}"#).await;
    let message = wait_condition(&admin, n, "orders", "Degraded", "DataLossRefused").await;
    // And pruning (delete) is allowed once the user agrees.
    atoll_e2e::approve_as_told(&message).await;
    wait_ready(&admin, n, "orders").await;

    let _ = stop.send(());
    task.await.unwrap();
    ns.cleanup().await;
}

/// Deletes a release's cluster-scoped RBAC when dropped (also on failure).
struct ClusterRbac(String);

impl Drop for ClusterRbac {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kubectl")
            .env("KUBECONFIG", atoll_testenv::kubeconfig_env())
            .args(["delete", "clusterrole,clusterrolebinding", &self.0])
            .args(["--ignore-not-found", "--wait=false"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The pinned helm (`deploy/helm/install-helm.sh`, cached after the first build).
fn helm() -> std::path::PathBuf {
    let script = atoll_e2e::workspace().join("deploy/helm/install-helm.sh");
    let out = std::process::Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{} failed", script.display());
    String::from_utf8_lossy(&out.stdout).trim().into()
}

/// A kubeconfig for the control plane that authenticates with `token`.
async fn token_kubeconfig(token: &str, path: &std::path::Path) {
    let out = kubectl(
        &[
            "config",
            "view",
            "--raw",
            "--minify",
            "--flatten",
            "-o",
            "json",
        ],
        None,
    )
    .await;
    assert!(out.success, "{}", out.stderr);
    let mut config: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    config["users"][0]["user"] = serde_json::json!({ "token": token });
    std::fs::write(path, config.to_string()).unwrap();
}

/// The `atoll` binary, with the chart's RBAC in single-namespace mode
/// (`watchNamespace`) and the chart ServiceAccount's token, as the chart runs
/// it: leader election and plugin ConfigMaps in its own namespace, Databases
/// in the watched one. Every example reconciles to Ready.
#[tokio::test]
async fn the_binary_runs_under_the_charts_service_account_watching_one_namespace() {
    let _records = atoll_e2e::plugin_records_shared().await; // atoll run writes them
    let admin = atoll_testenv::client().await;
    atoll_testenv::install_crds(&admin, atoll::api::crds()).await;
    let home = TestNamespace::new(&admin, "lp-chart-home").await;
    let watched = TestNamespace::new(&admin, "lp-chart-watched").await;
    let release = format!("atoll-{}", home.name().rsplit('-').next().unwrap());
    let _rbac = ClusterRbac(release.clone());

    let chart = atoll_e2e::workspace().join("deploy/helm/atoll");
    let out = tokio::process::Command::new(helm())
        .args([
            "template",
            &release,
            chart.to_str().unwrap(),
            "-n",
            home.name(),
        ])
        .args(["--set", &format!("watchNamespace={}", watched.name())])
        .args([
            "-s",
            "templates/rbac.yaml",
            "-s",
            "templates/serviceaccount.yaml",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rbac = String::from_utf8(out.stdout).unwrap();
    let applied = kubectl(&["apply", "-f", "-"], Some(&rbac)).await;
    assert!(applied.success, "{}", applied.stderr);

    let token = kubectl(
        &[
            "create",
            "token",
            &release,
            "-n",
            home.name(),
            "--duration=1h",
        ],
        None,
    )
    .await;
    assert!(token.success, "{}", token.stderr);
    let kubeconfig = std::env::temp_dir().join(format!("atoll-{release}.kubeconfig"));
    token_kubeconfig(token.stdout.trim(), &kubeconfig).await;

    let log = std::env::temp_dir().join(format!("atoll-{release}.log"));
    let child = std::process::Command::new(atoll_e2e::atoll_bin())
        .args(["run", "--namespace", watched.name(), "--leader-elect"])
        .args(["--leader-election-lease", &release])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", home.name())
        .env("RUST_LOG", "atoll=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _atoll = atoll_e2e::KillOnDrop(child);

    let w = watched.name();
    let examples = [
        ("raft", "orders"),
        ("cache", "sessions"),
        ("log", "events"),
        ("primary-backup", "inventory"),
        ("redis", "profiles"),
    ];
    for (example, _) in examples {
        k(w, &["apply", "-f", "-"], Some(&atoll_e2e::example(example))).await;
    }
    for (_, name) in examples {
        wait_ready(&admin, w, name).await;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("leading: reconciling Databases"), "{text}");
    assert!(
        !text.contains("forbidden"),
        "a request was forbidden:\n{text}"
    );
    let _ = std::fs::remove_file(&kubeconfig);
    watched.cleanup().await;
    home.cleanup().await;
}
