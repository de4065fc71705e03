//! A deliberately hostile plugin for atoll's runtime tests.
//!
//! `spec.storage.config.mode` picks the misbehaviour of `render`, so one
//! component exercises every defence of the sandbox and the output policy.
//! Never shipped: the host's build compiles it for tests only.

use atoll_guest::k8s::{self, ServiceBuilder};
use atoll_guest::k8s_openapi::api::core::v1::ConfigMap;
use atoll_guest::k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use atoll_guest::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use atoll_guest::{Database, Observed, Output, Placement, Plugin, StatusReport};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Behave: one ConfigMap and one partition Service.
    #[default]
    Ok,
    /// Spin forever.
    Loop,
    /// Allocate and touch 1 GiB.
    Alloc,
    /// Panic, which traps.
    Trap,
    /// Emit a ClusterRoleBinding granting cluster-admin.
    ClusterRoleBinding,
    /// Emit an object in namespace `kube-system`.
    OtherNamespace,
    /// Emit an object whose name lacks the Database prefix.
    BadName,
    /// Emit 20 MB of ConfigMaps (over the 16 MiB policy bound, under the memory cap).
    Huge,
    /// Flood stdout and the log import.
    Noisy,
    /// Emit 50 MB of ConfigMaps (over the memory cap while encoding).
    Flood,
    /// Emit an object that is not JSON at all.
    Malformed,
    /// Allocate and touch `mib` MiB (every page written), then behave like
    /// `ok`: memory use under or over the per-call cap.
    Touch,
    /// Emit a PersistentVolumeClaim of its own and a StatefulSet with
    /// volumes whose claims the plugin asks Kubernetes to delete (on
    /// scale-down and deletion): what atoll's deletion policy overrides.
    Claims,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Config {
    pub mode: Mode,
    /// MiB to touch in mode `touch`.
    pub mib: u32,
}

pub struct Hostile;

fn claim(name: &str) -> String {
    serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}})
    .to_string()
}

fn statefulset(name: &str) -> String {
    let labels = serde_json::json!({"app": format!("{name}-claims")});
    serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {"replicas": 1, "serviceName": name,
            "selector": {"matchLabels": labels},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"},
            "template": {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}}}]}})
    .to_string()
}

fn config_map(name: String, namespace: Option<&str>, payload: String) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: namespace.map(str::to_string),
            ..Default::default()
        },
        data: Some([("payload".to_string(), payload)].into()),
        ..Default::default()
    }
}

impl Plugin for Hostile {
    type Config = Config;
    const NAME: &'static str = "hostile";
    const VERSION: &'static str = "6.6.6";
    const DESCRIPTION: &'static str = "Misbehaves on purpose (tests only)";

    fn render(db: &Database, config: &Config, out: &mut Output) -> Result<(), String> {
        match config.mode {
            Mode::Ok | Mode::Noisy | Mode::Touch => {
                if matches!(config.mode, Mode::Touch) {
                    let mut big = vec![0u8; (config.mib as usize) << 20];
                    for page in big.chunks_mut(4096) {
                        page[0] = 1;
                    }
                    std::hint::black_box(&big);
                }
                if matches!(config.mode, Mode::Noisy) {
                    for i in 0..100_000 {
                        println!("noise line {i}: {}", "x".repeat(100));
                        atoll_guest::log::info("log noise");
                    }
                }
                out.push(config_map(db.child("ok"), None, "fine".into()));
            }
            Mode::Loop => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Mode::Alloc => {
                let mut big = vec![0u8; 1 << 30];
                big[12345] = 1;
                std::hint::black_box(&big);
            }
            Mode::Trap => panic!("hostile plugin panics on purpose"),
            Mode::ClusterRoleBinding => out.push(ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some(db.child("admin")),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name: "cluster-admin".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "default".into(),
                    namespace: Some(db.namespace.clone()),
                    ..Default::default()
                }]),
            }),
            Mode::OtherNamespace => out.push(config_map(
                db.child("x"),
                Some("kube-system"),
                "escape".into(),
            )),
            Mode::BadName => out.push(config_map("evil".into(), None, "squat".into())),
            Mode::Huge => {
                for i in 0..20 {
                    out.push(config_map(db.child(i), None, "x".repeat(1_000_000)));
                }
            }
            Mode::Flood => {
                for i in 0..50 {
                    out.push(config_map(db.child(i), None, "x".repeat(1_000_000)));
                }
            }
            Mode::Claims => {
                out.push_raw(claim(&db.child("claim")));
                out.push_raw(statefulset(&db.name));
            }
            Mode::Malformed => out.push_raw(format!(
                "{{\"kind\": \"ConfigMap\", \"metadata\": {{\"name\": \"{}\"",
                db.name
            )),
        }
        let selector = k8s::labels([("atoll.dev/database", db.name.as_str())]);
        for p in db.partition_ids() {
            let name = db.child(format!("p{p}"));
            out.push(
                ServiceBuilder::new(&name, &selector)
                    .port("api", 5678)
                    .build(),
            );
            out.bind(p, name, 5678, Placement::Nowhere);
        }
        Ok(())
    }

    fn status(db: &Database, _: &Config, _: &Observed) -> StatusReport {
        StatusReport {
            ready_partitions: db.partition_ids().collect(),
            available_partitions: db.partition_ids().collect(),
            message: "always ready".into(),
        }
    }
}

atoll_guest::export!(Hostile);
