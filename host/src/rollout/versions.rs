//! Loading the versions a StoragePlugin's spec declares into the registry.
//!
//! Guarantees:
//! - A declared version is checked (exactly one source, unique names) and
//!   loaded the way labelled ConfigMaps are (same runtime, compiled-component
//!   cache, world and name checks); a version that fails is reported (the
//!   record's `lastError`, published at once, and an Event) and nothing that
//!   serves changes. The failure is cleared once every declared version
//!   loads (the source fixed, or the failing version removed).
//! - A ConfigMap source is read again on every pass but compiled only when
//!   its `resourceVersion` changed; the digest decides what is new.
//! - Loading adds versions, never changes the default: the rollout does.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::api::{PluginVersionSpec, StoragePluginSpec};
use crate::contract::Digest;
use crate::plugin::configmap::decode;
use crate::plugin::oci_load::load_oci;
use crate::plugin::records::spec_source;
use crate::plugin::{Failure, LoadedPlugin, Registry, Source};

/// How often a version declared by OCI tag is pulled again (a moved tag is
/// noticed within this).
pub const OCI_REFRESH: std::time::Duration = std::time::Duration::from_secs(300);

/// A declared version and what loading it gave.
#[derive(Debug, Clone)]
pub struct Declared {
    /// `spec.versions[].name`.
    pub name: String,
    /// The loaded component, or why it did not load.
    pub loaded: Result<Arc<LoadedPlugin>, String>,
}

/// Loads declared versions, remembering what each ConfigMap held.
pub struct SpecLoader {
    client: Client,
    registry: Arc<Registry>,
    /// Namespace of a `configMap` source without one, and of pull Secrets.
    default_namespace: Option<String>,
    /// ConfigMap `namespace/name` → (resourceVersion, loaded component).
    configmaps: HashMap<String, (String, Arc<LoadedPlugin>)>,
    /// Components pulled by OCI reference, and when: a digest reference is
    /// never pulled again, a tag at most every [`OCI_REFRESH`].
    oci: HashMap<String, (Option<std::time::Instant>, Arc<LoadedPlugin>)>,
    /// Plugin → the failure this loader recorded for it in its last pass.
    failed: HashMap<String, Failure>,
}

/// What one [`SpecLoader::load`] gave.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Each declared version, in spec order.
    pub declared: Vec<Declared>,
    /// The failure recorded for the plugin if it differs from the previous
    /// pass's (`Some(None)`: a failure was cleared), so that the caller
    /// publishes it once, not on every pass.
    pub failure_changed: Option<Option<Failure>>,
}

/// Checks a spec: at least one version, names unique and non-empty, exactly
/// one source each, `target` naming one of them.
///
/// # Errors
/// What is wrong, naming the field and the fix.
pub fn check(spec: &StoragePluginSpec) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (i, v) in spec.versions.iter().enumerate() {
        if v.name.is_empty() {
            return Err(format!(
                "spec.versions[{i}].name is empty; name the version, e.g. v0.1.1"
            ));
        }
        if !seen.insert(v.name.as_str()) {
            return Err(format!(
                "spec.versions[{i}].name {:?} is used twice; give each version its own name",
                v.name
            ));
        }
        let s = &v.source;
        let set = [s.builtin.is_some(), s.config_map.is_some(), s.oci.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if set != 1 {
            return Err(format!(
                "spec.versions[{i}].source sets {set} sources; set exactly one of builtin: {{}}, configMap: {{name}} or oci: {{reference}}"
            ));
        }
    }
    if let Some(target) = &spec.target
        && !spec.versions.iter().any(|v| &v.name == target)
    {
        return Err(format!(
            "spec.target {target:?} is not a name in spec.versions; use one of: {}",
            spec.versions
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

/// The name of the version `spec` targets: `spec.target`, else the first.
pub fn target_name(spec: &StoragePluginSpec) -> Option<&str> {
    spec.target
        .as_deref()
        .or_else(|| spec.versions.first().map(|v| v.name.as_str()))
}

impl SpecLoader {
    pub fn new(client: Client, registry: Arc<Registry>, default_namespace: Option<String>) -> Self {
        SpecLoader {
            client,
            registry,
            default_namespace,
            configmaps: HashMap::new(),
            oci: HashMap::new(),
            failed: HashMap::new(),
        }
    }

    /// Load every version `spec` declares for plugin `plugin` into the
    /// registry (as extra versions) and say what each gave.
    pub async fn load(&mut self, plugin: &str, spec: &StoragePluginSpec) -> Loaded {
        let mut out = Vec::new();
        let mut failed = None;
        for v in &spec.versions {
            let loaded = self.load_one(plugin, v).await;
            match &loaded {
                Ok(component) => {
                    let source = spec_source(&v.source, self.default_namespace.as_deref())
                        .unwrap_or(Source::Builtin);
                    self.registry.add_version(Arc::clone(component), source);
                }
                Err(error) => {
                    tracing::warn!(plugin, version = %v.name, %error, "a declared version did not load");
                    let source = spec_source(&v.source, self.default_namespace.as_deref())
                        .unwrap_or(Source::Builtin);
                    let failure = Failure {
                        source,
                        error: format!("spec.versions {:?}: {error}", v.name),
                    };
                    self.registry.record_failure(plugin, failure.clone());
                    failed = Some(failure);
                }
            }
            out.push(Declared {
                name: v.name.clone(),
                loaded,
            });
        }
        let before = match &failed {
            Some(f) => self.failed.insert(plugin.to_string(), f.clone()),
            None => self.failed.remove(plugin),
        };
        if failed.is_none()
            && let Some(old) = &before
        {
            self.registry.clear_failure(plugin, &old.source);
        }
        Loaded {
            declared: out,
            failure_changed: (before != failed).then_some(failed),
        }
    }

    async fn load_one(
        &mut self,
        plugin: &str,
        v: &PluginVersionSpec,
    ) -> Result<Arc<LoadedPlugin>, String> {
        if v.source.builtin.is_some() {
            return self.registry.builtin(plugin).ok_or_else(|| {
                format!("there is no built-in plugin {plugin:?}; use a configMap or oci source")
            });
        }
        if let Some(cm) = &v.source.config_map {
            let namespace = cm
                .namespace
                .clone()
                .or_else(|| self.default_namespace.clone())
                .ok_or_else(|| {
                    "source.configMap.namespace is not set and atoll watches no plugin namespace; set it".to_string()
                })?;
            let key = format!("{namespace}/{}", cm.name);
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
            let object = api
                .get_opt(&cm.name)
                .await
                .map_err(|e| format!("configmap/{key}: cannot read: {e}"))?
                .ok_or_else(|| format!("configmap/{key} does not exist; create it with `kubectl -n {namespace} create configmap {} --from-file=plugin.wasm=FILE`", cm.name))?;
            let version = object.resource_version().unwrap_or_default();
            if let Some((seen, loaded)) = self.configmaps.get(&key)
                && *seen == version
            {
                return Ok(Arc::clone(loaded));
            }
            let bytes = decode(&object)?;
            let loaded = self
                .compile(plugin, &format!("configmap/{key}"), bytes)
                .await?;
            self.configmaps.insert(key, (version, Arc::clone(&loaded)));
            return Ok(loaded);
        }
        if let Some(oci) = &v.source.oci {
            // Passes come every few seconds: pull a tag again only now and
            // then, and a digest never (its bytes cannot change).
            if let Some((pulled, loaded)) = self.oci.get(&oci.reference)
                && pulled.is_none_or(|at| at.elapsed() < OCI_REFRESH)
            {
                return Ok(Arc::clone(loaded));
            }
            let docker_config = match (&oci.pull_secret, &self.default_namespace) {
                (Some(secret), Some(ns)) => {
                    let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
                    let s = api
                        .get(secret)
                        .await
                        .map_err(|e| format!("pull Secret {ns}/{secret}: {e}"))?;
                    if s.type_.as_deref() != Some("kubernetes.io/dockerconfigjson") {
                        return Err(format!(
                            "pull Secret {ns}/{secret} is of type {:?}, not kubernetes.io/dockerconfigjson; \
                             create it with `kubectl -n {ns} create secret docker-registry {secret} ...`",
                            s.type_.unwrap_or_default()
                        ));
                    }
                    s.data.and_then(|d| {
                        d.get(crate::plugin::oci::DOCKER_CONFIG_JSON_KEY)
                            .map(|b| b.0.clone())
                    })
                }
                (Some(secret), None) => {
                    return Err(format!(
                        "pull Secret {secret}: atoll watches no plugin namespace to read it from"
                    ));
                }
                _ => None,
            };
            let fetched = load_oci(oci, docker_config.as_deref())
                .await
                .map_err(|e| format!("oci/{} ({}): {e}", oci.reference, e.reason()))?;
            let actual = Digest::of(&fetched.bytes).to_string();
            if actual != fetched.digest {
                return Err(format!(
                    "oci/{}: the component's digest is {actual}, not {} as the registry said",
                    oci.reference, fetched.digest
                ));
            }
            let pinned = fetched.pinned;
            let loaded = self
                .compile(plugin, &format!("oci/{}", oci.reference), fetched.bytes)
                .await?;
            let pulled = (!pinned).then(std::time::Instant::now);
            self.oci
                .insert(oci.reference.clone(), (pulled, Arc::clone(&loaded)));
            return Ok(loaded);
        }
        Err("no source set".into())
    }

    /// Compile (or reuse) and check a component off the async threads.
    async fn compile(
        &self,
        plugin: &str,
        origin: &str,
        bytes: Vec<u8>,
    ) -> Result<Arc<LoadedPlugin>, String> {
        let runtime = Arc::clone(self.registry.runtime());
        let origin_owned = origin.to_string();
        let loaded =
            tokio::task::spawn_blocking(move || runtime.load_tiered(&origin_owned, &bytes))
                .await
                .map_err(|e| format!("{origin}: loading panicked: {e}"))?
                .map_err(|e| e.to_string())?;
        let name = &loaded.metadata().name;
        if name != plugin {
            return Err(format!(
                "{origin} holds plugin {name:?}, not {plugin:?}; declare it in StoragePlugin {name:?}"
            ));
        }
        Ok(Arc::new(loaded))
    }
}
