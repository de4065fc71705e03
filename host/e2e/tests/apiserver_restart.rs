//! The API server restarted while 50 Databases reconcile: `atoll run`
//! reconnects and converges, with no lost and no duplicate objects.
//!
//! On a control plane of its own ([`PrivateControlPlane`]): restarting the
//! shared one's API server left its kube-controller-manager and
//! kube-scheduler with stale caches that broke the tests running after it.
//! Alone in its test binary, because it points the testenv helpers (and so
//! `kubectl` and atoll's `KUBECONFIG`) at that control plane.

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use atoll::api::Database;
use atoll_e2e::{KillOnDrop, managed_metadata};
use atoll_testenv::{PrivateControlPlane, client, install_crds, kubectl, wait_for};
use k8s_openapi::jiff::{RoundMode, SignedDuration, Timestamp, TimestampRound, Unit};
use kube::ResourceExt;
use kube::api::{Api, PostParams};

const DATABASES: usize = 50;
/// The children [`atoll_e2e::managed_metadata`] counts for a raft Database
/// of 3 partitions on 3 clusters of one replica: per cluster a ConfigMap, a
/// StatefulSet and a headless Service; per partition a Service and a
/// Partition record (no PodDisruptionBudget for a single replica); and the
/// host's partition-group Service (its EndpointSlice is not counted). Enough
/// work that atoll is still applying when the API server goes away.
const CHILDREN_PER_DATABASE: usize = 16;
/// How long the old API server may take over its graceful shutdown before
/// SIGKILL. That shutdown waits for open watches and here never ends within
/// this bound; a rolling update would wait it out, but the point here is the
/// outage, not its length.
const GRACE: Duration = Duration::from_secs(10);

fn database(i: usize) -> Database {
    atoll_e2e::raft_database(&format!("db-{i}"), 3)
}

#[tokio::test]
async fn atoll_converges_across_an_api_server_restart() {
    let began = Instant::now();
    let mut plane = PrivateControlPlane::start().await;
    plane.use_by_default();
    let started_in = began.elapsed();
    let client = client().await;
    install_crds(&client, atoll::api::crds()).await;
    let n = "apiserver-restart";
    let created = kubectl(&["create", "namespace", n], None).await;
    assert!(
        created.success,
        "creating namespace {n}: {}",
        created.stderr
    );

    // atoll's log goes beside the control plane's, kept with them if this fails.
    let log = std::fs::File::create(plane.dir().join("logs/atoll.log")).unwrap();
    let mut atoll = KillOnDrop(atoll_e2e::atoll_command(n).stderr(log).spawn().unwrap());

    // All at once (kubectl would create them one by one, and atoll keeps
    // up with that), so most of the work is still ahead at the restart.
    let databases: Api<Database> = Api::namespaced(client.clone(), n);
    let create = PostParams::default();
    futures::future::try_join_all((0..DATABASES).map(|i| {
        let (databases, create) = (&databases, &create);
        async move { databases.create(create, &database(i)).await }
    }))
    .await
    .unwrap();
    let dbs_before = uids(&databases).await;
    assert_eq!(dbs_before.len(), DATABASES);
    let total = DATABASES * CHILDREN_PER_DATABASE;

    // Take the API server away once about a third of the children exist.
    let before = wait_for(
        "a third of the children to be applied",
        Duration::from_secs(60),
        || async {
            let children = managed_metadata(&client, n).await?;
            if children.len() >= total / 3 {
                Ok(children)
            } else {
                Err(format!("{}/{total} children", children.len()))
            }
        },
    )
    .await;
    // Those not Ready yet must have their status written after the restart.
    let ready_before = DATABASES - not_ready(&databases).await.unwrap().len();
    let sigterm = SystemTime::now();
    let restart = plane.restart_apiserver(GRACE).await;
    let back = Instant::now();

    // A fresh client: the old one's connections died with the server.
    let client = atoll_testenv::client().await;
    let databases: Api<Database> = Api::namespaced(client.clone(), n);
    // atoll's part first (its children), then everyone's (Ready needs the
    // controller-manager and kwok to have reconnected too).
    wait_for(
        "exactly the rendered children",
        Duration::from_secs(120),
        || atoll_e2e::exactly_rendered(&client, n),
    )
    .await;
    let children_in = back.elapsed();
    wait_for(
        "every Database Ready for its generation",
        Duration::from_secs(120),
        || all_ready(&databases),
    )
    .await;
    let ready_in = back.elapsed();
    atoll_e2e::assert_exactly_rendered(&client, n).await;

    // Nothing lost, nothing replaced: the same Databases, and every child
    // that existed before the restart is still the same object.
    assert_eq!(
        uids(&databases).await,
        dbs_before,
        "Databases lost or replaced"
    );
    let after = managed_metadata(&client, n).await.unwrap();
    assert_eq!(after.len(), total);
    let replaced: Vec<&String> = before
        .iter()
        .filter(|(key, meta)| after.get(*key).map(|m| &m.uid) != Some(&meta.uid))
        .map(|(key, _)| key)
        .collect();
    assert!(
        replaced.is_empty(),
        "children deleted or replaced across the restart: {replaced:?}"
    );
    // Proof that the restart came mid-reconcile and atoll reconnected:
    // children the new API server created. Creation times are whole
    // seconds, so count from the first whole second after the old one exited.
    let old_gone = Timestamp::try_from(sigterm + restart.stopping).unwrap();
    let cutoff = old_gone
        .checked_add(SignedDuration::from_secs(1))
        .unwrap()
        .round(
            TimestampRound::new()
                .smallest(Unit::Second)
                .mode(RoundMode::Floor),
        )
        .unwrap();
    let created_after = after
        .values()
        .filter(|m| m.creation_timestamp.as_ref().is_some_and(|t| t.0 >= cutoff))
        .count();
    assert!(
        created_after > 0,
        "atoll had applied every child before the API server stopped; restart earlier"
    );
    assert!(
        atoll.0.try_wait().unwrap().is_none(),
        "atoll exited across the restart"
    );

    eprintln!(
        "private control plane up in {:.1}s; {} of {total} children seen and \
         {ready_before}/{DATABASES} Databases Ready before the restart, \
         {created_after} children created after it; API server stopped in {:.1}s{}, down {:.1}s; \
         after it was back: children exactly rendered in {:.1}s, every Database Ready in {:.1}s; \
         whole test {:.1}s",
        started_in.as_secs_f64(),
        before.len(),
        restart.stopping.as_secs_f64(),
        if restart.killed { " (SIGKILL)" } else { "" },
        restart.down.as_secs_f64(),
        children_in.as_secs_f64(),
        ready_in.as_secs_f64(),
        began.elapsed().as_secs_f64(),
    );
}

/// Uid of every Database, by name.
async fn uids(api: &Api<Database>) -> BTreeMap<String, String> {
    api.list(&Default::default())
        .await
        .unwrap()
        .iter()
        .map(|db| (db.name_any(), db.uid().unwrap()))
        .collect()
}

/// Every Database has a status atoll wrote for its current generation
/// saying Ready, with every partition ready and nothing Degraded.
async fn all_ready(api: &Api<Database>) -> Result<(), String> {
    let behind = not_ready(api).await?;
    if behind.is_empty() {
        Ok(())
    } else {
        Err(format!("not yet Ready: {behind:?}"))
    }
}

/// Names of the Databases that are not Ready for their current generation
/// with every partition ready, or are Degraded.
async fn not_ready(api: &Api<Database>) -> Result<Vec<String>, String> {
    let dbs = api
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?;
    if dbs.items.len() != DATABASES {
        return Err(format!("{} Databases, not {DATABASES}", dbs.items.len()));
    }
    Ok(dbs
        .iter()
        .filter(|db| {
            let status = db.status.clone().unwrap_or_default();
            let is = |type_: &str| {
                status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == type_ && c.status == "True")
            };
            status.observed_generation != db.metadata.generation
                || !is("Ready")
                || is("Degraded")
                || status.ready_partitions != db.spec.partitions
        })
        .map(|db| db.name_any())
        .collect())
}
