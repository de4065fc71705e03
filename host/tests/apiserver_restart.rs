//! The API server restarted while 50 Databases reconcile: atoll reconnects
//! and converges, with no lost and no duplicate objects.
//!
//! Alone in its test binary: while the API server is down every other test
//! would fail.

mod common;

use std::time::Duration;

use atoll::api::Database;
use atoll_testenv::{TestNamespace, client, restart_apiserver, wait_for};
use common::{k, managed};
use kube::ResourceExt;
use kube::api::Api;

const DATABASES: usize = 50;

#[tokio::test]
async fn atoll_converges_across_an_api_server_restart() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "apiserver-restart").await;
    let n = ns.name();
    atoll_testenv::install_crds(&client, atoll::api::crds()).await;
    let mut atoll = common::KillOnDrop(common::start_atoll(n));

    let all: String = (0..DATABASES)
        .map(|i| {
            format!(
                "---\napiVersion: atoll.dev/v1alpha1\nkind: Database\nmetadata:\n  name: db-{i}\n\
                 spec:\n  partitions: 1\n  storage:\n    plugin: raft\n    config:\n      clusters: 1\n      replicas: 1\n"
            )
        })
        .collect();
    k(n, &["apply", "-f", "-"], Some(&all)).await;
    // Let reconciles get going, then take the API server away under them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = managed(n).await.len();
    let downtime = restart_apiserver(&client).await;
    eprintln!("API server restarted ({downtime:?} down) with {before} children applied");

    // A fresh client: the old one's connections died with the server.
    let client = atoll_testenv::client().await;
    // Converged: exactly the rendered children, and every Database's status
    // written for its generation with nothing wrong. (Ready also needs the
    // controller-manager's StatefulSet status, which can lag long after an
    // API server restart; that is not atoll's to prove.)
    let api: Api<Database> = Api::namespaced(client.clone(), n);
    wait_for(
        "children and status converged",
        Duration::from_secs(120),
        || {
            let (client, api) = (client.clone(), api.clone());
            async move {
                common::exactly_rendered(&client, n).await?;
                let dbs = api
                    .list(&Default::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let behind: Vec<String> = dbs
                    .iter()
                    .filter(|db| {
                        let status = db.status.as_ref();
                        let observed = status.and_then(|s| s.observed_generation);
                        let degraded = status.is_none_or(|s| {
                            s.conditions
                                .iter()
                                .any(|c| c.type_ == "Degraded" && c.status != "False")
                        });
                        observed != db.metadata.generation || degraded
                    })
                    .map(|db| db.name_any())
                    .collect();
                if dbs.items.len() == DATABASES && behind.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} Databases, behind: {behind:?}", dbs.items.len()))
                }
            }
        },
    )
    .await;
    assert!(
        atoll.0.try_wait().unwrap().is_none(),
        "atoll exited across the restart"
    );
    drop(atoll);
    ns.cleanup().await;
}
