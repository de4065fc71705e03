//! What several modules share.

use std::path::PathBuf;
use std::process::Command;
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

/// The `atoll` binary with a plugin cache every run in this binary shares
/// ([`atoll_testenv::plugin_cache`]): a component (a built-in, the 18 MB
/// Python one) is compiled by the first run that loads it and loaded from
/// disk by the others. The first call fills the cache with the built-ins,
/// so tests starting together do not all compile them at once.
pub fn atoll() -> Command {
    static ENV: OnceLock<[(&str, PathBuf); 2]> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        let env = atoll_testenv::plugin_cache::env(
            &PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("atoll-plugin-cache"),
        );
        let warm = Command::new(env!("CARGO_BIN_EXE_atoll"))
            .args(["plugins", "list"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(
            warm.status.success(),
            "atoll plugins list: {}",
            String::from_utf8_lossy(&warm.stderr)
        );
        env
    });
    let mut command = Command::new(env!("CARGO_BIN_EXE_atoll"));
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
}
