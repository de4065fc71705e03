//! The sweep: Member records of `atoll run` instances that are gone
//! (crashed, killed, cut off) are deleted by the replicas still serving.
//!
//! Every record carries its instance's id (`atoll.dev/instance`) and the
//! namespace of that instance's Lease (`atoll.dev/instance-namespace`); each
//! instance keeps its Lease `atoll-instance-<id>` renewed
//! ([`instance`](super::instance)). Every replica, as soon as its gRPC server
//! serves and then every `sweep_period`:
//! 1. lists the instance Leases in its namespace and notes, on its own
//!    monotonic clock, when it first saw each Lease's current version;
//! 2. lists the Member records labelled with that namespace (pages of
//!    [`PAGE`]; listing the Leases again when a page names an instance it has
//!    not seen, which must have started since) and deletes those whose
//!    instance is not this one and whose Lease is missing or *expired*: not
//!    changed for its own `leaseDurationSeconds` since this replica saw it;
//!    at most [`API_CONCURRENCY`] deletes at a time, each only of the record
//!    listed (uid precondition);
//! 3. deletes the expired Leases (only the version it judged:
//!    `resourceVersion` precondition).
//!
//! # Guarantee
//! A crashed replica's Member records are gone within `lease_duration +
//! sweep_period` (20 s with the defaults), plus the time the deletes take, of
//! another replica serving: that replica's first sweep sees the dead Lease,
//! and the first sweep a `lease_duration` later finds it unchanged. A Lease
//! deleted on graceful shutdown makes any record left behind go at the next
//! sweep.
//!
//! # Caveats
//! - A replica's own records are never swept by itself; records without the
//!   labels (made by an older atoll) are never swept.
//! - A live replica whose renewals are late is not swept until its Lease
//!   really expired by its own duration; one that cannot renew for that long
//!   ends its streams first (see [`instance`](super::instance)).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::{Client, ResourceExt};
use tokio::time::Instant;

use super::API_CONCURRENCY;
use super::instance::{Instance, Liveness, lease_name};
use super::leave::{Leaving, delete_record};
use crate::api::{LABEL_INSTANCE, LABEL_INSTANCE_NAMESPACE, Member};
use crate::sync::MutexExt;

/// Objects per LIST page.
pub(super) const PAGE: u32 = 500;

/// An instance Lease as the sweep judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LeaseView {
    /// The instance (the Lease's `atoll.dev/instance` label).
    pub(super) id: String,
    /// Changes with every write, renewals included.
    pub(super) version: String,
    /// Its own `leaseDurationSeconds` (at least 1 s).
    pub(super) valid_for: Duration,
}

impl LeaseView {
    /// `None` for a Lease without the label or a name other than its
    /// instance's (not an instance Lease).
    pub(super) fn of(lease: &Lease) -> Option<LeaseView> {
        let id = lease.labels().get(LABEL_INSTANCE)?;
        if lease.name_any() != lease_name(id) {
            return None;
        }
        let seconds = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .unwrap_or(15)
            .max(1);
        Some(LeaseView {
            id: id.clone(),
            version: lease.resource_version().unwrap_or_default(),
            valid_for: Duration::from_secs(seconds as u64),
        })
    }
}

/// What this replica saw of the instance Leases, and since when.
#[derive(Debug, Default)]
pub(super) struct Judge {
    seen: HashMap<String, Seen>,
}

#[derive(Debug)]
struct Seen {
    lease: LeaseView,
    /// When this version was first seen (on the local monotonic clock).
    since: Instant,
}

impl Judge {
    /// Note the Leases of a complete listing made at `now`: a Lease whose
    /// version changed counts from now; one not listed is forgotten (gone).
    pub(super) fn listed(&mut self, leases: Vec<LeaseView>, now: Instant) {
        let mut seen = HashMap::with_capacity(leases.len());
        for lease in leases {
            let since = match self.seen.remove(&lease.id) {
                Some(old) if old.lease.version == lease.version => old.since,
                _ => now,
            };
            seen.insert(lease.id.clone(), Seen { lease, since });
        }
        self.seen = seen;
    }

    /// Note one Lease read at `now`.
    pub(super) fn saw(&mut self, lease: LeaseView, now: Instant) {
        let since = match self.seen.get(&lease.id) {
            Some(old) if old.lease.version == lease.version => old.since,
            _ => now,
        };
        self.seen.insert(lease.id.clone(), Seen { lease, since });
    }

    /// Whether the last listing (or read) showed instance `id`'s Lease.
    pub(super) fn knows(&self, id: &str) -> bool {
        self.seen.contains_key(id)
    }

    /// Whether the records of instance `id` may be swept at `now`: not this
    /// instance (`own`), and its Lease missing from what was seen last or
    /// unchanged for its whole duration.
    pub(super) fn stale(&self, own: &str, id: &str, now: Instant) -> bool {
        if id == own {
            return false;
        }
        match self.seen.get(id) {
            None => true,
            Some(s) => now.saturating_duration_since(s.since) >= s.lease.valid_for,
        }
    }

    /// When the next Lease of another instance seen unexpired at `now` will
    /// have expired, if it is not renewed by then.
    pub(super) fn next_expiry(&self, own: &str, now: Instant) -> Option<Instant> {
        self.seen
            .iter()
            .filter(|(id, _)| *id != own)
            .map(|(_, s)| s.since + s.lease.valid_for)
            .filter(|at| *at > now)
            .min()
    }

    /// The expired Leases of other instances: (instance, version judged).
    pub(super) fn expired(&self, own: &str, now: Instant) -> Vec<(String, String)> {
        let mut expired: Vec<(String, String)> = self
            .seen
            .iter()
            .filter(|(id, _)| self.stale(own, id, now))
            .map(|(id, s)| (id.clone(), s.lease.version.clone()))
            .collect();
        expired.sort();
        expired
    }
}

/// Sweep at once, then every `sweep_period`, and also as soon as a Lease
/// seen would expire (so a dead instance's records go `lease_duration`
/// after its Lease was first seen, not up to a period later), until aborted.
pub(super) async fn sweep_forever(
    client: Client,
    instance: Arc<Instance>,
    liveness: Liveness,
    judge: Arc<Mutex<Judge>>,
) {
    loop {
        let started = Instant::now();
        match sweep(&client, &instance, &liveness, &judge).await {
            Ok((0, 0)) => {}
            Ok((members, leases)) => {
                tracing::info!(
                    members,
                    leases,
                    "swept the Member records and Leases of vanished atoll instances"
                )
            }
            Err(error) => tracing::warn!(%error, "sweeping Member records; retrying"),
        }
        let period = started + liveness.sweep_period;
        let next = judge
            .locked()
            .next_expiry(&instance.id, Instant::now())
            .map_or(period, |expiry| expiry.min(period));
        tokio::time::sleep_until(next).await;
    }
}

/// One sweep: how many records and Leases it deleted.
async fn sweep(
    client: &Client,
    instance: &Instance,
    liveness: &Liveness,
    judge: &Mutex<Judge>,
) -> Result<(usize, usize), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &instance.namespace);
    list_leases(&leases, judge).await?;
    let members: Api<Member> = match &liveness.members_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let selector = format!(
        "{LABEL_INSTANCE},{LABEL_INSTANCE_NAMESPACE}={}",
        instance.namespace
    );
    let mut params = ListParams::default().labels(&selector).limit(PAGE);
    let mut swept = 0;
    loop {
        let page = members.list_metadata(&params).await?;
        let owner = |m: &PartialObjectMeta<Member>| m.labels().get(LABEL_INSTANCE).cloned();
        let unknown = page
            .items
            .iter()
            .filter_map(owner)
            .any(|id| !judge.locked().knows(&id));
        if unknown {
            // Started since the Leases were listed (its Lease came first).
            list_leases(&leases, judge).await?;
        }
        let now = Instant::now();
        let stale: Vec<Leaving> = {
            let judge = judge.locked();
            page.items
                .iter()
                .filter(|m| owner(m).is_some_and(|id| judge.stale(&instance.id, &id, now)))
                .filter_map(Leaving::of)
                .collect()
        };
        swept += stale.len();
        futures::stream::iter(stale)
            .for_each_concurrent(API_CONCURRENCY, |leaving| {
                delete_record(
                    client.clone(),
                    leaving,
                    "swept the Member of a vanished instance",
                )
            })
            .await;
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let expired = judge.locked().expired(&instance.id, Instant::now());
    let mut released = 0;
    for (id, version) in expired {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: None,
                resource_version: Some(version),
            }),
            ..DeleteParams::default()
        };
        match leases.delete(&lease_name(&id), &params).await {
            Ok(_) => released += 1,
            // Gone, or renewed since it was judged.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok((swept, released))
}

/// List the instance Leases into `judge`.
async fn list_leases(api: &Api<Lease>, judge: &Mutex<Judge>) -> Result<(), kube::Error> {
    let mut params = ListParams::default().labels(LABEL_INSTANCE).limit(PAGE);
    let mut leases = Vec::new();
    loop {
        let page = api.list(&params).await?;
        leases.extend(page.items.iter().filter_map(LeaseView::of));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    judge.locked().listed(leases, Instant::now());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: &str, version: &str, secs: u64) -> LeaseView {
        LeaseView {
            id: id.into(),
            version: version.into(),
            valid_for: Duration::from_secs(secs),
        }
    }

    #[test]
    fn records_are_stale_once_their_lease_is_missing_or_unchanged_for_its_duration() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut judge = Judge::default();
        judge.listed(
            vec![
                lease("live", "1", 15),
                lease("dead", "7", 15),
                lease("me", "3", 15),
            ],
            t0,
        );
        // Just seen: nothing is stale, whatever its renewTime said.
        assert!(!judge.stale("me", "live", t0));
        assert!(!judge.stale("me", "dead", t0));
        // An instance without a Lease is gone.
        assert!(judge.stale("me", "never-listed", t0));
        // Never this instance's own, Lease or not.
        assert!(!judge.stale("me", "me", t0 + s(3600)));

        // "live" renews every 5 s, the last time late (at 14 s); "dead" never.
        judge.listed(
            vec![lease("live", "2", 15), lease("dead", "7", 15)],
            t0 + s(5),
        );
        judge.listed(
            vec![lease("live", "3", 15), lease("dead", "7", 15)],
            t0 + s(14),
        );
        let at = t0 + s(15) - Duration::from_millis(1);
        assert!(!judge.stale("me", "dead", at), "not before its duration");
        assert!(judge.stale("me", "dead", t0 + s(15)));
        assert!(!judge.stale("me", "live", t0 + s(28)), "late, not expired");
        assert!(judge.stale("me", "live", t0 + s(29)));
        // The next sweep is due when "live" would expire unrenewed.
        assert_eq!(judge.next_expiry("me", t0 + s(15)), Some(t0 + s(29)));
        // "me" was not listed this time: still never stale to itself.
        assert_eq!(
            judge.expired("me", t0 + s(15)),
            [("dead".into(), "7".into())]
        );

        // A Lease's own duration counts, not a default.
        judge.listed(vec![lease("slow", "1", 60)], t0 + s(20));
        assert!(!judge.stale("me", "slow", t0 + s(79)));
        assert!(judge.stale("me", "slow", t0 + s(80)));
        assert!(
            judge.stale("me", "dead", t0 + s(20)),
            "forgotten once unlisted"
        );
        assert!(!judge.knows("dead"));
        assert!(judge.knows("slow"));

        // A single read keeps the time an unchanged version was first seen.
        judge.saw(lease("slow", "1", 60), t0 + s(70));
        assert!(judge.stale("me", "slow", t0 + s(80)));
        judge.saw(lease("slow", "2", 60), t0 + s(81));
        assert!(!judge.stale("me", "slow", t0 + s(140)));
        assert!(judge.stale("me", "slow", t0 + s(141)));
    }

    #[test]
    fn only_instance_leases_are_judged() {
        let mut lease = Lease::default();
        lease.metadata.name = Some("atoll-instance-abc".into());
        lease.metadata.resource_version = Some("42".into());
        assert_eq!(LeaseView::of(&lease), None, "no label");
        lease.metadata.labels = Some([(LABEL_INSTANCE.to_string(), "abc".to_string())].into());
        let view = LeaseView::of(&lease).unwrap();
        assert_eq!(view, self::lease("abc", "42", 15));
        lease.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            lease_duration_seconds: Some(0),
            ..Default::default()
        });
        assert_eq!(
            LeaseView::of(&lease).unwrap().valid_for,
            Duration::from_secs(1)
        );
        lease.metadata.name = Some("atoll".into());
        assert_eq!(LeaseView::of(&lease), None, "the leader Lease");
    }
}
