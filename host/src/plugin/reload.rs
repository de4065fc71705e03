//! What a hot reload needs from the rest of atoll, as interfaces the plugin
//! subsystem defines (so it depends on nothing downstream): a way to ask for
//! reconciles ([`Requeue`]) and a shadow render ([`ShadowRenderer`]).

use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;

use super::runtime::LoadedPlugin;
use crate::api::Database;

/// Requests to reconcile a Database now, whatever its resync time: sent by
/// the plugin source after a hot reload, received by the controller.
/// Clones share one channel; a request with no controller listening is
/// dropped.
#[derive(Clone)]
pub struct Requeue(tokio::sync::broadcast::Sender<Arc<ObjectRef<Database>>>);

impl Default for Requeue {
    fn default() -> Self {
        // Sized for a hot reload touching thousands of Databases at once; a
        // lagging controller falls back to reconciling every Database. The
        // channel allocates every slot up front, so a slot holds a pointer
        // (0.5 MiB in all; 2 MiB holding the reference itself).
        Requeue(tokio::sync::broadcast::channel(16_384).0)
    }
}

impl Requeue {
    /// Ask for `db` to be reconciled.
    pub fn send(&self, db: ObjectRef<Database>) {
        let _ = self.0.send(Arc::new(db));
    }

    /// Every request sent from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<ObjectRef<Database>>> {
        self.0.subscribe()
    }
}

/// What a hot reload needs of rendering: a Database's render with a given
/// version of its plugin, comparable across versions. Implemented by
/// [`Renderer`](crate::render::Renderer); a trait so that plugin loading
/// does not depend on what comes after it.
pub trait ShadowRenderer: Send + Sync + 'static {
    /// The objects and partition bindings `db` renders to with `plugin`, or
    /// why it does not render.
    ///
    /// # Errors
    /// The render failed (any reason: spec, plugin, policy).
    fn render_with(&self, db: &Database, plugin: &Arc<LoadedPlugin>) -> Result<Rendering, String>;
}

/// A render reduced to what a shadow render compares.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendering {
    /// The objects after the output policy.
    pub objects: Vec<serde_json::Value>,
    /// `(partition, service, port)` of each binding.
    pub bindings: Vec<(u32, String, u16)>,
}

impl Rendering {
    /// Whether `next` leaves out an object (by kind and name) that this
    /// rendering has: moving to it would prune.
    pub fn drops_objects_of(&self, next: &Rendering) -> bool {
        let id = |o: &serde_json::Value| (o["kind"].clone(), o["metadata"]["name"].clone());
        let kept: std::collections::HashSet<_> = next.objects.iter().map(id).collect();
        self.objects.iter().any(|o| !kept.contains(&id(o)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Rendering;

    fn rendering(names: &[(&str, &str)]) -> Rendering {
        Rendering {
            objects: names
                .iter()
                .map(|(kind, name)| json!({"kind": kind, "metadata": {"name": name}, "data": {}}))
                .collect(),
            bindings: Vec::new(),
        }
    }

    #[test]
    fn a_rendering_drops_objects_only_when_a_kind_and_name_goes_away() {
        let old = rendering(&[("ConfigMap", "db-1"), ("Secret", "db-1")]);
        let changed = rendering(&[("Secret", "db-1"), ("ConfigMap", "db-1"), ("Service", "db")]);
        assert!(
            !old.drops_objects_of(&changed),
            "reordered and added: nothing dropped"
        );
        let fewer = rendering(&[("ConfigMap", "db-1")]);
        assert!(old.drops_objects_of(&fewer));
        let renamed_kind = rendering(&[("ConfigMap", "db-1"), ("ConfigMap", "db-2")]);
        assert!(old.drops_objects_of(&renamed_kind));
    }
}
