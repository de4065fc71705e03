//! The registry of loaded plugins, by name, with where each came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::runtime::{LoadedPlugin, Runtime};
use crate::api::ShadowRender;
use crate::error::PluginError;
use crate::sync::RwLockExt;

/// Where a plugin was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Embedded in the `atoll` binary.
    Builtin,
    /// A `.wasm` file (`--plugin-dir`).
    File(PathBuf),
    /// A ConfigMap labelled `atoll.dev/plugin`.
    ConfigMap { namespace: String, name: String },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Builtin => f.write_str("built-in"),
            Source::File(path) => write!(f, "file:{}", path.display()),
            Source::ConfigMap { namespace, name } => write!(f, "configmap/{namespace}/{name}"),
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

/// Plugins by name. A later registration under the same name replaces the
/// earlier one atomically: callers holding the old `Arc` finish on it.
///
/// Besides the serving plugins the registry remembers the built-ins (to fall
/// back to when an override is removed) and, per plugin name, the latest
/// failed or removed load, until a load of that name succeeds.
pub struct Registry {
    runtime: Arc<Runtime>,
    plugins: RwLock<BTreeMap<String, Entry>>,
    builtins: RwLock<BTreeMap<String, Arc<LoadedPlugin>>>,
    failures: RwLock<BTreeMap<String, Failure>>,
}

/// What [`Registry::remove`] did.
#[derive(Debug, Clone)]
pub enum Removal {
    /// The plugin was not served from that source; nothing changed.
    NotServing,
    /// The built-in plugin of that name serves again.
    FellBack(Arc<LoadedPlugin>),
    /// No plugin of that name is left.
    Gone,
}

impl Registry {
    /// An empty registry.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Registry {
            runtime,
            plugins: RwLock::new(BTreeMap::new()),
            builtins: RwLock::new(BTreeMap::new()),
            failures: RwLock::new(BTreeMap::new()),
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

    /// Load one `.wasm` file and register it, replacing a plugin of the same name.
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

    /// Register `plugin` under its metadata name, replacing any plugin of that
    /// name and clearing its recorded failure; returns it.
    pub fn insert(&self, plugin: LoadedPlugin, source: Source) -> Arc<LoadedPlugin> {
        let plugin = Arc::new(plugin);
        self.insert_arc(Arc::clone(&plugin), source, None);
        plugin
    }

    /// [`insert`](Self::insert) for a plugin already shared, with the shadow
    /// render that justified a hot reload.
    pub fn insert_arc(
        &self,
        plugin: Arc<LoadedPlugin>,
        source: Source,
        shadow_render: Option<ShadowRender>,
    ) {
        let name = plugin.metadata().name.clone();
        self.failures.writing().remove(&name);
        let entry = Entry {
            plugin,
            source,
            shadow_render,
        };
        self.plugins.writing().insert(name, entry);
    }

    /// Stop serving plugin `name` from `source` (its ConfigMap was deleted):
    /// the built-in of that name takes over, or the name is recorded as
    /// removed so Databases using it say why. A plugin of that name served
    /// from another source is left alone.
    pub fn remove(&self, name: &str, source: &Source) -> Removal {
        let mut plugins = self.plugins.writing();
        if plugins.get(name).is_none_or(|e| &e.source != source) {
            return Removal::NotServing;
        }
        if let Some(builtin) = self.builtins.reading().get(name) {
            let entry = Entry {
                plugin: Arc::clone(builtin),
                source: Source::Builtin,
                shadow_render: None,
            };
            plugins.insert(name.to_string(), entry);
            self.failures.writing().remove(name);
            return Removal::FellBack(Arc::clone(builtin));
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

    /// The plugin registered as `name` and where it came from.
    pub fn entry(&self, name: &str) -> Option<Entry> {
        self.plugins.reading().get(name).cloned()
    }

    /// The plugin registered as `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins
            .reading()
            .get(name)
            .map(|e| Arc::clone(&e.plugin))
    }

    /// Every registered plugin, by name.
    pub fn entries(&self) -> Vec<Entry> {
        self.plugins.reading().values().cloned().collect()
    }

    /// Names of registered plugins, for error messages.
    pub fn names(&self) -> Vec<String> {
        self.plugins.reading().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Registry, Removal, Source};
    use crate::contract::PluginDatabase;
    use crate::plugin::{Limits, Runtime, builtin::BUILTIN};

    /// One runtime for every test: each component compiles once.
    fn runtime() -> Arc<Runtime> {
        static RUNTIME: std::sync::OnceLock<Arc<Runtime>> = std::sync::OnceLock::new();
        Arc::clone(
            RUNTIME.get_or_init(|| Arc::new(Runtime::new(Limits::default()).expect("engine"))),
        )
    }

    fn raft_bytes() -> &'static [u8] {
        BUILTIN
            .iter()
            .find(|(name, _)| *name == "raft")
            .map(|(_, bytes)| *bytes)
            .expect("raft is built in")
    }

    fn configmap(name: &str) -> Source {
        Source::ConfigMap {
            namespace: "atoll-system".into(),
            name: name.into(),
        }
    }

    fn input() -> PluginDatabase {
        PluginDatabase {
            name: "db".into(),
            namespace: "ns".into(),
            uid: "u".into(),
            generation: 1,
            labels: Vec::new(),
            partitions: 3,
            config: r#"{"clusters": 1, "replicas": 1}"#.into(),
            cluster_domain: "cluster.local".into(),
        }
    }

    #[test]
    fn a_swap_serves_the_new_plugin_while_holders_of_the_old_finish_on_it() {
        let registry = Registry::with_builtins(runtime()).expect("built-ins");
        let old = registry.get("raft").expect("raft");
        let new = registry
            .runtime()
            .load("configmap/atoll-system/raft-v2", raft_bytes())
            .expect("loads");
        let new = registry.insert(new, configmap("raft-v2"));

        let serving = registry.get("raft").expect("raft");
        assert!(Arc::ptr_eq(&serving, &new));
        assert!(!Arc::ptr_eq(&serving, &old));
        assert_eq!(
            registry.entry("raft").map(|e| e.source),
            Some(configmap("raft-v2"))
        );
        // A reconcile that rendered with the old version can still call it.
        let rendered = old.render(&input()).expect("no trap").expect("renders");
        assert_eq!(rendered.partitions.len(), 3);
    }

    #[test]
    fn removing_an_override_falls_back_to_the_built_in_and_only_from_its_source() {
        let registry = Registry::with_builtins(runtime()).expect("built-ins");
        let builtin = registry.get("raft").expect("raft");
        let new = registry
            .runtime()
            .load("configmap/atoll-system/raft-v2", raft_bytes())
            .expect("loads");
        registry.insert(new, configmap("raft-v2"));

        assert!(matches!(
            registry.remove("raft", &configmap("someone-else")),
            Removal::NotServing
        ));
        assert_eq!(
            registry.entry("raft").map(|e| e.source),
            Some(configmap("raft-v2"))
        );
        match registry.remove("raft", &configmap("raft-v2")) {
            Removal::FellBack(p) => assert!(Arc::ptr_eq(&p, &builtin)),
            other => panic!("expected the built-in back, got {other:?}"),
        }
        assert_eq!(
            registry.entry("raft").map(|e| e.source),
            Some(Source::Builtin)
        );
        assert_eq!(registry.failure("raft"), None);
    }

    #[test]
    fn a_removed_plugin_without_built_in_is_gone_with_a_reason_until_loaded_again() {
        let registry = Registry::new(runtime());
        let plugin = registry
            .runtime()
            .load("configmap/atoll-system/raft", raft_bytes())
            .expect("loads");
        registry.insert(plugin, configmap("raft"));
        assert!(matches!(
            registry.remove("raft", &configmap("raft")),
            Removal::Gone
        ));
        assert!(registry.get("raft").is_none());
        let failure = registry.failure("raft").expect("why it is gone");
        assert!(
            failure
                .error
                .contains("configmap/atoll-system/raft was deleted")
        );

        let again = registry
            .runtime()
            .load("configmap/atoll-system/raft", raft_bytes())
            .expect("loads");
        registry.insert(again, configmap("raft"));
        assert_eq!(registry.failure("raft"), None);
    }

    #[test]
    fn a_failed_load_keeps_the_serving_plugin_and_is_cleared_only_by_its_source() {
        let registry = Registry::with_builtins(runtime()).expect("built-ins");
        let serving = registry.get("raft").expect("raft");
        let bad = registry
            .runtime()
            .load("configmap/atoll-system/raft-bad", b"not wasm");
        let error = bad.expect_err("not a component").to_string();
        let failure = super::Failure {
            source: configmap("raft-bad"),
            error,
        };
        registry.record_failure("raft", failure.clone());
        assert!(Arc::ptr_eq(&registry.get("raft").expect("raft"), &serving));
        assert_eq!(registry.failure("raft"), Some(failure.clone()));

        registry.clear_failure("raft", &configmap("another"));
        assert_eq!(registry.failure("raft"), Some(failure));
        registry.clear_failure("raft", &configmap("raft-bad"));
        assert_eq!(registry.failure("raft"), None);
    }
}
