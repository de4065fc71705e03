//! The registry of loaded plugins: every loaded version of each plugin, side
//! by side, with where each came from and which one is the default.
//!
//! A Database renders with exactly one version, chosen by
//! [`Registry::choose`]: its exact pin (`spec.storage.digest`), else the
//! version a rollout assigned it (annotation `atoll.dev/plugin-digest`),
//! else the plugin's default, then narrowed by its semver requirement
//! (`spec.storage.version`). The choice depends only on the Database object
//! and the registry, so it survives restarts: the assignment lives in the
//! API, not in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::runtime::{LoadedPlugin, Runtime};
use crate::api::ShadowRender;
use crate::contract::Digest;
use crate::error::PluginError;
use crate::sync::RwLockExt;

/// Where a plugin was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Embedded in the `atoll` binary.
    Builtin,
    /// A `.wasm` file (`--plugin-dir`).
    File(PathBuf),
    /// A ConfigMap labelled `atoll.dev/plugin`, or named by a
    /// StoragePlugin's `spec.versions[].source.configMap`.
    ConfigMap { namespace: String, name: String },
    /// An OCI reference named by a StoragePlugin's `spec.versions`.
    Oci(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Builtin => f.write_str("built-in"),
            Source::File(path) => write!(f, "file:{}", path.display()),
            Source::ConfigMap { namespace, name } => write!(f, "configmap/{namespace}/{name}"),
            Source::Oci(reference) => write!(f, "oci/{reference}"),
        }
    }
}

/// A registered plugin and its origin.
#[derive(Debug, Clone)]
pub struct Entry {
    pub plugin: Arc<LoadedPlugin>,
    pub source: Source,
    /// The shadow render made before this plugin replaced the previous one
    /// (hot reloads only).
    pub shadow_render: Option<ShadowRender>,
}

/// A plugin whose latest load failed, or that was removed: what the
/// StoragePlugin record and error messages report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Where the component that failed (or was removed) came from.
    pub source: Source,
    /// Why it failed, for `status.lastError`.
    pub error: String,
}

/// Every loaded version of one plugin and which is its default.
#[derive(Debug, Clone, Default)]
struct Versions {
    /// In load order; one per digest.
    all: Vec<Entry>,
    /// Digest of the version Databases without an assignment or pin use.
    default: Option<Digest>,
}

impl Versions {
    fn default_entry(&self) -> Option<&Entry> {
        let default = self.default?;
        self.all.iter().find(|e| e.plugin.digest() == default)
    }

    fn by_digest(&self, digest: &str) -> Option<&Entry> {
        self.all
            .iter()
            .find(|e| e.plugin.digest().to_string() == digest)
    }
}

/// Plugins by name, every loaded version of each side by side. Loading a
/// version under a name already loaded adds it; whether it becomes the
/// default (what Databases without an assignment or pin render with) is the
/// caller's choice: labelled ConfigMaps make it the default at once (an
/// immediate rollout) unless a StoragePlugin spec manages the name, and a
/// StoragePlugin's rollout moves the default when it completes. Callers
/// holding an older `Arc` finish on it.
///
/// Besides the versions the registry remembers the built-ins (to fall back
/// to when an override is removed) and, per plugin name, the latest failed
/// or removed load, until a load of that name succeeds.
///
/// Caveat: versions stay loaded until their source is deleted (a
/// ConfigMap edited many times keeps every component it held), so
/// Databases a rollout left on an older version keep rendering.
pub struct Registry {
    runtime: Arc<Runtime>,
    plugins: RwLock<BTreeMap<String, Versions>>,
    builtins: RwLock<BTreeMap<String, Arc<LoadedPlugin>>>,
    failures: RwLock<BTreeMap<String, Failure>>,
    /// Plugin names whose default a StoragePlugin spec decides.
    managed: RwLock<BTreeSet<String>>,
}

/// What [`Registry::remove`] did.
#[derive(Debug, Clone)]
pub enum Removal {
    /// Nothing was loaded from that source; nothing changed.
    NotServing,
    /// Versions from that source were dropped; the default is unchanged.
    Dropped,
    /// The default came from that source; this version is the default now
    /// (the built-in if there is one, else the latest loaded).
    FellBack(Arc<LoadedPlugin>),
    /// No version of that name is left.
    Gone,
}

/// What a Database asks of its plugin's versions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted<'a> {
    /// `spec.storage.digest`: exactly this component.
    pub digest: Option<&'a str>,
    /// The rollout's assignment (annotation `atoll.dev/plugin-digest`).
    pub assigned: Option<&'a str>,
    /// `spec.storage.version`.
    pub requirement: Option<&'a semver::VersionReq>,
}

/// Why [`Registry::choose`] found no version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unchosen {
    /// No version of that name is loaded.
    Unknown,
    /// The pinned digest is not loaded; the loaded digests.
    DigestNotLoaded { loaded: Vec<String> },
    /// No loaded version satisfies the requirement; the loaded versions.
    NoMatch { loaded: Vec<String> },
}

impl Registry {
    /// An empty registry.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Registry {
            runtime,
            plugins: RwLock::new(BTreeMap::new()),
            builtins: RwLock::new(BTreeMap::new()),
            failures: RwLock::new(BTreeMap::new()),
            managed: RwLock::new(BTreeSet::new()),
        }
    }

    /// A registry holding the five built-in plugins.
    ///
    /// # Errors
    /// A built-in does not load (the engine failed).
    pub fn with_builtins(runtime: Arc<Runtime>) -> Result<Self, PluginError> {
        Self::with_builtins_adjusted(runtime, |_| {})
    }

    /// A registry holding the five built-in plugins, each calling the same
    /// plugin code compiled into the host rather than its component: only
    /// to measure what WebAssembly costs.
    ///
    /// # Errors
    /// A built-in does not load (the engine failed).
    #[cfg(feature = "native-plugins")]
    pub fn with_native_builtins(runtime: Arc<Runtime>) -> Result<Self, PluginError> {
        Self::with_builtins_adjusted(runtime, |plugin| {
            let name = plugin.metadata().name.clone();
            if let Some(calls) = super::native::calls(&name) {
                plugin.set_native(calls);
            }
        })
    }

    fn with_builtins_adjusted(
        runtime: Arc<Runtime>,
        adjust: impl Fn(&mut LoadedPlugin),
    ) -> Result<Self, PluginError> {
        let registry = Registry::new(runtime);
        for (name, bytes) in super::builtin::BUILTIN {
            let mut plugin = registry
                .runtime
                .load(&format!("built-in plugin {name}"), bytes)?;
            adjust(&mut plugin);
            let plugin = registry.insert(plugin, Source::Builtin);
            registry
                .builtins
                .writing()
                .insert(plugin.metadata().name.clone(), plugin);
        }
        Ok(registry)
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The built-in plugin of that name, if any.
    pub fn builtin(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.builtins.reading().get(name).cloned()
    }

    /// Load one `.wasm` file and register it as the default of its name.
    ///
    /// # Errors
    /// The file cannot be read or is not a plugin.
    pub fn load_file(&self, path: &Path) -> Result<Arc<LoadedPlugin>, PluginError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| PluginError::Read {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
        let plugin = self.runtime.load(&origin, &bytes)?;
        Ok(self.insert(plugin, Source::File(path.to_path_buf())))
    }

    /// Load every `*.wasm` file in `dir` (sorted by file name). Stops at the
    /// first file that fails, naming it.
    ///
    /// # Errors
    /// The directory cannot be read, or a file in it does not load (named).
    pub fn load_dir(&self, dir: &Path) -> Result<Vec<Arc<LoadedPlugin>>, PluginError> {
        let read_err = |e: std::io::Error| PluginError::Read {
            origin: dir.display().to_string(),
            reason: e.to_string(),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(read_err)?;
        files.retain(|p| p.extension().is_some_and(|e| e == "wasm"));
        files.sort();
        files.iter().map(|f| self.load_file(f)).collect()
    }

    /// Register `plugin` under its metadata name and make it the default
    /// (unless a StoragePlugin spec manages the name), clearing its recorded
    /// failure; returns it.
    pub fn insert(&self, plugin: LoadedPlugin, source: Source) -> Arc<LoadedPlugin> {
        let plugin = Arc::new(plugin);
        self.insert_arc(Arc::clone(&plugin), source, None);
        plugin
    }

    /// [`insert`](Self::insert) for a plugin already shared, with the shadow
    /// render that justified a hot reload. Returns whether it became the
    /// default.
    pub fn insert_arc(
        &self,
        plugin: Arc<LoadedPlugin>,
        source: Source,
        shadow_render: Option<ShadowRender>,
    ) -> bool {
        let name = plugin.metadata().name.clone();
        let make_default = !self.managed.reading().contains(&name);
        self.add(plugin, source, shadow_render, make_default)
    }

    /// Register `plugin` as one more version of its name, leaving the
    /// default as it is (the first version of a name becomes its default).
    /// Returns whether it became the default.
    pub fn add_version(&self, plugin: Arc<LoadedPlugin>, source: Source) -> bool {
        self.add(plugin, source, None, false)
    }

    fn add(
        &self,
        plugin: Arc<LoadedPlugin>,
        source: Source,
        shadow_render: Option<ShadowRender>,
        make_default: bool,
    ) -> bool {
        let name = plugin.metadata().name.clone();
        let digest = plugin.digest();
        self.failures.writing().remove(&name);
        let mut plugins = self.plugins.writing();
        let versions = plugins.entry(name).or_default();
        let entry = Entry {
            plugin,
            source,
            shadow_render,
        };
        match versions
            .all
            .iter_mut()
            .find(|e| e.plugin.digest() == digest)
        {
            // Same component from another source: the latest source names it.
            Some(existing) => *existing = entry,
            None => versions.all.push(entry),
        }
        let becomes_default = make_default || versions.default.is_none();
        if becomes_default {
            versions.default = Some(digest);
        }
        becomes_default
    }

    /// Make the loaded version with `digest` the default of `name`. Returns
    /// false (and changes nothing) if no such version is loaded.
    pub fn set_default(&self, name: &str, digest: &str) -> bool {
        let mut plugins = self.plugins.writing();
        let Some(versions) = plugins.get_mut(name) else {
            return false;
        };
        let Some(found) = versions.by_digest(digest).map(|e| e.plugin.digest()) else {
            return false;
        };
        versions.default = Some(found);
        true
    }

    /// Let a StoragePlugin spec decide the default of `name` (`true`), or
    /// labelled ConfigMaps again (`false`).
    pub fn set_managed(&self, name: &str, managed: bool) {
        let mut set = self.managed.writing();
        if managed {
            set.insert(name.to_string());
        } else {
            set.remove(name);
        }
    }

    /// Whether a StoragePlugin spec decides the default of `name`.
    pub fn is_managed(&self, name: &str) -> bool {
        self.managed.reading().contains(name)
    }

    /// Stop serving every version of `name` loaded from `source` (its
    /// ConfigMap was deleted). If the default was among them the built-in
    /// takes over, else the latest version left; with none left the name is
    /// recorded as removed so Databases using it say why.
    pub fn remove(&self, name: &str, source: &Source) -> Removal {
        let mut plugins = self.plugins.writing();
        let Some(versions) = plugins.get_mut(name) else {
            return Removal::NotServing;
        };
        let before = versions.all.len();
        let default_removed = versions
            .default_entry()
            .is_some_and(|e| &e.source == source);
        versions.all.retain(|e| &e.source != source);
        if versions.all.len() == before {
            return Removal::NotServing;
        }
        if !default_removed {
            return Removal::Dropped;
        }
        if let Some(builtin) = self.builtins.reading().get(name) {
            let digest = builtin.digest();
            if !versions.all.iter().any(|e| e.plugin.digest() == digest) {
                versions.all.push(Entry {
                    plugin: Arc::clone(builtin),
                    source: Source::Builtin,
                    shadow_render: None,
                });
            }
            versions.default = Some(digest);
            self.failures.writing().remove(name);
            return Removal::FellBack(Arc::clone(builtin));
        }
        if let Some(latest) = versions.all.last() {
            versions.default = Some(latest.plugin.digest());
            return Removal::FellBack(Arc::clone(&latest.plugin));
        }
        plugins.remove(name);
        self.failures.writing().insert(
            name.to_string(),
            Failure {
                source: source.clone(),
                error: format!(
                    "removed: {source} was deleted and there is no built-in plugin {name:?}"
                ),
            },
        );
        Removal::Gone
    }

    /// Record that the latest load of plugin `name` failed; whatever serves
    /// under that name keeps serving.
    pub fn record_failure(&self, name: &str, failure: Failure) {
        self.failures.writing().insert(name.to_string(), failure);
    }

    /// Forget a recorded failure of `name` whose source is `source` (the
    /// failing ConfigMap was deleted or fixed).
    pub fn clear_failure(&self, name: &str, source: &Source) {
        let mut failures = self.failures.writing();
        if failures.get(name).is_some_and(|f| &f.source == source) {
            failures.remove(name);
        }
    }

    /// Failed or removed plugins by name (see [`Failure`]).
    pub fn failures(&self) -> BTreeMap<String, Failure> {
        self.failures.reading().clone()
    }

    /// The recorded failure of plugin `name`, if any.
    pub fn failure(&self, name: &str) -> Option<Failure> {
        self.failures.reading().get(name).cloned()
    }

    /// The default version of `name` and where it came from.
    pub fn entry(&self, name: &str) -> Option<Entry> {
        self.plugins
            .reading()
            .get(name)
            .and_then(|v| v.default_entry().cloned())
    }

    /// The default version of `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.entry(name).map(|e| e.plugin)
    }

    /// The loaded version of `name` with `digest` (`sha256:<hex>`).
    pub fn version(&self, name: &str, digest: &str) -> Option<Entry> {
        self.plugins
            .reading()
            .get(name)
            .and_then(|v| v.by_digest(digest).cloned())
    }

    /// Every loaded version of `name`, in load order.
    pub fn versions(&self, name: &str) -> Vec<Entry> {
        self.plugins
            .reading()
            .get(name)
            .map(|v| v.all.clone())
            .unwrap_or_default()
    }

    /// The default version of every plugin, by name.
    pub fn entries(&self) -> Vec<Entry> {
        self.plugins
            .reading()
            .values()
            .filter_map(|v| v.default_entry().cloned())
            .collect()
    }

    /// Names of registered plugins, for error messages.
    pub fn names(&self) -> Vec<String> {
        self.plugins.reading().keys().cloned().collect()
    }

    /// The version of `name` a Database wanting `wanted` renders with:
    /// - an exact digest pin, or nothing;
    /// - else the assigned version if loaded, else the default;
    /// - with a requirement, that choice if it satisfies it, else the
    ///   highest loaded version that does.
    ///
    /// # Errors
    /// [`Unchosen`]: no such plugin, pinned digest not loaded, no version
    /// satisfying the requirement.
    pub fn choose(&self, name: &str, wanted: Wanted<'_>) -> Result<Arc<LoadedPlugin>, Unchosen> {
        let plugins = self.plugins.reading();
        let versions = plugins.get(name).ok_or(Unchosen::Unknown)?;
        if let Some(digest) = wanted.digest {
            return versions
                .by_digest(digest)
                .map(|e| Arc::clone(&e.plugin))
                .ok_or_else(|| Unchosen::DigestNotLoaded {
                    loaded: versions
                        .all
                        .iter()
                        .map(|e| e.plugin.digest().to_string())
                        .collect(),
                });
        }
        let preferred = wanted
            .assigned
            .and_then(|d| versions.by_digest(d))
            .or_else(|| versions.default_entry())
            .map(|e| Arc::clone(&e.plugin))
            .ok_or(Unchosen::Unknown)?;
        let Some(req) = wanted.requirement else {
            return Ok(preferred);
        };
        let satisfies = |p: &LoadedPlugin| {
            semver::Version::parse(&p.metadata().version).is_ok_and(|v| req.matches(&v))
        };
        if satisfies(&preferred) {
            return Ok(preferred);
        }
        versions
            .all
            .iter()
            .filter_map(|e| {
                let v = semver::Version::parse(&e.plugin.metadata().version).ok()?;
                req.matches(&v).then_some((v, e))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, e)| Arc::clone(&e.plugin))
            .ok_or_else(|| Unchosen::NoMatch {
                loaded: versions
                    .all
                    .iter()
                    .map(|e| e.plugin.metadata().version.clone())
                    .collect(),
            })
    }
}

#[cfg(test)]
mod tests;
