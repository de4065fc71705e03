//! Fencing: a leader that may have lost its Lease stops writing *before* a
//! rival could take the Lease over, even if it never learns it lost (a
//! paused process, a partition from the API server).
//!
//! A [`Fence`] holds a deadline on the local monotonic clock. After each
//! successful renewal the elector moves it to
//! `attempt start + lease_duration − renew_period`: a rival counts the
//! Lease's `lease_duration` from when *it* saw that renewal, which is after
//! the attempt started, so the fence falls at least `renew_period` before
//! any takeover (the margin [`LeaderElection::validate`](super::LeaderElection::validate)
//! keeps positive). Any failed renewal, loss or shutdown closes it at once.
//!
//! The controller's Kubernetes client checks every write (POST, PUT,
//! PATCH, DELETE) against the fence as its body is written to the
//! connection ([`wire::client`](super::wire::client)), and refuses it once
//! the fence is down. Reconciles in flight are cancelled when it falls
//! ([`Fence::lapsed`]). The time is read at the check, so a process resumed
//! after a pause (SIGSTOP, a frozen VM) refuses even before its elector or
//! timers have run.
//!
//! # Caveats
//! - A write whose bytes were pulled past the check and is then paused
//!   before the kernel takes them still lands late (see
//!   [`wire`](super::wire)). Only a fencing token checked by the API
//!   server could close that window, which Kubernetes does not offer.
//! - Clocks running at different rates on the two nodes eat into the
//!   margin, as for the Lease itself.

use std::sync::{Arc, Mutex};

use kube::Client;
use kube::client::Body;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A write refused because the fence is down.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "fenced: this replica may have lost the leader Lease, so it no longer writes ({method} {path})"
)]
pub struct Fenced {
    pub method: String,
    pub path: String,
}

#[derive(Debug)]
enum Deadline {
    /// No election: this process leads for its whole life.
    Never,
    /// Writes allowed until then.
    At(Instant),
    /// Not leading (yet, or any more).
    Closed,
}

#[derive(Debug)]
struct Inner {
    deadline: Mutex<Deadline>,
    changed: Notify,
}

/// Whether this replica may still write as the leader. Cheap to clone;
/// clones share the deadline.
#[derive(Debug, Clone)]
pub struct Fence(Arc<Inner>);

impl Fence {
    fn with(deadline: Deadline) -> Self {
        Fence(Arc::new(Inner {
            deadline: Mutex::new(deadline),
            changed: Notify::new(),
        }))
    }

    /// A fence that never falls (no leader election).
    pub fn open() -> Self {
        Fence::with(Deadline::Never)
    }

    /// A fence that is down until [`extend`](Self::extend)ed.
    pub fn closed() -> Self {
        Fence::with(Deadline::Closed)
    }

    /// Down until the first renewal with leader election, never without.
    pub fn for_election(elected: bool) -> Self {
        if elected {
            Fence::closed()
        } else {
            Fence::open()
        }
    }

    fn set(&self, deadline: Deadline) {
        *self.0.deadline.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
        self.0.changed.notify_waiters();
    }

    /// Allow writes until `until` (a renewal succeeded).
    pub fn extend(&self, until: Instant) {
        self.set(Deadline::At(until));
    }

    /// Refuse writes from now on.
    pub fn close(&self) {
        self.set(Deadline::Closed);
    }

    /// When writes stop being allowed: `None` for never, a past instant
    /// when the fence is down.
    fn deadline(&self) -> Option<Instant> {
        match *self.0.deadline.lock().unwrap_or_else(|e| e.into_inner()) {
            Deadline::Never => None,
            Deadline::At(at) => Some(at),
            Deadline::Closed => Some(Instant::now()),
        }
    }

    /// Whether a write may be issued now.
    pub fn is_up(&self) -> bool {
        self.deadline().is_none_or(|at| Instant::now() < at)
    }

    /// Resolves once the fence is down (at its deadline, or when closed);
    /// never for [`Fence::open`].
    pub async fn lapsed(&self) {
        loop {
            // Register before reading, so a change in between wakes us.
            let changed = self.0.changed.notified();
            match self.deadline() {
                Some(at) if Instant::now() >= at => return,
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Whether `method` changes something on the API server.
pub(super) fn is_write(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

impl Fenced {
    /// The refusal `request` would get.
    pub(super) fn of<B>(request: &http::Request<B>) -> Self {
        Fenced {
            method: request.method().to_string(),
            path: request.uri().path().to_string(),
        }
    }

    /// Logs the refusal, then is it.
    pub(super) fn refused(self) -> Self {
        tracing::warn!(method = %self.method, path = %self.path,
            "write refused: the leader fence is down");
        self
    }
}

/// `client` with every write checked against `fence` just before it is
/// handed to it; reads (watches included) pass. A refused write fails with
/// `kube::Error::Service` holding [`Fenced`], and is logged.
///
/// For clients built elsewhere (tests, mocks): what happens inside `client`
/// after the check (its retries, its queue) is not covered. A client for a
/// real API server comes from [`wire::client`](super::wire::client), which
/// checks on the wire.
///
/// Needs a Tokio runtime (the client's request buffer is a task).
pub fn fenced_client(client: Client, fence: Fence) -> Client {
    let namespace = client.default_namespace().to_string();
    let service = tower::service_fn(move |request: http::Request<Body>| {
        let (client, fence) = (client.clone(), fence.clone());
        async move {
            if is_write(request.method()) && !fence.is_up() {
                let fenced = Fenced::of(&request).refused();
                return Err(kube::Error::Service(Box::new(fenced)));
            }
            client.send(request).await
        }
    });
    Client::new(service, namespace)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // The real clock, not tokio's paused one (its `test-util` feature would
    // build tokio, and everything on it, twice: once for `cargo run`, once
    // for `cargo test`). Every bound below is one-sided, so a slow machine
    // cannot fail them: a fence may not fall early, and must fall.

    #[tokio::test]
    async fn a_fence_falls_at_its_deadline_and_when_closed() {
        let fence = Fence::closed();
        assert!(!fence.is_up(), "down until a renewal");
        fence.extend(Instant::now() + Duration::from_secs(3600));
        assert!(fence.is_up(), "up before its deadline");
        fence.extend(Instant::now());
        assert!(!fence.is_up(), "down at the deadline, with no renewal");
        fence.extend(Instant::now() + Duration::from_secs(3600));
        assert!(fence.is_up(), "a renewal raises it again");
        fence.close();
        assert!(!fence.is_up());
        assert!(Fence::open().is_up());
    }

    #[tokio::test]
    async fn lapsed_follows_extensions_and_closing() {
        const STEP: Duration = Duration::from_secs(1);
        let fence = Fence::closed();
        let start = Instant::now();
        fence.extend(start + STEP);
        let waiter = tokio::spawn({
            let fence = fence.clone();
            async move { fence.lapsed().await }
        });
        // The waiter runs (this runtime has one thread) until it sleeps
        // toward the first deadline; a renewal then moves it to 2 steps.
        tokio::task::yield_now().await;
        fence.extend(start + 2 * STEP);
        waiter.await.unwrap();
        assert!(
            start.elapsed() >= 2 * STEP,
            "lapsed at the extended deadline, not the first"
        );
        assert!(!fence.is_up());

        fence.extend(Instant::now() + Duration::from_secs(3600));
        let waiter = tokio::spawn({
            let fence = fence.clone();
            async move { fence.lapsed().await }
        });
        tokio::task::yield_now().await;
        fence.close();
        tokio::time::timeout(Duration::from_secs(60), waiter)
            .await
            .expect("closing wakes the waiter, an hour before its deadline")
            .unwrap();

        let open = Fence::open();
        let never = tokio::time::timeout(STEP, open.lapsed()).await;
        assert!(never.is_err(), "an open fence never lapses");
    }

    /// A client whose every request is answered by `respond`, counting
    /// what reached it.
    fn counting_client() -> (Client, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let service = tower::service_fn(move |request: http::Request<Body>| {
            log.lock()
                .unwrap()
                .push(format!("{} {}", request.method(), request.uri().path()));
            async move {
                let body = Body::from(
                    br#"{"kind":"Status","apiVersion":"v1","status":"Success","metadata":{}}"#
                        .to_vec(),
                );
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder().status(200).body(body).unwrap(),
                )
            }
        });
        (Client::new(service, "default"), seen)
    }

    #[tokio::test]
    async fn the_fenced_client_refuses_writes_but_not_reads_once_down() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::api::{Api, DeleteParams, Patch, PatchParams};
        let (inner, seen) = counting_client();
        let fence = Fence::closed();
        fence.extend(Instant::now() + Duration::from_secs(60));
        let api: Api<ConfigMap> = Api::namespaced(fenced_client(inner, fence.clone()), "ns");
        let patch = Patch::Apply(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap"}));
        let params = PatchParams::apply("atoll");
        // Up: writes reach the server (the answer does not parse as a
        // ConfigMap, which does not matter here).
        let _ = api.patch("a", &params, &patch).await;
        fence.close();
        let refused = api.patch("b", &params, &patch).await.unwrap_err();
        assert!(refused.to_string().contains("fenced"), "{refused}");
        let refused = api.delete("c", &DeleteParams::default()).await.unwrap_err();
        assert!(refused.to_string().contains("fenced"), "{refused}");
        let _ = api.get_opt("d").await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                "PATCH /api/v1/namespaces/ns/configmaps/a",
                "GET /api/v1/namespaces/ns/configmaps/d"
            ]
        );
    }
}
