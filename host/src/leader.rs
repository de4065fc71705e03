//! Leader election on a `coordination.k8s.io/v1` Lease, in the manner of
//! client-go's `leaderelection` package, so that of several atoll replicas
//! only one reconciles at a time.
//!
//! # How it works
//! Every candidate, every [`renew_period`](LeaderElection::renew_period)
//! (non-leaders with up to 20% jitter), reads the Lease and then:
//! - creates it, holding it, when it does not exist;
//! - renews it (`renewTime`) when it holds it;
//! - takes it over (`holderIdentity`, `acquireTime`, `renewTime`,
//!   `leaseDurationSeconds`, `leaseTransitions + 1`) when it has no holder or
//!   when the holder's record has not changed for `leaseDurationSeconds` as
//!   measured on this candidate's own monotonic clock;
//! - otherwise waits.
//!
//! Every write is a create (which fails with 409 if the Lease appeared) or a
//! replace carrying the `resourceVersion` that was read (which fails with 409
//! if anyone wrote in between). So of two candidates racing for the same
//! expired Lease exactly one write succeeds; the loser sees the conflict and
//! stays a follower.
//!
//! # Guarantees
//! - `is_leader` turns `true` only right after a write naming this identity
//!   as holder succeeded.
//! - It turns `false` as soon as one renewal fails: an error, a 409, another
//!   holder, or no answer within `renew_period` (each attempt is bounded by
//!   that). So a leader that cannot reach the API server gives up at most
//!   `2 × renew_period` after its last successful renewal was sent, which
//!   [`validate`](LeaderElection::validate) requires to be shorter than
//!   `lease_duration`; a rival takes over no sooner than `lease_duration`
//!   after it saw that renewal. The difference (5 s with the defaults) is the
//!   margin for the leader to stop.
//! - On shutdown `is_leader` turns `false`, then the Lease is released (its
//!   holder cleared, guarded by `resourceVersion`) so a follower takes over
//!   within about one `renew_period` instead of waiting for expiry.
//!
//! # Caveats
//! - Expiry is judged by each candidate's *local* elapsed time since it saw
//!   the record change, never by comparing `renewTime` with its wall clock,
//!   so clock skew between nodes does not matter; clocks that *run at
//!   different rates* (or a process paused longer than the margin, e.g. a
//!   frozen VM or a stop-the-world pause) can still produce two leaders for a
//!   moment. `renewTime` and `acquireTime` are informational.
//! - A candidate that starts up while another holds the Lease waits a full
//!   `lease_duration` before it may consider that Lease expired, even if the
//!   holder died long ago (it cannot know the record is stale).
//! - Leader election is cooperative: it only helps if the controller stops
//!   writing (stops reconciling, abandons in-flight work) as soon as
//!   `is_leader` turns `false`, and starts only when it turns `true`. A
//!   [`fence::Fence`] given to the candidate ([`LeaderElection::fence`])
//!   makes that hold for a leader that never learns it lost (paused,
//!   partitioned): its writes are refused from `lease_duration −
//!   renew_period` after the start of its last successful renewal, before
//!   any rival may take over.
//! - Releasing on shutdown hands over at once: stop the controller *before*
//!   resolving the `shutdown` future given to [`LeaderElection::run`].
//! - Identities must be unique per process; [`default_identity`] adds a
//!   per-process suffix to the pod name for that reason.

pub mod fence;
pub mod wire;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// Default time a Lease stays valid without renewal (client-go: 15 s).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default time between renewals and acquisition attempts.
pub const DEFAULT_RENEW_PERIOD: Duration = Duration::from_secs(5);

/// A leader election that cannot run as configured.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The timing leaves no margin for a leader to step down before a rival
    /// may take over.
    #[error(
        "leader election timing: renew period ({renew_period:?}) must be positive and less than half \
         the lease duration ({lease_duration:?}), which must be at least 1s"
    )]
    Timing {
        lease_duration: Duration,
        renew_period: Duration,
    },
    /// The namespace, Lease name or identity is empty.
    #[error("leader election: {0} must not be empty")]
    Empty(&'static str),
}

/// One candidate for leadership of the Lease `namespace/name`.
#[derive(Clone)]
pub struct LeaderElection {
    pub client: Client,
    /// Namespace of the Lease (usually the operator's own, `POD_NAMESPACE`).
    pub namespace: String,
    /// Name of the Lease, shared by all candidates (e.g. `atoll-leader`).
    pub name: String,
    /// This candidate, unique per process (see [`default_identity`]).
    pub identity: String,
    /// How long a Lease stays valid after its last renewal; written to
    /// `leaseDurationSeconds` (rounded up to whole seconds).
    pub lease_duration: Duration,
    /// Time between renewals while leading, and between attempts otherwise;
    /// also the time limit of one attempt.
    pub renew_period: Duration,
    /// Extended after each successful renewal to `lease_duration −
    /// renew_period` past the renewal's start, closed on any failure or on
    /// shutdown (`None`: no fence).
    pub fence: Option<fence::Fence>,
}

impl std::fmt::Debug for LeaderElection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElection")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("identity", &self.identity)
            .field("lease_duration", &self.lease_duration)
            .field("renew_period", &self.renew_period)
            .field("fence", &self.fence.is_some())
            .finish_non_exhaustive()
    }
}

/// What one attempt found.
enum Attempt {
    /// This candidate holds the Lease (created, renewed or taken over).
    Leading,
    /// Someone else holds a Lease that has not expired.
    HeldBy(String),
    /// A write lost a race (409).
    Conflict,
}

/// The last Lease record seen and when (on the local monotonic clock) it
/// was first seen with these values.
struct Observed {
    spec: LeaseSpec,
    at: Instant,
}

impl LeaderElection {
    /// A candidate with the default timing (15 s lease, 5 s renewals).
    pub fn new(
        client: Client,
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaderElection {
            client,
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_period: DEFAULT_RENEW_PERIOD,
            fence: None,
        }
    }

    /// Checks the configuration: non-empty names, `lease_duration ≥ 1s` and
    /// `0 < 2 × renew_period < lease_duration`.
    ///
    /// # Errors
    /// [`LeaderError`] naming what is wrong.
    pub fn validate(&self) -> Result<(), LeaderError> {
        for (what, value) in [
            ("namespace", &self.namespace),
            ("lease name", &self.name),
            ("identity", &self.identity),
        ] {
            if value.is_empty() {
                return Err(LeaderError::Empty(what));
            }
        }
        if self.renew_period.is_zero()
            || self.lease_duration < Duration::from_secs(1)
            || self.renew_period * 2 >= self.lease_duration
        {
            return Err(LeaderError::Timing {
                lease_duration: self.lease_duration,
                renew_period: self.renew_period,
            });
        }
        Ok(())
    }

    /// Competes for the Lease until `shutdown` resolves, publishing whether
    /// this candidate leads on `is_leader` (only changes are sent). Returns
    /// after releasing the Lease if it held it; API errors never end the
    /// loop (they are logged and the attempt counts as failed). Fails at once,
    /// with `is_leader` untouched, only if [`validate`](Self::validate) does.
    ///
    /// # Errors
    /// Only what [`validate`](Self::validate) returns.
    pub async fn run(
        self,
        is_leader: watch::Sender<bool>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), LeaderError> {
        self.validate()?;
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut shutdown = std::pin::pin!(shutdown);
        let mut observed: Option<Observed> = None;
        let mut leading = false;
        tracing::info!(lease = %self.name, namespace = %self.namespace, identity = %self.identity,
            "competing for leadership");
        loop {
            let started = Instant::now();
            let attempt = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                attempt = tokio::time::timeout(self.renew_period, self.attempt(&api, &mut observed)) => attempt,
            };
            let now_leading = match attempt {
                Ok(Ok(Attempt::Leading)) => true,
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    if leading {
                        tracing::warn!(lease = %self.name, %holder, "the lease was taken over");
                    }
                    false
                }
                Ok(Ok(Attempt::Conflict)) => {
                    tracing::debug!(lease = %self.name, "lost a race writing the lease");
                    false
                }
                Ok(Err(error)) => {
                    tracing::warn!(lease = %self.name, %error, "lease request failed");
                    false
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, timeout = ?self.renew_period,
                        "lease request timed out");
                    false
                }
            };
            if let Some(fence) = &self.fence {
                if now_leading {
                    fence.extend(self.fence_deadline(started));
                } else {
                    fence.close();
                }
            }
            if now_leading != leading {
                if now_leading {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
                } else {
                    tracing::warn!(lease = %self.name, identity = %self.identity, "stopped leading");
                }
            }
            leading = now_leading;
            publish(&is_leader, leading);
            let wait = if leading {
                self.renew_period
            } else {
                jittered(self.renew_period)
            };
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(started + wait) => {}
            }
        }
        if let Some(fence) = &self.fence {
            fence.close();
        }
        publish(&is_leader, false);
        match tokio::time::timeout(self.renew_period, self.release(&api)).await {
            Ok(Ok(true)) => tracing::info!(lease = %self.name, "released the lease"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                tracing::warn!(lease = %self.name, %error, "could not release the lease; it expires on its own")
            }
            Err(_) => {
                tracing::warn!(lease = %self.name, "releasing the lease timed out; it expires on its own")
            }
        }
        Ok(())
    }

    /// One read and, if allowed, one write of the Lease.
    async fn attempt(
        &self,
        api: &Api<Lease>,
        observed: &mut Option<Observed>,
    ) -> Result<Attempt, kube::Error> {
        let Some(mut lease) = api.get_opt(&self.name).await? else {
            let now = MicroTime(Timestamp::now());
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    remember(observed, created.spec.unwrap_or_default());
                    Ok(Attempt::Leading)
                }
                Err(e) if is_conflict(&e) => Ok(Attempt::Conflict),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        remember(observed, spec.clone());
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if let Some(holder) = &holder
            && !mine
        {
            let valid_for =
                Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
            let unchanged_for = observed
                .as_ref()
                .map(|o| o.at.elapsed())
                .unwrap_or_default();
            if unchanged_for < valid_for {
                return Ok(Attempt::HeldBy(holder.clone()));
            }
            tracing::info!(lease = %self.name, previous = %holder, ?unchanged_for,
                "the lease expired; taking it over");
        }
        let now = MicroTime(Timestamp::now());
        let mut next = spec.clone();
        if !mine {
            next.holder_identity = Some(self.identity.clone());
            next.acquire_time = Some(now.clone());
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        next.renew_time = Some(now);
        next.lease_duration_seconds = Some(self.lease_seconds());
        lease.spec = Some(next);
        // `metadata.resourceVersion` stays as read: the replace is refused
        // with 409 if anyone wrote the Lease since.
        lease.metadata.managed_fields = None;
        match api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                remember(observed, written.spec.unwrap_or_default());
                Ok(Attempt::Leading)
            }
            Err(e) if is_conflict(&e) => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Clears the holder if it is this candidate. `Ok(true)` if released.
    async fn release(&self, api: &Api<Lease>) -> Result<bool, kube::Error> {
        let Some(mut lease) = api.get_opt(&self.name).await? else {
            return Ok(false);
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_duration_seconds = Some(1);
        lease.metadata.managed_fields = None;
        match api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            // Someone wrote since we read: the Lease is no longer ours to release.
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Until when a renewal attempt that started at `started` and
    /// succeeded lets this candidate write: `lease_duration − renew_period`
    /// later, at least `renew_period` before a rival may take over (rivals
    /// count from when they see the renewal, after `started`).
    fn fence_deadline(&self, started: Instant) -> Instant {
        started + self.lease_duration.saturating_sub(self.renew_period)
    }

    /// `lease_duration` in whole seconds, rounded up (never shorter).
    fn lease_seconds(&self) -> i32 {
        let d = self.lease_duration;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// An identity unique to this process: `$POD_NAME` (else the host name)
/// followed by `_` and a per-process suffix, like client-go's
/// `hostname_uuid`. The pod name lets `kubectl get lease` show which pod
/// leads; the suffix keeps a restarted container from being mistaken for
/// its predecessor.
pub fn default_identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "atoll".to_owned());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let suffix = nanos ^ u64::from(std::process::id()).rotate_left(40);
    format!("{base}_{suffix:016x}")
}

/// Records `spec` as observed now, unless it is what was observed already
/// (then the time it was first seen stands: that is what expiry counts from).
fn remember(observed: &mut Option<Observed>, spec: LeaseSpec) {
    if observed.as_ref().is_none_or(|o| o.spec != spec) {
        *observed = Some(Observed {
            spec,
            at: Instant::now(),
        });
    }
}

fn publish(is_leader: &watch::Sender<bool>, leading: bool) {
    is_leader.send_if_modified(|current| {
        let changed = *current != leading;
        *current = leading;
        changed
    });
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

/// `period` stretched by up to 20%, so followers do not poll in lockstep.
fn jittered(period: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    period + period.mul_f64(0.2 * f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A candidate that is never run (`validate` and `lease_seconds` do not
    /// touch the client).
    fn candidate(lease: Duration, renew: Duration) -> LeaderElection {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let mut e = LeaderElection::new(client, "ns", "lease", "me");
        e.lease_duration = lease;
        e.renew_period = renew;
        e
    }

    #[tokio::test]
    async fn timing_must_leave_a_margin() {
        let ms = Duration::from_millis;
        assert!(
            candidate(DEFAULT_LEASE_DURATION, DEFAULT_RENEW_PERIOD)
                .validate()
                .is_ok()
        );
        assert!(candidate(ms(2000), ms(500)).validate().is_ok());
        for (lease, renew) in [(2000, 1000), (2000, 0), (900, 100), (15000, 8000)] {
            let err = candidate(ms(lease), ms(renew)).validate().unwrap_err();
            assert!(matches!(err, LeaderError::Timing { .. }), "{err}");
        }
        let mut unnamed = candidate(ms(2000), ms(500));
        unnamed.identity.clear();
        assert!(matches!(
            unnamed.validate(),
            Err(LeaderError::Empty("identity"))
        ));
    }

    #[tokio::test]
    async fn the_fence_falls_a_renew_period_before_a_rival_may_take_over() {
        let e = candidate(DEFAULT_LEASE_DURATION, DEFAULT_RENEW_PERIOD);
        let started = Instant::now();
        let deadline = e.fence_deadline(started);
        // A rival sees the renewal no earlier than `started` and takes over
        // no sooner than `lease_duration` after that.
        let earliest_takeover = started + e.lease_duration;
        assert_eq!(earliest_takeover - deadline, e.renew_period);
        // Renewals come every renew_period, so a healthy leader's fence
        // never falls: the next renewal starts before the deadline.
        assert!(started + e.renew_period < deadline);
    }

    #[tokio::test]
    async fn lease_seconds_round_up() {
        let ms = Duration::from_millis;
        assert_eq!(candidate(ms(15000), ms(5000)).lease_seconds(), 15);
        assert_eq!(candidate(ms(2500), ms(500)).lease_seconds(), 3);
    }

    #[test]
    fn identities_are_unique_and_jitter_is_bounded() {
        assert_ne!(default_identity(), default_identity());
        for _ in 0..100 {
            let jitter = jittered(Duration::from_secs(1));
            assert!(jitter >= Duration::from_secs(1) && jitter <= Duration::from_millis(1200));
        }
    }
}
