//! Staged rollouts of a plugin version declared in a StoragePlugin spec,
//! against the real control plane: canary 2 → 50% → 100% with a health gate
//! per step, a pinned Database that never moves, atoll killed mid-rollout
//! resuming, a rollback to the previous version, and a release that renders
//! badly for a labelled subset halting at the canary with those rolled back.
//!
//! The StoragePlugin `raft` is cluster-scoped: each test holds the records
//! lock exclusively and clears the spec when it ends.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use atoll::api::{ANNOTATION_PLUGIN_DIGEST, Database, RolloutStatus, StoragePlugin};
use atoll::contract::Digest;
use atoll_e2e::{KillOnDrop, ResetPlugin, k, raft_database, ready_on, start_atoll};
use atoll_testenv::{TestNamespace, client, wait_for};
use kube::api::{Api, PostParams};

const LABELLED: &str = env!("ATOLL_TEST_RAFT_LABELLED_WASM");

/// The labelled raft release in ConfigMap `raft-next` of `ns` (no label:
/// the spec names it).
async fn ship_release(ns: &str) -> String {
    k(
        ns,
        &[
            "create",
            "configmap",
            "raft-next",
            &format!("--from-file=plugin.wasm={}", Path::new(LABELLED).display()),
        ],
        None,
    )
    .await;
    Digest::of(&std::fs::read(LABELLED).unwrap()).to_string()
}

fn builtin_raft_digest() -> String {
    let (_, bytes) = atoll::plugin::builtin::BUILTIN
        .iter()
        .find(|(n, _)| *n == "raft")
        .unwrap();
    Digest::of(bytes).to_string()
}

/// Apply raft's spec: v1 built in, v2 from `raft-next` in `ns`, `target`.
async fn declare(ns: &str, target: &str, rollout: &str) {
    let yaml = format!(
        r#"
apiVersion: atoll.dev/v1alpha1
kind: StoragePlugin
metadata:
  name: raft
spec:
  versions:
  - name: v1
    source: {{builtin: {{}}}}
  - name: v2
    source: {{configMap: {{namespace: {ns}, name: raft-next}}}}
  target: {target}
  rollout: {rollout}
"#
    );
    k(ns, &["apply", "-f", "-"], Some(&yaml)).await;
}

async fn create(client: &kube::Client, ns: &str, db: Database) {
    let api: Api<Database> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &db).await.unwrap();
}

async fn databases(client: &kube::Client, ns: &str) -> Vec<Database> {
    let api: Api<Database> = Api::namespaced(client.clone(), ns);
    api.list(&Default::default()).await.unwrap().items
}

async fn rollout(client: &kube::Client) -> Option<RolloutStatus> {
    let api: Api<StoragePlugin> = Api::all(client.clone());
    api.get("raft").await.ok()?.status?.rollout
}

async fn wait_all_ready_on(client: &kube::Client, ns: &str, names: &[String], digest: &str) {
    wait_for(
        &format!("{} Databases Ready on {digest}", names.len()),
        Duration::from_secs(120),
        || async {
            let dbs = databases(client, ns).await;
            let behind: Vec<String> = dbs
                .iter()
                .filter(|d| names.contains(&d.metadata.name.clone().unwrap_or_default()))
                .filter(|d| !ready_on(d, digest))
                .map(|d| d.metadata.name.clone().unwrap_or_default())
                .collect();
            behind
                .is_empty()
                .then_some(())
                .ok_or(format!("behind: {behind:?}"))
        },
    )
    .await;
}

#[tokio::test]
async fn canary_then_waves_each_gated_resume_after_kill_pinned_stays_and_rollback() {
    let _records = atoll_e2e::plugin_records_exclusive().await;
    let client = client().await;
    // `atoll run` installs nothing: the StoragePlugin schema must be this one.
    atoll_testenv::install_crds(&client, atoll::api::crds()).await;
    ResetPlugin::now(&client, "raft").await;
    let _reset = ResetPlugin("raft");
    let ns = TestNamespace::new(&client, "rollout").await;
    let n = ns.name();
    let mut atoll = KillOnDrop(start_atoll(n));
    let new = ship_release(n).await;
    let old = builtin_raft_digest();

    let names: Vec<String> = (0..20).map(|i| format!("db-{i:02}")).collect();
    for name in &names {
        create(&client, n, raft_database(name, 1)).await;
    }
    let mut pinned = raft_database("pinned", 1);
    pinned.spec.storage.digest = Some(old.clone());
    create(&client, n, pinned).await;
    let all: Vec<String> = names.iter().cloned().chain(["pinned".into()]).collect();
    wait_all_ready_on(&client, n, &all, &old).await;

    declare(
        n,
        "v2",
        "{canary: {count: 2}, waves: [{percent: 50}, {percent: 100}], gateDeadlineSeconds: 90}",
    )
    .await;

    // Watch the rollout; at every look the fleet must agree with the step:
    // no more Databases assigned than the step allows, and a step past the
    // first only once the previous step's Databases were Ready on the new
    // digest. Kill atoll once step 2 is under way, start it again.
    let expected_assigned = BTreeMap::from([(1u32, 2usize), (2, 10), (3, 20)]);
    let mut seen_steps = Vec::new();
    let mut killed = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "rollout did not complete: {:?}",
            rollout(&client).await
        );
        // One list is one consistent snapshot: a step's Databases are
        // assigned only after the previous step's were Ready on the new
        // digest, so more than 2 assigned means at least 2 Ready, more
        // than 10 at least 10.
        let dbs = databases(&client, n).await;
        let status = rollout(&client).await;
        let assigned = dbs
            .iter()
            .filter(|d| {
                d.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_PLUGIN_DIGEST))
                    == Some(&new)
            })
            .count();
        let ready_new = dbs.iter().filter(|d| ready_on(d, &new)).count();
        for gate in [2, 10] {
            assert!(
                assigned <= gate || ready_new >= gate,
                "{assigned} assigned while only {ready_new} were Ready on the new digest"
            );
        }
        if let Some(s) = status.as_ref().filter(|s| s.to.digest == new) {
            assert_ne!(s.phase, "Halted", "{s:?}");
            if s.phase == "Progressing" {
                if seen_steps.last() != Some(&s.step) {
                    seen_steps.push(s.step);
                }
                // A step never assigns beyond its share (the status is
                // written after the step's assignments).
                assert!(
                    assigned <= expected_assigned[&(s.step + 1).min(3)],
                    "step {}: {assigned} assigned",
                    s.step
                );
                if s.step == 2 && !killed {
                    drop(atoll);
                    killed = true;
                    atoll = KillOnDrop(start_atoll(n));
                }
            }
            if s.phase == "Complete" {
                assert_eq!((s.moved, s.total, s.skipped_pinned), (20, 20, 1), "{s:?}");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(killed, "atoll was killed mid-rollout");
    assert!(
        seen_steps.contains(&1) && seen_steps.contains(&3),
        "steps seen: {seen_steps:?}"
    );
    wait_all_ready_on(&client, n, &names, &new).await;
    wait_all_ready_on(&client, n, &["pinned".to_string()], &old).await;
    // The record counts Databases per version (published every 30s and on
    // every rollout change).
    wait_for(
        "20 Databases counted on the new default",
        Duration::from_secs(60),
        || async {
            let record = Api::<StoragePlugin>::all(client.clone())
                .get("raft")
                .await
                .map_err(|e| e.to_string())?;
            let versions = record.status.map(|s| s.versions).unwrap_or_default();
            versions
                .iter()
                .any(|v| v.digest == new && v.databases == 20 && v.default)
                .then_some(())
                .ok_or(format!("{versions:?}"))
        },
    )
    .await;
    let events = k(
        n,
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            "involvedObject.kind=StoragePlugin",
            "-o",
            "jsonpath={.items[*].reason}",
        ],
        None,
    )
    .await;
    assert!(events.contains("RolloutComplete"), "{events}");

    // Rolling back: a rollout to the previous version.
    declare(
        n,
        "v1",
        "{waves: [{percent: 100}], gateDeadlineSeconds: 90}",
    )
    .await;
    wait_for(
        "the rollback completes",
        Duration::from_secs(120),
        || async {
            match rollout(&client).await {
                Some(s) if s.phase == "Complete" && s.to.digest == old => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    wait_all_ready_on(&client, n, &all, &old).await;
    drop(atoll);
}

#[tokio::test]
async fn a_release_bad_for_a_labelled_subset_halts_at_the_canary_and_rolls_it_back() {
    let _records = atoll_e2e::plugin_records_exclusive().await;
    let client = client().await;
    // `atoll run` installs nothing: the StoragePlugin schema must be this one.
    atoll_testenv::install_crds(&client, atoll::api::crds()).await;
    ResetPlugin::now(&client, "raft").await;
    let _reset = ResetPlugin("raft");
    let ns = TestNamespace::new(&client, "rollout-halt").await;
    let n = ns.name();
    let _atoll = KillOnDrop(start_atoll(n));
    let new = ship_release(n).await;
    let old = builtin_raft_digest();

    let names: Vec<String> = (0..6).map(|i| format!("db-{i}")).collect();
    let bad = ["db-1", "db-4"];
    for name in &names {
        let mut db = raft_database(name, 1);
        if bad.contains(&name.as_str()) {
            db.metadata.labels = Some(
                [
                    ("atoll.dev/test-unready".to_string(), "true".to_string()),
                    ("tier".to_string(), "canary".to_string()),
                ]
                .into(),
            );
        }
        create(&client, n, db).await;
    }
    wait_all_ready_on(&client, n, &names, &old).await;

    declare(
        n,
        "v2",
        "{canary: {selector: {matchLabels: {tier: canary}}}, waves: [{percent: 100}], gateDeadlineSeconds: 15, rollbackOnFailure: true}",
    )
    .await;
    let halted = wait_for("the rollout halts", Duration::from_secs(90), || async {
        match rollout(&client).await {
            Some(s) if s.phase == "Halted" => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(halted.step, 1, "{halted:?}");
    let failed: Vec<String> = bad.iter().map(|b| format!("{n}/{b}")).collect();
    assert_eq!(halted.failed, failed);
    assert_eq!(halted.rolled_back, 2);
    assert!(halted.message.contains("not Ready"), "{}", halted.message);

    // The failed ones are back on the old version and Ready; the others
    // never rendered with the new one.
    wait_all_ready_on(&client, n, &names, &old).await;
    for db in databases(&client, n).await {
        let name = db.metadata.name.clone().unwrap_or_default();
        let assigned = db
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_PLUGIN_DIGEST))
            .cloned();
        if bad.contains(&name.as_str()) {
            assert_eq!(assigned.as_deref(), Some(old.as_str()), "{name}");
        } else {
            assert_eq!(assigned, None, "{name} untouched");
        }
        assert_ne!(
            db.status.and_then(|s| s.plugin).map(|p| p.digest),
            Some(new.clone())
        );
    }
    let events = k(
        n,
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            "involvedObject.kind=StoragePlugin,reason=RolloutHalted",
            "-o",
            "name",
        ],
        None,
    )
    .await;
    assert!(!events.trim().is_empty(), "a RolloutHalted Event");
}
