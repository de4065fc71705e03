//! Data safety over sequences of spec edits: without
//! `atoll.dev/allow-data-loss`, no sequence of edits (partitions up or down,
//! config changes, even switching plugins) makes atoll delete a child that
//! holds data — a PVC, a StatefulSet with volume claim templates or a
//! Partition.
//!
//! Each step renders through the real plugins in the sandbox and plans with
//! the controller's own [`atoll::controller::plan::plan`]; applying is simulated (the
//! cluster keeps what was applied; like the API server, it refuses to change
//! an existing StatefulSet's volume claim templates). The property is checked
//! with proptest over random sequences, with the budget stated in
//! docs/reliability.md, plus a fixed sequence that must be refused.

use std::collections::BTreeMap;

use atoll::api::Database;
use atoll::controller::observe::{self, Key, Kind, Live};
use atoll::controller::plan;
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

fn database(edit: &Edit) -> Database {
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
    }))
    .unwrap()
}

/// The children "in the cluster".
#[derive(Default)]
struct Cluster {
    live: BTreeMap<Key, Live>,
}

impl Cluster {
    /// One reconcile of `edit`, as the controller does it.
    fn reconcile(&mut self, edit: &Edit) {
        let db = database(edit);
        let Ok(desired) = renderer().render(&db) else {
            return; // Degraded: children untouched
        };
        let plan = plan::plan(&db, renderer(), &desired, &self.live);
        if plan.refused.is_some() {
            return;
        }
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
            .filter(|(_, l)| plan::holds_data(l))
            .map(|(k, _)| k.clone())
            .collect()
    }
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

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_edit_sequence_deletes_data_without_the_annotation(
        edits in prop::collection::vec(edit(), 1..8),
    ) {
        let mut cluster = Cluster::default();
        for edit in &edits {
            let before = cluster.holding_data();
            cluster.reconcile(edit);
            for key in before {
                prop_assert!(
                    cluster.live.contains_key(&key),
                    "{:?} was deleted by {:?}", key, edit
                );
            }
        }
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
