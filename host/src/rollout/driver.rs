//! The rollout driver: watches StoragePlugins, loads the versions their
//! specs declare, keeps each managed plugin's default in step with its
//! persisted rollout status (every replica), and — on the leader only —
//! plans and carries out the next moves.
//!
//! Guarantees:
//! - Everything a rollout needs to continue is in the API: the assignment
//!   of each moved Database (annotation `atoll.dev/plugin-digest`) and the
//!   rollout's progress (`StoragePlugin.status.rollout`, field manager
//!   `atoll-rollout`). A restarted atoll or a new leader resumes from them.
//! - A Database is assigned before the status says it moved; a crash in
//!   between repeats nothing harmful (the planner sees it on the target).
//! - Non-leaders only load and follow: they never write.
//!
//! Caveat: the driver polls (every [`TICK`] while a rollout progresses, and
//! on every StoragePlugin change), so a gate is noticed up to a tick late.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::plan::{self, Action, COMPLETE, Candidate, Inputs};
use super::versions::{self, SpecLoader};
use crate::api::{ANNOTATION_PLUGIN_DIGEST, Database, RolloutStatus, StoragePlugin, VersionRef};
use crate::metrics::Metrics;
use crate::plugin::source::{Requeue, ShadowRenderer};
use crate::plugin::{LoadedPlugin, Registry, Wanted};

/// Field manager of `status.rollout` and of the assignment annotation.
pub const ROLLOUT_MANAGER: &str = "atoll-rollout";
/// How often an active rollout is looked at.
pub const TICK: Duration = Duration::from_secs(2);
/// How often an idle driver looks again (ConfigMap sources may change).
const IDLE: Duration = Duration::from_secs(15);

/// Drives the rollouts of every StoragePlugin with a spec.
pub struct Driver {
    pub client: Client,
    pub registry: Arc<Registry>,
    pub shadow: Arc<dyn ShadowRenderer>,
    pub requeue: Requeue,
    pub metrics: Metrics,
    /// Namespace of the Databases atoll reconciles; `None` for all.
    pub database_namespace: Option<String>,
    /// Namespace of `configMap` sources without one, and of pull Secrets.
    pub plugin_namespace: Option<String>,
    /// Whether this replica writes.
    pub leader: watch::Receiver<bool>,
}

impl Driver {
    /// Run until the task is aborted. `synced` turns true after the first
    /// pass, once every declared version was loaded and every managed
    /// plugin's default restored from its rollout status.
    pub async fn run(self, synced: watch::Sender<bool>) {
        let recorder = crate::api::event_recorder(self.client.clone());
        let mut loader = SpecLoader::new(
            self.client.clone(),
            Arc::clone(&self.registry),
            self.plugin_namespace.clone(),
        );
        let api: Api<StoragePlugin> = Api::all(self.client.clone());
        let mut changes = watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .touched_objects()
            .boxed();
        let mut managed: std::collections::BTreeSet<String> = Default::default();
        loop {
            let active = match api.list(&Default::default()).await {
                Ok(list) => {
                    let mut active = false;
                    let mut now_managed = std::collections::BTreeSet::new();
                    for sp in list.items {
                        if sp.spec.versions.is_empty() {
                            continue;
                        }
                        now_managed.insert(sp.name_any());
                        active |= self.pass(&sp, &mut loader, &recorder).await;
                    }
                    for gone in managed.difference(&now_managed) {
                        // The spec was emptied: labelled ConfigMaps decide again.
                        self.registry.set_managed(gone, false);
                    }
                    managed = now_managed;
                    synced.send_replace(true);
                    active
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list StoragePlugins; retrying");
                    false
                }
            };
            let wait = if active { TICK } else { IDLE };
            let _ = tokio::time::timeout(wait, changes.next()).await;
        }
    }

    /// One plugin: load, follow, and (leader) plan. Returns whether a
    /// rollout of it is progressing.
    async fn pass(&self, sp: &StoragePlugin, loader: &mut SpecLoader, recorder: &Recorder) -> bool {
        let name = sp.name_any();
        self.registry.set_managed(&name, true);
        if let Err(error) = versions::check(&sp.spec) {
            tracing::warn!(plugin = %name, %error, "invalid StoragePlugin spec");
            if *self.leader.borrow() {
                report(recorder, sp, true, "InvalidSpec", error).await;
            }
            return false;
        }
        let versions::Loaded {
            declared,
            failure_changed,
        } = loader.load(&name, &sp.spec).await;
        if let Some(failure) = failure_changed
            && *self.leader.borrow()
        {
            // A version that failed (or loads again) is on the record at
            // once, not at the next periodic publish.
            if let Some(f) = &failure {
                report(recorder, sp, true, "VersionFailed", f.error.clone()).await;
            }
            self.publish(&name).await;
        }
        let rollout = sp.status.as_ref().and_then(|s| s.rollout.clone());
        // Every replica follows the persisted rollout's default.
        if let Some(r) = &rollout {
            let default = if r.phase == COMPLETE { &r.to } else { &r.from };
            self.registry.set_default(&name, &default.digest);
        }
        let Some(target_name) = versions::target_name(&sp.spec) else {
            return false;
        };
        let Some(Ok(target)) = declared
            .iter()
            .find(|d| d.name == target_name)
            .map(|d| d.loaded.clone())
        else {
            return false; // its load failure is on the record
        };
        let Some(default) = self.registry.entry(&name) else {
            return false;
        };
        let target = version_ref(target_name, &target);
        let default = version_ref(
            &declared
                .iter()
                .find(|d| {
                    d.loaded
                        .as_ref()
                        .is_ok_and(|p| p.digest() == default.plugin.digest())
                })
                .map(|d| d.name.clone())
                .unwrap_or_default(),
            &default.plugin,
        );
        if !*self.leader.borrow() {
            return rollout.is_some_and(|r| r.phase == plan::PROGRESSING);
        }
        let dbs = self.databases(&name).await;
        let candidates: Vec<Candidate> = dbs.iter().map(|db| self.candidate(&name, db)).collect();
        let planned = self
            .plan(sp, &target, &default, rollout.as_ref(), dbs, candidates)
            .await;
        let progressing = planned
            .status
            .as_ref()
            .is_some_and(|s| s.phase == plan::PROGRESSING);
        self.carry_out(sp, &planned.actions, recorder).await;
        if planned.status != rollout
            && let Some(status) = &planned.status
        {
            self.write_status(&name, status).await;
            // Version counts and the default follow the rollout.
            self.publish(&name).await;
        }
        progressing
    }

    /// Write the StoragePlugin records (versions, counts, failures).
    async fn publish(&self, plugin: &str) {
        let published = crate::plugin::records::publish_registry(
            &self.client,
            &self.registry,
            self.database_namespace.as_deref(),
        )
        .await;
        if let Err(e) = published {
            tracing::warn!(plugin, error = %e, "cannot publish StoragePlugin records");
        }
    }

    async fn plan(
        &self,
        sp: &StoragePlugin,
        target: &VersionRef,
        default: &VersionRef,
        status: Option<&RolloutStatus>,
        dbs: Vec<Database>,
        candidates: Vec<Candidate>,
    ) -> plan::Plan {
        let policy = sp.spec.rollout.clone();
        let (target, default, status) = (target.clone(), default.clone(), status.cloned());
        let shadow = Arc::clone(&self.shadow);
        let registry = Arc::clone(&self.registry);
        let name = sp.name_any();
        let planned = tokio::task::spawn_blocking(move || {
            let by_key: BTreeMap<String, &Database> = dbs.iter().map(|d| (key(d), d)).collect();
            let to = registry.version(&name, &target.digest).map(|e| e.plugin);
            let mut refuse = |c: &Candidate| -> Option<String> {
                let db = by_key.get(&c.key)?;
                let to = to.as_ref()?;
                let from = registry.version(&name, &c.effective).map(|e| e.plugin);
                shadow_verdict(shadow.as_ref(), db, from.as_ref(), to)
            };
            let inputs = Inputs {
                policy: policy.as_ref(),
                target: &target,
                default: &default,
                status: status.as_ref(),
                now: Timestamp::now(),
            };
            plan::plan(&inputs, &candidates, &mut refuse)
        })
        .await;
        planned.unwrap_or_else(|e| {
            tracing::error!(error = %e, "rollout planning panicked");
            plan::Plan {
                status: None,
                actions: Vec::new(),
            }
        })
    }

    async fn carry_out(&self, sp: &StoragePlugin, actions: &[Action], recorder: &Recorder) {
        let name = sp.name_any();
        for action in actions {
            match action {
                Action::Assign {
                    db,
                    digest,
                    rollback,
                    hold,
                } => {
                    if let Err(e) = self.assign(db, digest).await {
                        tracing::warn!(plugin = %name, database = %db, error = %e, "cannot assign a plugin version");
                        continue;
                    }
                    if *rollback {
                        self.metrics.rollout_rolled_back(&name);
                    } else if !hold {
                        self.metrics.rollout_moved(&name);
                    }
                }
                Action::SetDefault(digest) => {
                    self.registry.set_default(&name, digest);
                    for db in self.databases(&name).await {
                        self.requeue.send(ObjectRef::from_obj(&db));
                    }
                }
                Action::Report {
                    warning,
                    reason,
                    note,
                } => {
                    if *reason == "RolloutHalted" {
                        self.metrics.rollout_halted(&name);
                    }
                    tracing::info!(plugin = %name, reason, "{note}");
                    report(recorder, sp, *warning, reason, note.clone()).await;
                }
            }
        }
    }

    /// Write the assignment annotation (the Database watch reconciles it).
    async fn assign(&self, key: &str, digest: &str) -> Result<(), kube::Error> {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let api: Api<Database> = Api::namespaced(self.client.clone(), ns);
        let patch = json!({"metadata": {"annotations": {ANNOTATION_PLUGIN_DIGEST: digest}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    async fn write_status(&self, name: &str, status: &RolloutStatus) {
        let api: Api<StoragePlugin> = Api::all(self.client.clone());
        let body = json!({
            "apiVersion": StoragePlugin::api_version(&()),
            "kind": StoragePlugin::kind(&()),
            "metadata": { "name": name },
            "status": { "rollout": status },
        });
        let params = PatchParams::apply(ROLLOUT_MANAGER).force();
        if let Err(e) = api.patch_status(name, &params, &Patch::Apply(&body)).await {
            tracing::warn!(plugin = %name, error = %e, "cannot write the rollout status");
        }
    }

    /// Databases in scope using `plugin`.
    async fn databases(&self, plugin: &str) -> Vec<Database> {
        let api: Api<Database> = match &self.database_namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        match api.list(&Default::default()).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter(|db| db.spec.storage.plugin == plugin)
                .collect(),
            Err(e) => {
                tracing::warn!(plugin, error = %e, "cannot list Databases");
                Vec::new()
            }
        }
    }

    /// What the planner needs of `db`.
    fn candidate(&self, plugin: &str, db: &Database) -> Candidate {
        candidate(&self.registry, plugin, db)
    }
}

/// `db` as the planner sees it, its version chosen as the controller would.
pub fn candidate(registry: &Registry, plugin: &str, db: &Database) -> Candidate {
    let storage = &db.spec.storage;
    let requirement = storage
        .version
        .as_deref()
        .and_then(|v| semver::VersionReq::parse(v).ok());
    let assigned = db.annotations().get(ANNOTATION_PLUGIN_DIGEST);
    let wanted = Wanted {
        digest: storage.digest.as_deref(),
        assigned: assigned.map(String::as_str),
        requirement: requirement.as_ref(),
    };
    let effective = registry
        .choose(plugin, wanted)
        .map(|p| p.digest().to_string())
        .unwrap_or_default();
    let status = db.status.as_ref();
    let condition = |type_: &str| {
        status
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
            .is_some_and(|c| c.status == "True")
    };
    Candidate {
        key: key(db),
        labels: db.labels().clone(),
        pinned: storage.digest.is_some() || storage.version.is_some(),
        assigned: assigned.is_some(),
        effective,
        rendered: status
            .and_then(|s| s.plugin.as_ref())
            .map(|p| p.digest.clone()),
        current: status.and_then(|s| s.observed_generation) == db.metadata.generation,
        ready: condition("Ready"),
        degraded: condition("Degraded"),
    }
}

/// Why `db` must not move to `to` (the shadow render), or `None`.
pub fn shadow_verdict(
    shadow: &dyn ShadowRenderer,
    db: &Database,
    from: Option<&Arc<LoadedPlugin>>,
    to: &Arc<LoadedPlugin>,
) -> Option<String> {
    let new = match shadow.render_with(db, to) {
        Ok(new) => new,
        Err(e) => return Some(format!("does not render: {e}")),
    };
    let old = from.and_then(|f| shadow.render_with(db, f).ok())?;
    if old.drops_objects_of(&new) {
        return Some("would prune objects it renders now (data-loss guard)".into());
    }
    let homes: BTreeMap<u32, &str> = old
        .bindings
        .iter()
        .map(|(p, service, _)| (*p, service.as_str()))
        .collect();
    let moved = new
        .bindings
        .iter()
        .any(|(p, service, _)| homes.get(p).is_some_and(|s| *s != service));
    moved.then(|| "would move partitions to other Services (data-loss guard)".into())
}

fn key(db: &Database) -> String {
    format!("{}/{}", db.namespace().unwrap_or_default(), db.name_any())
}

fn version_ref(name: &str, plugin: &LoadedPlugin) -> VersionRef {
    VersionRef {
        name: name.to_string(),
        version: plugin.metadata().version.clone(),
        digest: plugin.digest().to_string(),
    }
}

async fn report(
    recorder: &Recorder,
    sp: &StoragePlugin,
    warning: bool,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(crate::plugin::configmap::truncate(note, 1024)),
        action: "Rollout".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &sp.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot record an Event on a StoragePlugin");
    }
}
