//! A control plane of a test's own, for faults that must not reach the
//! shared one (restarting its API server left kube-controller-manager and
//! kube-scheduler with stale caches that broke the tests running after it).

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use xtask::cluster::Restart;

/// etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
/// started by the same code as `cargo xtask cluster up`, but in a state
/// directory and on loopback ports of this test's own (about 10 s to
/// start here). Dropping it, also when the test panics, kills the processes
/// and removes the directory (kept for its logs after a panic).
///
/// [`use_by_default`](Self::use_by_default) points [`crate::client`],
/// [`crate::kubectl`] and [`crate::kubeconfig_env`] at it, so helpers
/// written for the shared control plane work unchanged. That setting is
/// process-wide: a test using it must be the only test in its binary.
pub struct PrivateControlPlane {
    /// `None` only while a blocking call has it on another thread.
    plane: Option<xtask::cluster::PrivatePlane>,
    kubeconfig: PathBuf,
    dir: PathBuf,
}

impl PrivateControlPlane {
    /// Starts one and returns once Pods can run. Panics (never skips) when it
    /// cannot start, saying why; when the control-plane binaries are not
    /// built yet, the message names `cargo xtask cluster up`, which builds them.
    pub async fn start() -> Self {
        let plane = tokio::task::spawn_blocking(xtask::cluster::PrivatePlane::start)
            .await
            .expect("starting the private control plane")
            .unwrap_or_else(|e| panic!("cannot start a private control plane: {e:#}"));
        Self {
            kubeconfig: plane.kubeconfig(),
            dir: plane.dir().to_path_buf(),
            plane: Some(plane),
        }
    }

    /// Its admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Its state directory; process logs are in `logs/`, a good place for a
    /// test's own (kept when the test fails).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// From now on (until it is dropped) [`crate::kubeconfig_env`] returns
    /// this control plane's kubeconfig, so [`crate::client`],
    /// [`crate::kubectl`] and whatever a test passes `KUBECONFIG` to use it.
    pub fn use_by_default(&self) {
        *crate::KUBECONFIG_OVERRIDE
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(self.kubeconfig.clone());
    }

    /// Restarts its kube-apiserver: SIGTERM, SIGKILL if still running after
    /// `grace`, then the same command again. Returns once the new one is
    /// ready, with how long it took. Clients see their connections drop; the
    /// other components of this control plane keep running.
    pub async fn restart_apiserver(&mut self, grace: Duration) -> Restart {
        let mut plane = self.plane.take().expect("not restarting already");
        let (plane, restart) = tokio::task::spawn_blocking(move || {
            let restart = plane.restart_apiserver(grace);
            (plane, restart)
        })
        .await
        .expect("restarting the API server");
        self.plane = Some(plane);
        restart.unwrap_or_else(|e| panic!("restarting the private kube-apiserver: {e:#}"))
    }
}

impl Drop for PrivateControlPlane {
    fn drop(&mut self) {
        let mut current = crate::KUBECONFIG_OVERRIDE
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if current.as_deref() == Some(self.kubeconfig.as_path()) {
            *current = None;
        }
        // `self.plane`'s own Drop stops the processes.
    }
}
