//! What several modules share.

use std::sync::{Arc, OnceLock};

use atoll::plugin::{Limits, Registry, Runtime};
use atoll::policy::OutputPolicy;
use atoll::render::Renderer;

/// A renderer over the built-in plugins and the default policy, compiled
/// once for the whole binary.
pub fn renderer() -> &'static Renderer {
    static RENDERER: OnceLock<Renderer> = OnceLock::new();
    RENDERER.get_or_init(|| {
        let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
        Renderer {
            registry: Arc::new(Registry::with_builtins(runtime).unwrap()),
            policy: OutputPolicy::default(),
            cluster_domain: "cluster.local".into(),
        }
    })
}
