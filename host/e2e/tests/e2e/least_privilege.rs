//! atoll reconciles with its own ServiceAccount token and the RBAC from
//! `deploy/`, not the admin credential: least privilege is enough for the job.

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
