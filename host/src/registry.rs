//! The registry of loaded plugins, by name, with where each came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::error::PluginError;
use crate::runtime::{LoadedPlugin, Runtime};

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
}

/// Plugins by name. A later registration under the same name replaces the
/// earlier one atomically: callers holding the old `Arc` finish on it.
pub struct Registry {
    runtime: Arc<Runtime>,
    plugins: RwLock<BTreeMap<String, Entry>>,
}

impl Registry {
    /// An empty registry.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Registry {
            runtime,
            plugins: RwLock::new(BTreeMap::new()),
        }
    }

    /// A registry holding the five built-in plugins.
    pub fn with_builtins(runtime: Arc<Runtime>) -> Result<Self, PluginError> {
        let registry = Registry::new(runtime);
        for (name, bytes) in crate::builtin::BUILTIN {
            let plugin = registry
                .runtime
                .load(&format!("built-in plugin {name}"), bytes)?;
            registry.insert(plugin, Source::Builtin);
        }
        Ok(registry)
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Load one `.wasm` file and register it, replacing a plugin of the same name.
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

    /// Register `plugin` under its metadata name; returns it.
    pub fn insert(&self, plugin: LoadedPlugin, source: Source) -> Arc<LoadedPlugin> {
        let plugin = Arc::new(plugin);
        let entry = Entry {
            plugin: Arc::clone(&plugin),
            source,
        };
        self.plugins
            .write()
            .unwrap()
            .insert(plugin.metadata().name.clone(), entry);
        plugin
    }

    /// The plugin registered as `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins
            .read()
            .unwrap()
            .get(name)
            .map(|e| Arc::clone(&e.plugin))
    }

    /// Every registered plugin, by name.
    pub fn entries(&self) -> Vec<Entry> {
        self.plugins.read().unwrap().values().cloned().collect()
    }

    /// Names of registered plugins, for error messages.
    pub fn names(&self) -> Vec<String> {
        self.plugins.read().unwrap().keys().cloned().collect()
    }
}
