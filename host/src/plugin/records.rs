//! `StoragePlugin` records: one cluster-scoped object per plugin atoll knows,
//! so `kubectl get storageplugins` shows what is loaded, from where, which
//! version and digest, whether the last load failed and why, and how many
//! Databases use each plugin.
//!
//! Guarantees:
//! - Writes are server-side applies with field manager `atoll`, forcing
//!   ownership: the object (labels `app.kubernetes.io/managed-by=atoll`,
//!   `spec.description`) and, separately, the status subresource.
//! - A record is written only when it differs from the live object: the
//!   object when its labels or description differ, the status when any status
//!   field differs. Publishing an unchanged registry sends no write.
//! - Because atoll owns every status field it sets, a field it stops setting
//!   is removed by the apply: a successful load clears `lastError`.
//!
//! Caveats:
//! - Records are never deleted (atoll's RBAC grants no `delete` on them): a
//!   plugin that leaves the registry (its ConfigMap deleted) keeps its last
//!   record. Several atoll installations sharing a cluster share these
//!   cluster-scoped records and would overwrite each other's.
//! - Only the leader should publish, or replicas with different registries
//!   (say, mid-rollout) take turns rewriting the records.

use std::collections::BTreeMap;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::{Value, json};

use super::registry::{Entry, Registry, Source};
use crate::api::{Database, FIELD_MANAGER, LABEL_MANAGED_BY, StoragePlugin, StoragePluginStatus};

/// `status.state` of a plugin that loaded.
pub const STATE_LOADED: &str = "Loaded";
/// `status.state` of a plugin whose last load failed.
pub const STATE_FAILED: &str = "Failed";

pub use super::registry::Failure;

/// Publishes every plugin of `registry` and its recorded failures, counting
/// the Databases in `namespace` (all when `None`) that use each.
///
/// # Errors
/// The first API error; every record is attempted.
pub async fn publish_registry(
    client: &Client,
    registry: &Registry,
    namespace: Option<&str>,
) -> Result<(), kube::Error> {
    let databases: Api<Database> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut counts = BTreeMap::new();
    for db in databases.list(&Default::default()).await? {
        *counts.entry(db.spec.storage.plugin).or_insert(0u32) += 1;
    }
    publish_with_failures(client, registry, &counts, &registry.failures()).await
}

/// Publishes a `Loaded` record for every plugin in `registry`: description,
/// source, version, digest, and `databases_by_plugin[name]` (0 if absent).
///
/// Same as [`publish_with_failures`] with no failures: a `Failed` record of a
/// plugin that is in the registry becomes `Loaded` again. Every entry is
/// attempted; the first error is returned.
///
/// # Errors
/// The first API error.
pub async fn publish(
    client: &Client,
    registry: &Registry,
    databases_by_plugin: &BTreeMap<String, u32>,
) -> Result<(), kube::Error> {
    publish_with_failures(client, registry, databases_by_plugin, &BTreeMap::new()).await
}

/// Publishes every plugin in `registry` and every plugin in `failures`
/// (by plugin name):
/// - in the registry, not failed: `Loaded`, version and digest of the entry;
/// - in the registry and failed (an update that did not load while the
///   previous component keeps serving): `Failed` with `lastError`, version
///   and digest of the component still serving, source of the failed one;
/// - failed only: `Failed` with `lastError`, version and digest as last
///   published (empty for a plugin that never loaded).
///
/// Callers that hot-reload plugins keep the map of current failures and
/// pass it on every publish, so a failure stays visible until a load of that
/// plugin succeeds. Every record is attempted; the first error is returned.
///
/// # Errors
/// The first API error.
pub async fn publish_with_failures(
    client: &Client,
    registry: &Registry,
    databases_by_plugin: &BTreeMap<String, u32>,
    failures: &BTreeMap<String, Failure>,
) -> Result<(), kube::Error> {
    let api: Api<StoragePlugin> = Api::all(client.clone());
    let entries: BTreeMap<String, Entry> = registry
        .entries()
        .into_iter()
        .map(|e| (e.plugin.metadata().name.clone(), e))
        .collect();
    let mut names: Vec<&String> = entries.keys().chain(failures.keys()).collect();
    names.sort();
    names.dedup();
    let mut first_error = None;
    for name in names {
        let databases = databases_by_plugin.get(name).copied().unwrap_or(0);
        let result = write(
            &api,
            name,
            entries.get(name),
            failures.get(name),
            Some(databases),
        )
        .await;
        if let Err(e) = result {
            tracing::warn!(plugin = %name, error = %e, "cannot publish StoragePlugin");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Marks plugin `name` `Failed` with `error` as `lastError` and `source` as
/// its source, keeping the version, digest, databases and description last
/// published (a plugin that never loaded gets empty ones). Writes nothing if
/// the record already says exactly that.
///
/// A later [`publish`] of a registry holding `name` marks it `Loaded` again;
/// see [`publish_with_failures`] to keep the failure visible.
///
/// # Errors
/// The API server refused the read or the write.
pub async fn publish_failure(
    client: &Client,
    name: &str,
    source: &Source,
    error: &str,
) -> Result<(), kube::Error> {
    let api: Api<StoragePlugin> = Api::all(client.clone());
    let failure = Failure {
        source: source.clone(),
        error: error.to_owned(),
    };
    write(&api, name, None, Some(&failure), None).await
}

/// Applies the record of `name` where it differs from the live one.
/// `databases: None` keeps the live count.
async fn write(
    api: &Api<StoragePlugin>,
    name: &str,
    entry: Option<&Entry>,
    failure: Option<&Failure>,
    databases: Option<u32>,
) -> Result<(), kube::Error> {
    let live = api.get_opt(name).await?;
    let live_status = live.as_ref().and_then(|l| l.status.as_ref());
    let description = match (entry, &live) {
        (Some(entry), _) => entry.plugin.metadata().description.clone(),
        (None, Some(live)) => live.spec.description.clone(),
        (None, None) => String::new(),
    };
    let status = desired_status(entry, failure, databases, live_status);

    let object_current = live.as_ref().is_some_and(|l| {
        l.spec.description == description
            && l.meta()
                .labels
                .as_ref()
                .and_then(|labels| labels.get(LABEL_MANAGED_BY))
                .is_some_and(|v| v == "atoll")
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if !object_current {
        let body = json!({
            "apiVersion": StoragePlugin::api_version(&()),
            "kind": StoragePlugin::kind(&()),
            "metadata": { "name": name, "labels": { LABEL_MANAGED_BY: "atoll" } },
            "spec": { "description": description },
        });
        api.patch(name, &params, &Patch::Apply(&body)).await?;
    }
    if live_status != Some(&status) {
        let body = json!({
            "apiVersion": StoragePlugin::api_version(&()),
            "kind": StoragePlugin::kind(&()),
            "metadata": { "name": name },
            "status": serde_json::to_value(&status).unwrap_or(Value::Null),
        });
        api.patch_status(name, &params, &Patch::Apply(&body))
            .await?;
    }
    Ok(())
}

/// The status a record should have. `databases: None` keeps `live`'s count.
fn desired_status(
    entry: Option<&Entry>,
    failure: Option<&Failure>,
    databases: Option<u32>,
    live: Option<&StoragePluginStatus>,
) -> StoragePluginStatus {
    let live = live.cloned().unwrap_or_default();
    let databases = databases.unwrap_or(live.databases);
    let (version, digest) = match entry {
        Some(e) => (
            e.plugin.metadata().version.clone(),
            e.plugin.digest().to_string(),
        ),
        None => (live.version, live.digest),
    };
    match failure {
        Some(f) => StoragePluginStatus {
            source: f.source.to_string(),
            version,
            digest,
            state: STATE_FAILED.to_owned(),
            last_error: Some(f.error.clone()),
            databases,
            shadow_render: entry.and_then(|e| e.shadow_render.clone()),
        },
        None => StoragePluginStatus {
            source: entry.map(|e| e.source.to_string()).unwrap_or(live.source),
            version,
            digest,
            state: STATE_LOADED.to_owned(),
            last_error: None,
            databases,
            shadow_render: entry.and_then(|e| e.shadow_render.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::plugin::runtime::{Limits, Runtime};

    fn cache_entry() -> Entry {
        let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
        let (_, bytes) = crate::plugin::builtin::BUILTIN
            .iter()
            .find(|(name, _)| *name == "cache")
            .unwrap();
        Entry {
            plugin: Arc::new(runtime.load("cache", bytes).unwrap()),
            source: Source::Builtin,
            shadow_render: None,
        }
    }

    fn failure(error: &str) -> Failure {
        Failure {
            source: Source::ConfigMap {
                namespace: "plugins".into(),
                name: "cache-v2".into(),
            },
            error: error.into(),
        }
    }

    #[test]
    fn desired_status_of_loaded_failed_and_unknown_plugins() {
        let entry = cache_entry();
        let digest = entry.plugin.digest().to_string();
        let version = entry.plugin.metadata().version.clone();
        let stale = StoragePluginStatus {
            source: "configmap/plugins/old".into(),
            version: "0.0.1".into(),
            digest: "sha256:00".into(),
            state: STATE_FAILED.into(),
            last_error: Some("old trouble".into()),
            databases: 9,
            shadow_render: None,
        };

        // Loaded: everything from the entry, the error cleared.
        let loaded = desired_status(Some(&entry), None, Some(2), Some(&stale));
        assert_eq!(
            loaded,
            StoragePluginStatus {
                source: "built-in".into(),
                version: version.clone(),
                digest: digest.clone(),
                state: STATE_LOADED.into(),
                last_error: None,
                databases: 2,
                shadow_render: None,
            }
        );

        // A failed update while the entry keeps serving: its version and digest,
        // the failed source and the error.
        let updating = desired_status(Some(&entry), Some(&failure("bad")), Some(2), None);
        assert_eq!(updating.state, STATE_FAILED);
        assert_eq!(updating.source, "configmap/plugins/cache-v2");
        assert_eq!(updating.last_error.as_deref(), Some("bad"));
        assert_eq!((updating.version, updating.digest), (version, digest));

        // Failed and not loaded: last published version, digest and count kept.
        let failed = desired_status(None, Some(&failure("worse")), None, Some(&stale));
        assert_eq!(
            failed,
            StoragePluginStatus {
                source: "configmap/plugins/cache-v2".into(),
                version: "0.0.1".into(),
                digest: "sha256:00".into(),
                state: STATE_FAILED.into(),
                last_error: Some("worse".into()),
                databases: 9,
                shadow_render: None,
            }
        );
        let never_loaded = desired_status(None, Some(&failure("x")), None, None);
        assert_eq!(
            (never_loaded.version, never_loaded.digest),
            (String::new(), String::new())
        );
        assert_eq!(never_loaded.databases, 0);
    }
}
