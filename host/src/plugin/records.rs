//! `StoragePlugin` records: one cluster-scoped object per plugin atoll knows,
//! so `kubectl get storageplugins` shows every loaded version, from where,
//! with its digest and how many Databases it renders, whether the last load
//! failed and why, and which version is the default.
//!
//! Guarantees:
//! - atoll writes only the status (server-side apply, field manager
//!   `atoll`, forcing ownership). It creates a missing record with nothing
//!   but its name and the label `app.kubernetes.io/managed-by=atoll`; the
//!   spec belongs to users (or GitOps tools).
//! - `status.rollout` is written by the rollout driver under its own field
//!   manager (`atoll-rollout`), so a publish here never removes it.
//! - A status is written only when a field this module sets differs from
//!   the live object. Publishing an unchanged registry sends no write.
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
//! - A version's `name` is found by matching its source with the spec's
//!   `versions[].source`; a labelled ConfigMap's version has none.

use std::collections::BTreeMap;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::{Value, json};

use super::registry::{Entry, Registry, Source};
use crate::api::{
    Database, FIELD_MANAGER, LABEL_MANAGED_BY, StoragePlugin, StoragePluginSpec,
    StoragePluginStatus, VersionSource, VersionStatus,
};

/// `status.state` of a plugin that loaded.
pub const STATE_LOADED: &str = "Loaded";
/// `status.state` of a plugin whose last load failed.
pub const STATE_FAILED: &str = "Failed";

pub use super::registry::Failure;

/// How many Databases use each plugin, and each version (by digest in
/// `status.plugin`), as [`publish_with_failures`] reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Databases by `spec.storage.plugin`.
    pub by_plugin: BTreeMap<String, u32>,
    /// Databases by `(plugin, status.plugin.digest)`.
    pub by_digest: BTreeMap<(String, String), u32>,
}

impl Counts {
    /// Count `databases`.
    pub fn of<'a>(databases: impl IntoIterator<Item = &'a Database>) -> Self {
        let mut counts = Counts::default();
        for db in databases {
            let plugin = db.spec.storage.plugin.clone();
            *counts.by_plugin.entry(plugin.clone()).or_default() += 1;
            if let Some(p) = db.status.as_ref().and_then(|s| s.plugin.as_ref()) {
                *counts
                    .by_digest
                    .entry((plugin, p.digest.clone()))
                    .or_default() += 1;
            }
        }
        counts
    }
}

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
    let list = databases.list(&Default::default()).await?;
    let counts = Counts::of(&list.items);
    publish_counted(client, registry, &counts, &registry.failures()).await
}

/// Publishes a `Loaded` record for every plugin in `registry`, counting
/// Databases with `databases_by_plugin` (0 if absent).
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

/// [`publish_counted`] with Databases counted per plugin only (every
/// version's count is 0).
///
/// # Errors
/// The first API error.
pub async fn publish_with_failures(
    client: &Client,
    registry: &Registry,
    databases_by_plugin: &BTreeMap<String, u32>,
    failures: &BTreeMap<String, Failure>,
) -> Result<(), kube::Error> {
    let counts = Counts {
        by_plugin: databases_by_plugin.clone(),
        by_digest: BTreeMap::new(),
    };
    publish_counted(client, registry, &counts, failures).await
}

/// Publishes every plugin in `registry` and every plugin in `failures`
/// (by plugin name):
/// - in the registry, not failed: `Loaded`, version and digest of the
///   default version, and every loaded version;
/// - in the registry and failed (an update that did not load while the
///   previous component keeps serving): `Failed` with `lastError`, version
///   and digest of the default version, source of the failed one;
/// - failed only: `Failed` with `lastError`, version and digest as last
///   published (empty for a plugin that never loaded).
///
/// Callers that hot-reload plugins keep the map of current failures and
/// pass it on every publish, so a failure stays visible until a load of that
/// plugin succeeds. Every record is attempted; the first error is returned.
///
/// # Errors
/// The first API error.
pub async fn publish_counted(
    client: &Client,
    registry: &Registry,
    counts: &Counts,
    failures: &BTreeMap<String, Failure>,
) -> Result<(), kube::Error> {
    let api: Api<StoragePlugin> = Api::all(client.clone());
    let names: std::collections::BTreeSet<String> = registry
        .names()
        .into_iter()
        .chain(failures.keys().cloned())
        .collect();
    let mut first_error = None;
    for name in names {
        let loaded = Loaded {
            default: registry.entry(&name),
            versions: registry.versions(&name),
        };
        let result = write(&api, &name, &loaded, failures.get(&name), Some(counts)).await;
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
    write(&api, name, &Loaded::default(), Some(&failure), None).await
}

/// What the registry holds of one plugin.
#[derive(Default)]
struct Loaded {
    default: Option<Entry>,
    versions: Vec<Entry>,
}

/// Applies the record of `name` where it differs from the live one.
/// `counts: None` keeps the live counts.
async fn write(
    api: &Api<StoragePlugin>,
    name: &str,
    loaded: &Loaded,
    failure: Option<&Failure>,
    counts: Option<&Counts>,
) -> Result<(), kube::Error> {
    let live = api.get_opt(name).await?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let labelled = live.as_ref().is_some_and(|l| {
        l.meta()
            .labels
            .as_ref()
            .and_then(|labels| labels.get(LABEL_MANAGED_BY))
            .is_some_and(|v| v == "atoll")
    });
    if !labelled {
        let mut body = json!({
            "apiVersion": StoragePlugin::api_version(&()),
            "kind": StoragePlugin::kind(&()),
            "metadata": { "name": name, "labels": { LABEL_MANAGED_BY: "atoll" } },
        });
        // The CRD requires `spec`: a record atoll creates gets an empty one
        // (no versions declared), which users then fill in.
        if live.is_none() {
            body["spec"] = json!({});
        }
        api.patch(name, &params, &Patch::Apply(&body)).await?;
    }
    let spec = live.as_ref().map(|l| l.spec.clone()).unwrap_or_default();
    let live_status = live.and_then(|l| l.status);
    let status = desired_status(name, loaded, failure, counts, &spec, live_status.as_ref());
    // The rollout's field is another manager's: compare without it.
    let mut comparable = live_status.clone().unwrap_or_default();
    comparable.rollout = None;
    if live_status.is_none() || comparable != status {
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

/// The source string a spec version's component is recorded under.
pub fn spec_source(source: &VersionSource, default_namespace: Option<&str>) -> Option<Source> {
    if source.builtin.is_some() {
        return Some(Source::Builtin);
    }
    if let Some(cm) = &source.config_map {
        let namespace = cm.namespace.as_deref().or(default_namespace)?;
        return Some(Source::ConfigMap {
            namespace: namespace.to_string(),
            name: cm.name.clone(),
        });
    }
    source
        .oci
        .as_ref()
        .map(|o| Source::Oci(o.reference.clone()))
}

/// The name `spec` gives the version loaded from `source`, if any.
fn spec_name(spec: &StoragePluginSpec, source: &Source) -> String {
    spec.versions
        .iter()
        .find(|v| match (&v.source.config_map, source) {
            // Without a namespace in the spec, the name decides.
            (Some(cm), Source::ConfigMap { namespace, name }) => {
                cm.name == *name && cm.namespace.as_ref().is_none_or(|ns| ns == namespace)
            }
            _ => spec_source(&v.source, None).as_ref() == Some(source),
        })
        .map(|v| v.name.clone())
        .unwrap_or_default()
}

/// The status a record should have (without `rollout`). `counts: None`
/// keeps `live`'s counts.
fn desired_status(
    name: &str,
    loaded: &Loaded,
    failure: Option<&Failure>,
    counts: Option<&Counts>,
    spec: &StoragePluginSpec,
    live: Option<&StoragePluginStatus>,
) -> StoragePluginStatus {
    let live = live.cloned().unwrap_or_default();
    let entry = loaded.default.as_ref();
    let databases = counts
        .map(|c| c.by_plugin.get(name).copied().unwrap_or(0))
        .unwrap_or(live.databases);
    let (version, digest) = match entry {
        Some(e) => (
            e.plugin.metadata().version.clone(),
            e.plugin.digest().to_string(),
        ),
        None => (live.version.clone(), live.digest.clone()),
    };
    let default_digest = entry.map(|e| e.plugin.digest().to_string());
    let versions: Vec<VersionStatus> = if loaded.versions.is_empty() {
        live.versions.clone()
    } else {
        loaded
            .versions
            .iter()
            .map(|e| {
                let digest = e.plugin.digest().to_string();
                let live_count = live
                    .versions
                    .iter()
                    .find(|v| v.digest == digest)
                    .map_or(0, |v| v.databases);
                VersionStatus {
                    name: spec_name(spec, &e.source),
                    version: e.plugin.metadata().version.clone(),
                    databases: counts.map_or(live_count, |c| {
                        c.by_digest
                            .get(&(name.to_string(), digest.clone()))
                            .copied()
                            .unwrap_or(0)
                    }),
                    default: default_digest.as_ref() == Some(&digest),
                    digest,
                    source: e.source.to_string(),
                    state: STATE_LOADED.to_owned(),
                    last_error: None,
                }
            })
            .collect()
    };
    let serving = versions
        .iter()
        .map(|v| format!("{}={}", v.version, v.databases))
        .collect::<Vec<_>>()
        .join(" ");
    let description = entry
        .map(|e| e.plugin.metadata().description.clone())
        .unwrap_or(live.description.clone());
    let (state, source, last_error) = match failure {
        Some(f) => (STATE_FAILED, f.source.to_string(), Some(f.error.clone())),
        None => (
            STATE_LOADED,
            entry
                .map(|e| e.source.to_string())
                .unwrap_or(live.source.clone()),
            None,
        ),
    };
    StoragePluginStatus {
        description,
        source,
        version,
        digest,
        state: state.to_owned(),
        last_error,
        databases,
        versions,
        serving,
        shadow_render: entry.and_then(|e| e.shadow_render.clone()),
        rollout: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::plugin::runtime::{Limits, Runtime};

    fn cache_entry() -> Entry {
        let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
        let bytes = crate::plugin::builtin::bytes("cache").unwrap();
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

    fn loaded(entry: &Entry) -> Loaded {
        Loaded {
            default: Some(entry.clone()),
            versions: vec![entry.clone()],
        }
    }

    fn counts(plugin: &str, digest: &str, n: u32) -> Counts {
        Counts {
            by_plugin: [(plugin.to_string(), n)].into(),
            by_digest: [((plugin.to_string(), digest.to_string()), n)].into(),
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
            ..StoragePluginStatus::default()
        };
        let spec = StoragePluginSpec::default();

        // Loaded: everything from the entry, the error cleared, the one
        // version listed with its count.
        let two = counts("cache", &digest, 2);
        let status = desired_status(
            "cache",
            &loaded(&entry),
            None,
            Some(&two),
            &spec,
            Some(&stale),
        );
        assert_eq!(
            (
                status.source.as_str(),
                &status.version,
                &status.digest,
                status.state.as_str()
            ),
            ("built-in", &version, &digest, STATE_LOADED)
        );
        assert_eq!((status.last_error, status.databases), (None, 2));
        assert_eq!(status.versions.len(), 1);
        assert!(status.versions[0].default);
        assert_eq!(status.versions[0].databases, 2);
        assert_eq!(status.serving, format!("{version}=2"));

        // A failed update while the entry keeps serving: its version and digest,
        // the failed source and the error.
        let updating = desired_status(
            "cache",
            &loaded(&entry),
            Some(&failure("bad")),
            Some(&two),
            &spec,
            None,
        );
        assert_eq!(updating.state, STATE_FAILED);
        assert_eq!(updating.source, "configmap/plugins/cache-v2");
        assert_eq!(updating.last_error.as_deref(), Some("bad"));
        assert_eq!((updating.version, updating.digest), (version, digest));

        // Failed and not loaded: last published version, digest and count kept.
        let failed = desired_status(
            "cache",
            &Loaded::default(),
            Some(&failure("worse")),
            None,
            &spec,
            Some(&stale),
        );
        assert_eq!(failed.source, "configmap/plugins/cache-v2");
        assert_eq!(
            (failed.version.as_str(), failed.digest.as_str()),
            ("0.0.1", "sha256:00")
        );
        assert_eq!(failed.last_error.as_deref(), Some("worse"));
        assert_eq!(failed.databases, 9);
        let never_loaded = desired_status(
            "cache",
            &Loaded::default(),
            Some(&failure("x")),
            None,
            &spec,
            None,
        );
        assert_eq!(
            (never_loaded.version, never_loaded.digest),
            (String::new(), String::new())
        );
        assert_eq!(never_loaded.databases, 0);
    }

    #[test]
    fn a_version_is_named_after_the_spec_entry_with_its_source() {
        let spec: StoragePluginSpec = serde_json::from_value(json!({
            "versions": [
                {"name": "stable", "source": {"builtin": {}}},
                {"name": "next", "source": {"configMap": {"name": "cache-v2"}}},
                {"name": "elsewhere", "source": {"configMap": {"namespace": "x", "name": "cache-v3"}}},
            ]
        }))
        .unwrap();
        assert_eq!(spec_name(&spec, &Source::Builtin), "stable");
        assert_eq!(spec_name(&spec, &failure("").source), "next");
        let other = Source::ConfigMap {
            namespace: "y".into(),
            name: "cache-v3".into(),
        };
        assert_eq!(spec_name(&spec, &other), "", "namespace differs");
    }
}
