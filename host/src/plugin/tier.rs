//! Tiered compilation of hot-reloaded components: serve a new version from
//! baseline code first, then from optimized code.
//!
//! Cranelift takes about a second for a built-in plugin (the 865 KB raft
//! component) on two cores, and a hot reload waits for it before its shadow
//! render, its swap and its first apply. Winch, wasmtime's baseline
//! compiler, compiles the same component in a fifth of that (BENCHMARKS.md
//! §8), into code that runs slower. [`Runtime::load_tiered`](super::Runtime::load_tiered)
//! compiles with Winch, links and checks the plugin as any load does, and
//! returns it serving baseline code; a background job compiles it with
//! Cranelift at a low CPU priority (so it does not slow the reconciles
//! the reload sets off) and swaps the optimized code in. Calls in flight
//! finish on the code they started with.
//!
//! Guarantees:
//! - The same component either way: the same bytes, digest, metadata and
//!   answers (both compilers implement the same WebAssembly semantics); the
//!   memory cap and deadline of every call apply to both tiers.
//! - Only optimized code is kept for reuse: the in-memory LRU and the disk
//!   cache hold Cranelift's output, so a component already compiled there
//!   loads optimized at once and is never compiled twice.
//! - Baseline compiles are bounded as any compile (`plugin/compile.rs`: size,
//!   deadline, the compiler child's memory limit).
//! - A component Winch refuses (tail calls, relaxed SIMD, or any other
//!   reason) is compiled by Cranelift before the load returns, as without
//!   tiers; one whose baseline compile a bound stopped (deadline, the
//!   compiler child's memory) is refused as it is, since Cranelift needs
//!   more of both. If the tier-up fails, the baseline code keeps serving
//!   (logged), and the next load of that digest tries again.
//!
//! Caveat: until the tier-up lands, calls take longer (a raft render 1.18×,
//! BENCHMARKS.md §8), and the tier-up, yielding to everything else, may
//! take many seconds on a busy node; a call near its deadline on optimized
//! code may exceed it on baseline code and is retried by the next
//! reconcile (timeouts are never memoized).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use wasmtime::Engine;
use wasmtime::component::Linker;

use super::compat::Pre;
use super::compile::{self, Failed, Job};
use super::runtime::{LoadedPlugin, Runtime, new_linker, start_ticker, wrong_world};
use super::sandbox::CallState;
use crate::contract::Digest;
use crate::error::PluginError;
use crate::sync::{MutexExt, RwLockExt};

/// The baseline compiler's engine and linker (components it compiles run
/// only in stores of this engine), and the code of each digest being tiered
/// up, so that loading it again meanwhile shares it rather than compiling
/// twice.
pub(super) struct Baseline {
    engine: Engine,
    linker: Linker<CallState>,
    tiering: Mutex<HashMap<Digest, Weak<Code>>>,
}

/// The code a plugin's calls run: baseline code until the optimized code
/// replaces it, once.
pub(super) struct Code {
    current: RwLock<Arc<Pre>>,
    optimized: AtomicBool,
}

impl Code {
    pub(super) fn new(pre: Pre, optimized: bool) -> Arc<Self> {
        Arc::new(Code {
            current: RwLock::new(Arc::new(pre)),
            optimized: AtomicBool::new(optimized),
        })
    }

    /// What a call starting now runs.
    pub(super) fn current(&self) -> Arc<Pre> {
        Arc::clone(&self.current.reading())
    }

    /// Serve `pre` (optimized code) from now on.
    pub(super) fn optimize(&self, pre: Pre) {
        *self.current.writing() = Arc::new(pre);
        self.optimized.store(true, Ordering::Release);
    }

    pub(super) fn is_optimized(&self) -> bool {
        self.optimized.load(Ordering::Acquire)
    }
}

impl Runtime {
    /// [`Runtime::load`], but a component compiled neither in memory nor on
    /// disk is served from baseline code at first (compiled by Winch in a
    /// fraction of Cranelift's time) while Cranelift compiles it in the
    /// background; the optimized code replaces it when ready
    /// (`plugin/tier.rs`). For hot reloads, which wait for the compile.
    ///
    /// # Errors
    /// As [`Runtime::load`].
    pub fn load_tiered(
        self: &Arc<Self>,
        origin: &str,
        bytes: &[u8],
    ) -> Result<LoadedPlugin, PluginError> {
        let digest = Digest::of(bytes);
        // Compiled already: nothing to wait for, and no baseline engine made.
        if self.compiled.locked().get(&digest).is_some()
            || self.disk_cache.as_ref().is_some_and(|c| c.holds(digest))
        {
            return self.load(origin, bytes);
        }
        let Some(baseline) = self.baseline() else {
            return self.load(origin, bytes);
        };
        let tiering = baseline
            .tiering
            .locked()
            .get(&digest)
            .and_then(Weak::upgrade);
        if let Some(code) = tiering {
            return self.describe(origin, digest, bytes.len(), code);
        }
        compile::check_bytes(bytes, &self.limits().compile).map_err(|reason| {
            PluginError::NotAComponent {
                origin: origin.to_string(),
                reason,
            }
        })?;
        let started = std::time::Instant::now();
        let compiled = compile::compile(
            &baseline.engine,
            Job::Baseline,
            &self.key,
            digest,
            bytes,
            &self.limits().compile,
        );
        let component = match compiled {
            Ok((component, _)) => component,
            Err(Failed::Refused(reason)) => {
                tracing::info!(origin, %reason, "the baseline compiler refused a component; compiling it optimized");
                return self.load(origin, bytes);
            }
            // Cranelift takes longer and more memory still.
            Err(Failed::Stopped(reason)) => {
                return Err(PluginError::NotAComponent {
                    origin: origin.to_string(),
                    reason,
                });
            }
        };
        tracing::info!(origin, bytes = bytes.len(), elapsed = ?started.elapsed(), "compiled a plugin component (baseline)");
        let pre = Pre::new(&baseline.linker, &component).map_err(|e| wrong_world(origin, e))?;
        let plugin = self.describe(origin, digest, bytes.len(), Code::new(pre, false))?;
        baseline
            .tiering
            .locked()
            .insert(digest, Arc::downgrade(&plugin.code));
        self.tier_up(origin, digest, bytes, &plugin.code);
        Ok(plugin)
    }

    fn baseline(&self) -> Option<&Baseline> {
        self.baseline
            .get_or_init(|| {
                let made = Engine::new(&compile::baseline_config())
                    .map_err(PluginError::engine)
                    .and_then(|engine| {
                        start_ticker(&engine)?;
                        Ok(Baseline {
                            linker: new_linker(&engine)?,
                            engine,
                            tiering: Mutex::default(),
                        })
                    });
                made.inspect_err(|e| {
                    tracing::warn!(error = %e, "no baseline compiler here; hot reloads wait for Cranelift");
                })
                .ok()
            })
            .as_ref()
    }

    /// Compile `bytes` with Cranelift in the background, at a low CPU
    /// priority, and swap the result into `code`.
    fn tier_up(self: &Arc<Self>, origin: &str, digest: Digest, bytes: &[u8], code: &Arc<Code>) {
        let (runtime, code, owned, bytes) = (
            Arc::clone(self),
            Arc::downgrade(code),
            origin.to_string(),
            bytes.to_vec(),
        );
        let spawned = std::thread::Builder::new()
            .name("atoll-tier-up".into())
            .spawn(move || {
                let origin = owned;
                let started = std::time::Instant::now();
                let linked = runtime
                    .compile_as(Job::TierUp, &origin, digest, &bytes)
                    .and_then(|c| Pre::new(&runtime.linker, &c).map_err(|e| wrong_world(&origin, e)));
                match (linked, code.upgrade()) {
                    (Ok(pre), Some(code)) => {
                        code.optimize(pre);
                        tracing::info!(origin, elapsed = ?started.elapsed(), "optimized code serves the plugin now");
                    }
                    // Unloaded meanwhile: the compiled component stays cached.
                    (Ok(_), None) => {}
                    (Err(error), _) => {
                        tracing::warn!(origin, %error, "the optimizing compile failed; baseline code keeps serving");
                    }
                }
                // Loads from now on find the optimized component kept, or
                // (after a failure) try again.
                if let Some(Some(baseline)) = runtime.baseline.get() {
                    baseline.tiering.locked().remove(&digest);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(origin, error = %e, "cannot start a tier-up; baseline code keeps serving");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::contract::PluginDatabase;
    use crate::error::PluginError;
    use crate::plugin::builtin;
    use crate::plugin::{Limits, LoadedPlugin, Runtime};

    fn raft() -> &'static [u8] {
        builtin::bytes("raft").expect("raft is built in")
    }

    fn database(partitions: u32) -> PluginDatabase {
        PluginDatabase {
            name: "orders".into(),
            namespace: "shop".into(),
            uid: "00000000-0000-4000-8000-000000000001".into(),
            generation: 1,
            labels: vec![],
            partitions,
            config: r#"{"clusters":2,"replicas":3}"#.into(),
            cluster_domain: "cluster.local".into(),
        }
    }

    fn render(plugin: &LoadedPlugin) -> Vec<String> {
        plugin
            .render(&database(4))
            .expect("the call succeeds")
            .expect("raft renders")
            .objects
    }

    #[test]
    fn a_hot_reload_serves_baseline_code_then_the_optimized_code_with_the_same_answers() {
        // The oracle: the same component compiled by Cranelift alone, in
        // another runtime.
        let reference = Arc::new(Runtime::new(Limits::default()).expect("engine"));
        let reference = reference.load("raft", raft()).expect("raft loads");
        assert!(reference.is_optimized());
        let expected = render(&reference);

        let runtime = Arc::new(Runtime::new(Limits::default()).expect("engine"));
        let plugin = runtime.load_tiered("raft", raft()).expect("raft loads");
        assert!(
            !plugin.is_optimized(),
            "a component compiled nowhere yet starts on baseline code (Winch runs on x86_64)"
        );
        // Loaded again before the tier-up lands: the same code, no second
        // compile of either kind (the first load's counts are checked below).
        let twin = runtime.load_tiered("raft", raft()).expect("raft loads");
        let described = |p: &LoadedPlugin| {
            let m = p.metadata();
            (m.name.clone(), m.version.clone(), m.config_schema.clone())
        };
        assert_eq!(described(&plugin), described(&reference));
        assert_eq!(render(&plugin), expected, "baseline code answers the same");

        let deadline = Instant::now() + Duration::from_secs(600);
        while !(plugin.is_optimized() && twin.is_optimized()) {
            assert!(Instant::now() < deadline, "no tier-up within 600 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(render(&plugin), expected, "optimized code answers the same");
        assert_eq!(
            runtime.compilations(),
            1,
            "Cranelift compiled it once: the second load shared the tier-up"
        );

        // Reloaded again: the optimized component is kept, so no baseline.
        let again = runtime.load_tiered("raft", raft()).expect("raft loads");
        assert!(again.is_optimized());
        assert_eq!(runtime.compilations(), 1, "and not compiled again");
    }

    #[test]
    fn what_is_not_a_component_is_refused_as_by_an_optimized_load() {
        let runtime = Arc::new(Runtime::new(Limits::default()).expect("engine"));
        let core_module = [0, b'a', b's', b'm', 1, 0, 0, 0];
        for bytes in [&b"not wasm"[..], &core_module[..]] {
            let tiered = runtime.load_tiered("bad", bytes).expect_err("refused");
            let optimized = runtime.load("bad", bytes).expect_err("refused");
            assert!(
                matches!(tiered, PluginError::NotAComponent { .. }),
                "{tiered}"
            );
            assert_eq!(tiered.to_string(), optimized.to_string());
        }
        assert_eq!(runtime.compilations(), 0);
    }
}
