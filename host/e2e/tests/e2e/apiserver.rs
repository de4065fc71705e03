//! What `atoll render` prints is real Kubernetes: every example's objects are
//! accepted by the real API server with server-side apply, and the owner
//! references the output policy stamps let the garbage collector remove them
//! all when the Database goes. Needs the local control plane
//! (`cargo xtask cluster up`); fails, never skips, without it.

use std::sync::Arc;
use std::time::Duration;

use atoll::api::{self, Database};
use atoll::plugin::{Limits, Registry, Runtime};
use atoll::policy::OutputPolicy;
use atoll::render::Renderer;
use atoll_testenv::{TestNamespace, kubectl, wait_for};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

#[tokio::test]
async fn rendered_examples_apply_and_are_garbage_collected_with_their_database() {
    let client = atoll_testenv::client().await;
    atoll_testenv::install_crds(&client, api::crds()).await;
    let ns = TestNamespace::new(&client, "rendered-examples-apply").await;
    let renderer = Renderer {
        registry: Arc::new(
            Registry::with_builtins(Arc::new(Runtime::new(Limits::default()).unwrap())).unwrap(),
        ),
        policy: OutputPolicy::default(),
        cluster_domain: "cluster.local".into(),
    };
    let databases: Api<Database> = Api::namespaced(client.clone(), ns.name());

    for example in ["raft", "cache", "redis", "primary-backup", "log"] {
        let path = atoll_e2e::workspace().join(format!("examples/{example}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut db = atoll::manifest::parse_databases(&path.display().to_string(), &text)
            .unwrap()
            .remove(0);
        db.metadata.namespace = Some(ns.name().to_string());
        let db = databases.create(&PostParams::default(), &db).await.unwrap();

        let desired = renderer.render(&db).unwrap();
        let mut items: Vec<Value> = renderer
            .partition_objects(&db, &desired)
            .into_iter()
            .map(|p| serde_json::to_value(p).unwrap())
            .collect();
        items.extend(desired.objects.iter().cloned());
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
        let out = kubectl(
            &[
                "apply",
                "--server-side",
                "--field-manager=atoll",
                "-n",
                ns.name(),
                "-f",
                "-",
            ],
            Some(&list),
        )
        .await;
        assert!(
            out.success,
            "{example}: API server refused the render:\n{}",
            out.stderr
        );
        assert_eq!(
            out.stdout.lines().count(),
            items.len(),
            "{example}: every object applied:\n{}",
            out.stdout
        );
    }

    // Delete each Database: the garbage collector follows the owner
    // references and removes every child.
    let selector = "app.kubernetes.io/managed-by=atoll";
    for db in databases.list(&Default::default()).await.unwrap() {
        databases
            .delete(&db.name_any(), &DeleteParams::foreground())
            .await
            .unwrap();
    }
    wait_for(
        "the children of deleted Databases to be collected",
        Duration::from_secs(60),
        || async {
            let out = kubectl(
                &[
                    "get",
                    "statefulsets,deployments,services,configmaps,poddisruptionbudgets,partitions,endpointslices",
                    "-n",
                    ns.name(),
                    "-l",
                    selector,
                    "-o",
                    "name",
                ],
                None,
            )
            .await;
            if out.success && out.stdout.trim().is_empty() {
                Ok(())
            } else {
                Err(format!("{}{}", out.stdout, out.stderr))
            }
        },
    )
    .await;
    ns.cleanup().await;
}
