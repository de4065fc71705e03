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

/// The `atoll` binary with a plugin cache every run in this binary shares,
/// sealed by a key file as a user sets it up (`--plugin-cache-key-file`),
/// so a component is compiled by the first run that loads it and loaded
/// from disk by the others. Without a key each process refuses the files
/// of the others and compiles everything again (the built-ins at every
/// start, the 18 MB Python component at every `plugin test`). The first
/// call fills the cache with the built-ins, so tests starting together do
/// not all compile them at once.
pub fn atoll() -> Command {
    static ENV: OnceLock<[(&str, PathBuf); 2]> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("atoll-plugin-cache");
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("seal.key");
        if !key.exists() {
            use std::io::Read as _;
            let mut bytes = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut bytes))
                .unwrap();
            // Whole or not at all, should another test process race us.
            let tmp = dir.join(format!("seal.key.{}", std::process::id()));
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, &key).unwrap();
        }
        let env = [
            ("ATOLL_PLUGIN_CACHE_KEY_FILE", key),
            ("ATOLL_PLUGIN_CACHE_DIR", dir.join("components")),
        ];
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
