//! Data safety over sequences of spec edits: without
//! `atoll.dev/allow-data-loss`, no sequence of edits (partitions up or down,
//! raft clusters and volumes changed, plugins switched) makes atoll delete a
//! child that holds data, move a partition away from the StatefulSet whose
//! volumes hold it, or hand data to another plugin.
//!
//! Each step renders through the real plugins in the sandbox and plans with
//! the controller's own [`atoll::controller::plan::plan`]; applying is
//! simulated (the cluster keeps what was applied and the plugin that
//! converged it; like the API server, it refuses to change an existing
//! StatefulSet's volume claim templates). What counts as data, and where a
//! partition's data lives, is decided here ([`holds_data`], [`homes`]), not
//! with the guard's own functions. The property is checked over random
//! sequences with the budget stated in docs/reliability.md; the run counts
//! how many sequences tried each kind of move and fails if a kind was never
//! tried. A fixed sequence must be refused.

use std::collections::BTreeMap;

use atoll::api::{Database, PluginRef};
use atoll::controller::observe::{self, Key, Kind, Live};
use atoll::controller::{discovery, plan};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::renderer;

/// One spec a user might apply.
#[derive(Debug, Clone)]
struct Edit {
    plugin: &'static str,
    partitions: u32,
    config: Value,
    allow_data_loss: bool,
}

fn database(edit: &Edit, converged: Option<&PluginRef>) -> Database {
    let mut annotations = serde_json::Map::new();
    if edit.allow_data_loss {
        // Approves generation 1, the generation of every edit here.
        annotations.insert("atoll.dev/allow-data-loss".into(), "1".into());
    }
    serde_json::from_value(json!({
        "apiVersion": "atoll.dev/v1alpha1",
        "kind": "Database",
        "metadata": {"name": "orders", "namespace": "shop", "uid": "u-1",
            "generation": 1, "annotations": annotations},
        "spec": {"partitions": edit.partitions,
            "storage": {"plugin": edit.plugin, "config": edit.config}},
        "status": {"plugin": converged},
    }))
    .unwrap()
}

/// The children "in the cluster", and the plugin that last converged them
/// (what the controller writes in `status.plugin`).
#[derive(Default)]
struct Cluster {
    live: BTreeMap<Key, Live>,
    converged: Option<PluginRef>,
}

impl Cluster {
    /// One reconcile of `edit`, as the controller does it.
    fn reconcile(&mut self, edit: &Edit) {
        let db = database(edit, self.converged.as_ref());
        let Ok(desired) = renderer().render(&db) else {
            return; // Degraded: children untouched
        };
        let group = discovery::objects(&db, &desired, &self.live);
        let plan = plan::plan(&db, renderer(), &desired, group, &self.live);
        if plan.refused.is_some() {
            return;
        }
        self.converged = Some(desired.plugin.clone());
        let prune: Vec<Key> = plan.prune.iter().map(|l| observe::key(&l.object)).collect();
        for object in plan.wanted {
            let key = observe::key(&object);
            if let Some(old) = self.live.get(&key)
                && key.0 == "StatefulSet"
                && old.object["spec"]["volumeClaimTemplates"]
                    != object["spec"]["volumeClaimTemplates"]
            {
                return; // the API server forbids it: ApplyFailed, retried
            }
            let kind = Kind::new(
                object["apiVersion"].as_str().unwrap(),
                object["kind"].as_str().unwrap(),
            );
            self.live.insert(key, Live { kind, object });
        }
        for key in prune {
            self.live.remove(&key);
        }
    }

    fn holding_data(&self) -> Vec<Key> {
        self.live
            .iter()
            .filter(|(_, l)| holds_data(&l.object))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Where each partition's data lives now ([`homes`] of the live objects).
    fn homes(&self) -> BTreeMap<u32, Vec<String>> {
        let objects: Vec<&Value> = self.live.values().map(|l| &l.object).collect();
        homes(&objects)
    }

    /// The plugin whose children hold data, if any do.
    fn data_plugin(&self) -> Option<String> {
        self.live
            .values()
            .find(|l| holds_data(&l.object) && l.kind.resource.kind != "Partition")
            .and_then(|l| l.object["metadata"]["labels"]["atoll.dev/plugin"].as_str())
            .map(str::to_string)
    }
}

/// This test's own idea of data: a claim, a StatefulSet with volume claim
/// templates, or a Partition record.
fn holds_data(object: &Value) -> bool {
    match object["kind"].as_str() {
        Some("PersistentVolumeClaim" | "Partition") => true,
        Some("StatefulSet") => object["spec"]["volumeClaimTemplates"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        _ => false,
    }
}

/// For each partition (by its Partition record), the StatefulSets with
/// volumes whose pods its Service selects: where its data lives.
fn homes(objects: &[&Value]) -> BTreeMap<u32, Vec<String>> {
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .copied()
    };
    let mut homes = BTreeMap::new();
    for record in objects.iter().filter(|o| o["kind"] == "Partition") {
        let (Some(id), Some(service)) = (
            record["spec"]["partitionId"].as_u64(),
            record["spec"]["serviceName"].as_str(),
        ) else {
            continue;
        };
        let Some(selector) = find("Service", service)
            .and_then(|s| s["spec"]["selector"].as_object())
            .filter(|s| !s.is_empty())
        else {
            continue;
        };
        let mut home: Vec<String> = objects
            .iter()
            .filter(|o| o["kind"] == "StatefulSet" && holds_data(o))
            .filter(|o| {
                let labels = &o["spec"]["template"]["metadata"]["labels"];
                selector.iter().all(|(k, v)| &labels[k] == v)
            })
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        home.sort();
        if !home.is_empty() {
            homes.insert(id as u32, home);
        }
    }
    homes
}

/// The kinds of move an edit tries, judged against what runs now and what
/// the edit renders (with neither the guard nor the plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Move {
    /// A partition whose data lives somewhere would live elsewhere.
    Partition,
    /// The volume claim templates of a StatefulSet holding data change.
    Volumes,
    /// Another plugin, while data exists.
    Plugin,
}

fn moves_tried(cluster: &Cluster, edit: &Edit) -> Vec<Move> {
    let mut moves = Vec::new();
    if cluster.data_plugin().is_some_and(|p| p != edit.plugin) {
        moves.push(Move::Plugin);
    }
    let db = database(edit, cluster.converged.as_ref());
    let Ok(desired) = renderer().render(&db) else {
        return moves;
    };
    let partitions = renderer().partition_objects(&db, &desired);
    let partitions: Vec<Value> = partitions
        .iter()
        .map(|p| serde_json::to_value(p).unwrap())
        .collect();
    let rendered: Vec<&Value> = desired.objects.iter().chain(&partitions).collect();
    let after = homes(&rendered);
    if cluster
        .homes()
        .iter()
        .any(|(p, home)| after.get(p).is_some_and(|h| h != home))
    {
        moves.push(Move::Partition);
    }
    let volumes_changed = desired.objects.iter().any(|o| {
        o["kind"] == "StatefulSet"
            && cluster.live.values().any(|l| {
                l.object["kind"] == "StatefulSet"
                    && l.object["metadata"]["name"] == o["metadata"]["name"]
                    && holds_data(&l.object)
                    && l.object["spec"]["volumeClaimTemplates"] != o["spec"]["volumeClaimTemplates"]
            })
    });
    if volumes_changed {
        moves.push(Move::Volumes);
    }
    moves
}

fn edit() -> impl Strategy<Value = Edit> {
    let configs = |plugin: &'static str| -> Vec<Value> {
        match plugin {
            "raft" => vec![
                json!({"clusters": 1, "replicas": 1, "volumeClaimTemplate": {"size": "1Gi"}}),
                json!({"clusters": 2, "replicas": 3, "volumeClaimTemplate": {"size": "1Gi"}}),
                json!({"clusters": 3, "replicas": 3, "volumeClaimTemplate": {"size": "1Gi"}}),
                json!({"clusters": 2, "replicas": 3}),
                json!({}),
            ],
            "redis" => vec![json!({}), json!({"replicas": 3})],
            "primary-backup" => vec![json!({}), json!({"backups": 2})],
            "log" => vec![json!({}), json!({"replicas": 3})],
            _ => vec![json!({})],
        }
    };
    prop::sample::select(vec!["raft", "cache", "redis", "primary-backup", "log"])
        .prop_flat_map(move |plugin| {
            (
                Just(plugin),
                prop::sample::select(vec![1u32, 2, 3, 4, 6, 8]),
                prop::sample::select(configs(plugin)),
            )
        })
        .prop_map(|(plugin, partitions, config)| Edit {
            plugin,
            partitions,
            config,
            allow_data_loss: false,
        })
}

/// Random sequences of edits never lose data, move it, or hand it to
/// another plugin; each kind of move must have been tried.
#[test]
fn no_edit_sequence_loses_moves_or_hands_over_data_without_approval() {
    use proptest::test_runner::{Config, TestRunner};
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let tried = std::sync::Mutex::new(BTreeMap::<Move, u32>::new());
    let result = runner.run(&prop::collection::vec(edit(), 1..8), |edits| {
        let mut cluster = Cluster::default();
        let mut kinds = std::collections::BTreeSet::new();
        for edit in &edits {
            kinds.extend(moves_tried(&cluster, edit));
            let before = cluster.holding_data();
            let homes = cluster.homes();
            let plugin = cluster.data_plugin();
            cluster.reconcile(edit);
            for key in before {
                prop_assert!(
                    cluster.live.contains_key(&key),
                    "{:?} was deleted by {:?}",
                    key,
                    edit
                );
            }
            let now = cluster.homes();
            for (partition, home) in &homes {
                prop_assert!(
                    now.get(partition).is_none_or(|h| h == home),
                    "partition {} moved from {:?} to {:?} by {:?}",
                    partition,
                    home,
                    now.get(partition),
                    edit
                );
            }
            if let (Some(was), Some(now)) = (&plugin, cluster.data_plugin()) {
                prop_assert_eq!(was, &now, "data handed to another plugin by {:?}", edit);
            }
        }
        let mut tried = tried.lock().unwrap();
        for kind in kinds {
            *tried.entry(kind).or_default() += 1;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let tried = tried.into_inner().unwrap();
    eprintln!("sequences trying each kind of move, of {cases}: {tried:?}");
    for kind in [Move::Partition, Move::Volumes, Move::Plugin] {
        assert!(
            tried.get(&kind).is_some_and(|n| *n > 0),
            "no sequence tried a {kind:?} move: {tried:?}"
        );
    }
}

/// The guard is not vacuous: these edits would delete data, are refused,
/// and go through once the annotation allows it.
#[test]
fn shrinking_is_refused_then_allowed_with_the_annotation() {
    let mut cluster = Cluster::default();
    let volume = json!({"size": "1Gi"});
    let big = Edit {
        plugin: "raft",
        partitions: 6,
        config: json!({"clusters": 3, "replicas": 3, "volumeClaimTemplate": volume}),
        allow_data_loss: false,
    };
    cluster.reconcile(&big);
    let held = cluster.holding_data();
    assert!(
        held.iter().any(|(kind, _)| kind == "StatefulSet"),
        "{held:?}"
    );
    assert!(held.iter().any(|(kind, _)| kind == "Partition"), "{held:?}");

    let small = Edit {
        partitions: 2,
        config: json!({"clusters": 2, "replicas": 3, "volumeClaimTemplate": volume}),
        ..big.clone()
    };
    cluster.reconcile(&small);
    assert_eq!(cluster.holding_data(), held, "refused: nothing deleted");
    let switched = Edit {
        plugin: "cache",
        config: json!({}),
        ..big.clone()
    };
    cluster.reconcile(&switched);
    assert_eq!(cluster.holding_data(), held, "refused: nothing deleted");

    cluster.reconcile(&Edit {
        allow_data_loss: true,
        ..small
    });
    let after = cluster.holding_data();
    assert!(after.len() < held.len(), "{after:?}");
}
