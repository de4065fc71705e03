//! This process as the owner of Member records: a random instance id and the
//! Lease `atoll-instance-<id>` it keeps renewed in atoll's own namespace, so
//! that other replicas can tell its records from those of a replica that is
//! gone (see [`sweep`](super::sweep)).
//!
//! # Guarantees
//! - No Member record is created before the Lease was written (joins wait
//!   for [`Held::held`]); so a record whose instance has no Lease belongs to
//!   an instance that is gone, or that lost its Lease.
//! - The instance declares its Lease lost (and its streams end, so their
//!   clients join again) when `lease_duration - renew_period / 2` passed
//!   since it sent its last successful renewal (one failed renewal is
//!   tolerated with the defaults): before another replica, which counts
//!   expiry from when *it* saw that renewal, may sweep its records. A Lease found deleted (swept) is lost too; either way the
//!   next successful write starts a new [`Held::epoch`].
//!
//! # Caveats
//! - Like leader election, expiry is judged on monotonic clocks; clocks that
//!   run at different rates, or a process paused longer than the margin
//!   (half a renewal period), can have records swept while their streams are
//!   still open for a moment.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::api::LABEL_INSTANCE;

/// Prefix of the instance Leases' names.
pub const LEASE_PREFIX: &str = "atoll-instance-";

/// Where and how often replicas prove that the streams they serve are alive,
/// and sweep the records of those that are not.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// Namespace of the instance Leases: atoll's own (the one its leader
    /// election uses). Replicas judge only records whose Lease is here.
    pub namespace: String,
    /// Sweep Member records in this namespace only (`None`: every
    /// namespace; a single-namespace install may not list Members elsewhere).
    pub members_namespace: Option<String>,
    /// How long an instance Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// Time between renewals (less than half `lease_duration`).
    pub renew_period: Duration,
    /// Time between sweeps.
    pub sweep_period: Duration,
}

impl Liveness {
    /// Leases in `namespace` valid for 15 s, renewed every 5 s, and a sweep
    /// of every namespace every 5 s: a crashed replica's records are gone
    /// within 20 s of another replica serving.
    pub fn new(namespace: impl Into<String>) -> Liveness {
        Liveness {
            namespace: namespace.into(),
            members_namespace: None,
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
            sweep_period: Duration::from_secs(5),
        }
    }

    /// `lease_duration` in whole seconds, rounded up.
    pub(super) fn lease_seconds(&self) -> i32 {
        let d = self.lease_duration;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }

    /// Whether the timing leaves a margin: `0 < 2 × renew_period <
    /// lease_duration`, and a sweep period of at least 100 ms.
    pub fn valid(&self) -> bool {
        !self.namespace.is_empty()
            && !self.renew_period.is_zero()
            && self.renew_period * 2 < self.lease_duration
            && self.sweep_period >= Duration::from_millis(100)
    }
}

/// This process as the owner of Member records.
#[derive(Debug)]
pub(super) struct Instance {
    /// Random, 16 hex digits; the `atoll.dev/instance` label of its records.
    pub(super) id: String,
    /// Namespace of its Lease.
    pub(super) namespace: String,
}

impl Instance {
    /// A new instance with a random id, its Lease in `namespace`.
    pub(super) fn new(namespace: &str) -> Instance {
        Instance {
            id: random_id(),
            namespace: namespace.to_string(),
        }
    }

    /// The name of this instance's Lease.
    pub(super) fn lease(&self) -> String {
        lease_name(&self.id)
    }
}

/// The Lease name of instance `id`.
pub(super) fn lease_name(id: &str) -> String {
    format!("{LEASE_PREFIX}{id}")
}

/// 64 random bits as 16 hex digits: std's `RandomState` is seeded from the
/// OS's random source once per process; time and pid separate processes
/// even so.
fn random_id() -> String {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// Whether this instance holds its Lease, and since which write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Held {
    pub(super) held: bool,
    /// Grows each time the Lease is taken anew (first written, or written
    /// again after it was lost): a stream joined in an earlier epoch ends.
    pub(super) epoch: u64,
}

/// Keep the instance's Lease renewed, publishing on `held` whether it is,
/// until aborted. API errors never end the loop.
pub(super) async fn keep(
    client: Client,
    instance: std::sync::Arc<Instance>,
    liveness: Liveness,
    held: watch::Sender<Held>,
) {
    let api: Api<Lease> = Api::namespaced(client, &instance.namespace);
    let name = instance.lease();
    // Others count expiry from when they saw the last successful write, so
    // from no earlier than when it was sent (`last`): the Lease counts as
    // lost half a renewal period before that expiry, even mid-attempt.
    let trusted_for = liveness
        .lease_duration
        .saturating_sub(liveness.renew_period / 2);
    let mut last: Option<Instant> = None;
    let mut failures = Streak::default();
    loop {
        let started = Instant::now();
        let lost_at = last.map(|l| l + trusted_for);
        let attempt = tokio::time::timeout(
            liveness.renew_period,
            renew(&api, &instance, &name, &liveness),
        );
        let attempt = match lost_at {
            Some(at) => tokio::select! {
                attempt = attempt => Some(attempt),
                () = tokio::time::sleep_until(at) => None,
            },
            None => Some(attempt.await),
        };
        match attempt {
            Some(Ok(Ok(created))) => {
                last = Some(started);
                if failures.recovered() {
                    tracing::info!(lease = %name, "renewing the instance Lease succeeds again");
                }
                held.send_if_modified(|h| {
                    if h.held && !created {
                        return false;
                    }
                    if h.held {
                        tracing::warn!(lease = %name, "the instance Lease was deleted (swept?); its streams end");
                    }
                    *h = Held {
                        held: true,
                        epoch: h.epoch + 1,
                    };
                    tracing::info!(lease = %name, namespace = %instance.namespace, epoch = h.epoch, "holding the instance Lease");
                    true
                });
            }
            Some(Ok(Err(error))) => {
                let error = error.to_string();
                if failures.failed(&error) {
                    tracing::warn!(lease = %name, %error, "renewing the instance Lease (the same error again is logged at debug level)")
                } else {
                    tracing::debug!(lease = %name, %error, "renewing the instance Lease")
                }
            }
            Some(Err(_)) if failures.failed("timed out") => {
                tracing::warn!(lease = %name, "renewing the instance Lease timed out")
            }
            Some(Err(_)) => {}
            None => {}
        }
        let next = started + liveness.renew_period;
        match last.map(|l| l + trusted_for) {
            Some(at) if at < next => tokio::time::sleep_until(at).await,
            _ => tokio::time::sleep_until(next).await,
        }
        if last.is_some_and(|l| l + trusted_for <= Instant::now()) {
            last = None;
            held.send_modify(|h| h.held = false);
            tracing::warn!(lease = %name, "the instance Lease could not be renewed in time; its streams end");
        }
    }
}

/// Failed renewals in a row: a Lease that cannot be written (its namespace
/// missing, say) fails every period, and one warning per cause is enough.
#[derive(Debug, Default)]
struct Streak(Option<String>);

impl Streak {
    /// Another failure; `true` when it should be logged as a warning (the
    /// first of a streak, or a different cause than the last).
    fn failed(&mut self, cause: &str) -> bool {
        let new = self.0.as_deref() != Some(cause);
        self.0 = Some(cause.to_owned());
        new
    }

    /// A success; `true` if it ends a streak of failures.
    fn recovered(&mut self) -> bool {
        self.0.take().is_some()
    }
}

/// One renewal; `true` if the Lease had to be created (it did not exist).
async fn renew(
    api: &Api<Lease>,
    instance: &Instance,
    name: &str,
    liveness: &Liveness,
) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let renewal = serde_json::json!({
        "spec": {
            "renewTime": now,
            "leaseDurationSeconds": liveness.lease_seconds(),
        }
    });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&renewal))
        .await
    {
        Ok(_) => return Ok(false),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e),
    }
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(instance.namespace.clone()),
            labels: Some([(LABEL_INSTANCE.to_string(), instance.id.clone())].into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(instance.id.clone()),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_duration_seconds: Some(liveness.lease_seconds()),
            ..Default::default()
        }),
    };
    api.create(&PostParams::default(), &lease).await?;
    Ok(true)
}

/// Delete this instance's Lease (on shutdown, once its streams' records were
/// deleted): records left behind are then swept by the next sweep of any
/// other replica, without waiting for expiry.
pub(super) async fn release(client: Client, instance: &Instance) {
    let api: Api<Lease> = Api::namespaced(client, &instance.namespace);
    let name = instance.lease();
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => tracing::info!(lease = %name, "released the instance Lease"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(error) => {
            tracing::warn!(lease = %name, %error, "could not delete the instance Lease; it expires")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_lease_names() {
        let (a, b) = (Instance::new("ns"), Instance::new("ns"));
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 16);
        assert!(a.id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.lease(), format!("atoll-instance-{}", a.id));
    }

    #[test]
    fn timing_must_leave_a_margin() {
        let ok = Liveness::new("ns");
        assert!(ok.valid());
        assert_eq!(ok.lease_seconds(), 15);
        let tight = Liveness {
            renew_period: Duration::from_millis(7500),
            ..ok.clone()
        };
        assert!(!tight.valid());
        let unnamed = Liveness::new("");
        assert!(!unnamed.valid());
        let odd = Liveness {
            lease_duration: Duration::from_millis(2500),
            renew_period: Duration::from_millis(500),
            ..ok
        };
        assert_eq!(odd.lease_seconds(), 3);
    }

    #[test]
    fn a_failure_warns_once_per_cause_and_streak() {
        let mut streak = Streak::default();
        assert!(!streak.recovered(), "no streak yet");
        assert!(streak.failed("namespace not found"));
        assert!(!streak.failed("namespace not found"));
        assert!(!streak.failed("namespace not found"));
        assert!(streak.failed("timed out"), "a new cause warns");
        assert!(streak.failed("namespace not found"));
        assert!(streak.recovered());
        assert!(!streak.recovered());
        assert!(
            streak.failed("namespace not found"),
            "a new streak warns again"
        );
    }
}
