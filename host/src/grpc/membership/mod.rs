//! `atomix.membership.MembershipService`: membership groups backed by
//! Member objects.
//!
//! Joining creates a Member named after the member id, in the group's
//! namespace, labelled `atoll.dev/group=<group>`. The stream sends the
//! group's members as soon as the server's watch has listed them (the joiner
//! included), then the full list after every change. When the stream ends
//! (the client cancels, disconnects, or vanishes and HTTP/2 keepalive gives
//! up on it; or atoll shuts down) the Member is deleted.
//!
//! A JoinGroup without a `member` observes the group: its stream sends the
//! same lists and nothing is recorded, as with the Atomix controller (Atomix
//! go-client v0.4.1 joins so unless given a member id). Observing needs
//! `list members` in the group's namespace, joining `create members`.
//!
//! A member id names one member, held by one stream: a join under an id
//! whose record is held by a live stream is ALREADY_EXISTS (the existing
//! member must leave first), in its group or another, and the record is left
//! as it was. "Live" is known across replicas through the record's labels:
//! `atoll.dev/instance=<id>` names the `atoll run` process serving its
//! stream, and `atoll.dev/instance-namespace` the namespace of that
//! process's Lease `atoll-instance-<id>` ([`instance`]). A record of this
//! process is held while its stream is open; one of another process while
//! that process's Lease exists and has not expired. A record whose holder is
//! gone is taken over. So a client that reconnects after its old stream
//! ended finds the record deleted (or takes it over); one that reconnects
//! while its old stream is still open on a connection that vanished is
//! refused until HTTP/2 keepalive ends that stream (within about 20 s) and
//! the record is deleted. Records without these labels (made by hand, by an
//! older atoll, or by an atoll whose Leases are in another namespace) are
//! never taken over. Records of a replica that crashed are deleted by the
//! other replicas' [`sweep`].
//!
//! Built to hold thousands of streams:
//! - one watch on Member objects per namespace with open streams, shared by
//!   them ([`Watches`]), started by the first stream and stopped with the
//!   last; it keeps each followed group's sorted list in a `tokio::sync::watch`
//!   channel, computed once per change;
//! - a stream makes its next message only when the client is ready for it
//!   ([`Following`](stream::Following)): one that falls behind skips to the
//!   latest list instead of queueing every change, and holds no list while it
//!   waits;
//! - Member creates and deletes go to the API server at most
//!   [`API_CONCURRENCY`] at a time each, deletes from one queue
//!   ([`leave_all`]) that shutdown drains, and that hands freed memory back
//!   to the kernel after a burst.
//!
//! By concern:
//! - [`join`]: validating a JoinGroup request and creating the Member record;
//! - [`leave`]: deleting the record once its stream ended;
//! - [`instance`]: this process's id and the Lease that shows it alive;
//! - [`sweep`]: deleting the records of processes that are gone;
//! - [`stream`]: what each JoinGroup response stream sends, and when;
//! - [`watch`]: the shared per-namespace watches streams follow;
//! - [`state`]: what such a watch knows, and the group lists it publishes.

mod instance;
mod join;
mod leave;
mod state;
mod stream;
mod sweep;
mod watch;

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use kube::Client;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::{Request, Response, Status};

use super::auth::{Access, Auth, Credentials};
use super::proto::atomix::membership as pb;
use crate::metrics::Metrics;
use instance::{Held, Instance};
use join::Joining;
use leave::{Leaving, leave_all};
use stream::Following;
use sweep::Judge;
use watch::Watches;

pub use crate::api::{LABEL_GROUP, LABEL_INSTANCE, LABEL_INSTANCE_NAMESPACE};
pub use instance::{LEASE_PREFIX, Liveness};

/// Member creates, and separately deletes, in flight at most. kube's client
/// speaks HTTP/1.1, one connection per request in flight: a thousand clients
/// joining or dropping at once would otherwise open a thousand connections
/// to the API server and run into its in-flight limit (200 mutating
/// requests by default), starving the controller's own writes.
pub const API_CONCURRENCY: usize = 32;

/// Serves MembershipService from Member objects.
pub struct MembershipApi {
    shared: Arc<Shared>,
    auth: Arc<Auth>,
}

/// What the service, its join tasks and its streams share.
struct Shared {
    client: Client,
    metrics: Metrics,
    watches: Watches,
    /// Permits to create a Member record ([`API_CONCURRENCY`]).
    recording: Semaphore,
    /// Records of ended streams, for [`leave_all`] to delete.
    leaves: mpsc::UnboundedSender<Leaving>,
    /// Turns true when the server shuts down: open streams end then.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// This process, whose records these are.
    instance: Arc<Instance>,
    /// Whether it holds its Lease: joins wait for it, streams end when the
    /// Lease is lost.
    held: tokio::sync::watch::Receiver<Held>,
    /// Uids of this process's records whose streams are open.
    holding: Arc<Mutex<HashSet<String>>>,
    /// What this process saw of other instances' Leases.
    judge: Arc<Mutex<Judge>>,
}

/// What runs besides the service: the deletes of ended streams' records,
/// the instance Lease renewal and the sweep. Dropped, it stops the renewal
/// and the sweep.
pub struct Background {
    client: Client,
    instance: Arc<Instance>,
    leaver: Option<tokio::task::JoinHandle<()>>,
    keeper: Option<tokio::task::JoinHandle<()>>,
    sweeper: tokio::task::AbortHandle,
}

impl Background {
    /// After the server stopped (every stream ended, the service dropped):
    /// wait at most `grace` until the ended streams' records are deleted,
    /// then stop renewing and delete this process's Lease, so that another
    /// replica sweeps at once whatever record was left. `false` if records
    /// were left.
    pub async fn finish(mut self, grace: Duration) -> bool {
        self.sweeper.abort();
        let all_left = match self.leaver.take() {
            Some(leaver) => tokio::time::timeout(grace, leaver).await.is_ok(),
            None => true,
        };
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
            let _ = keeper.await; // no renewal after the delete
        }
        instance::release(self.client.clone(), &self.instance).await;
        all_left
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(keeper) = &self.keeper {
            keeper.abort();
        }
        self.sweeper.abort();
    }
}

impl MembershipApi {
    /// The service with a new instance id, and what runs besides it
    /// (started here: the Lease renewal, and the sweep, which runs at once).
    /// Call `Background::finish` on shutdown, so records do not outlive
    /// the process.
    pub fn new(
        client: Client,
        metrics: Metrics,
        stopping: tokio::sync::watch::Receiver<bool>,
        liveness: Liveness,
        auth: Arc<Auth>,
    ) -> (Self, Background) {
        let (leaves, queue) = mpsc::unbounded_channel();
        let leaver = tokio::spawn(leave_all(client.clone(), metrics.clone(), queue));
        let instance = Arc::new(Instance::new(&liveness.namespace));
        if !liveness.valid() {
            tracing::warn!(
                ?liveness,
                "instance Lease timing leaves no margin; records may be swept while their streams are open"
            );
        }
        let (held_tx, held) = tokio::sync::watch::channel(Held::default());
        let keeper = tokio::spawn(instance::keep(
            client.clone(),
            Arc::clone(&instance),
            liveness.clone(),
            held_tx,
        ));
        let judge = Arc::new(Mutex::new(Judge::default()));
        let sweeper = tokio::spawn(sweep::sweep_forever(
            client.clone(),
            Arc::clone(&instance),
            liveness,
            Arc::clone(&judge),
        ));
        let background = Background {
            client: client.clone(),
            instance: Arc::clone(&instance),
            leaver: Some(leaver),
            keeper: Some(keeper),
            sweeper: sweeper.abort_handle(),
        };
        let shared = Arc::new(Shared {
            watches: Watches::new(client.clone(), metrics.clone()),
            client,
            metrics,
            recording: Semaphore::new(API_CONCURRENCY),
            leaves,
            stopping,
            instance,
            held,
            holding: Arc::default(),
            judge,
        });
        (MembershipApi { shared, auth }, background)
    }
}

type MemberStream = Pin<Box<dyn Stream<Item = Result<pb::JoinGroupResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::membership_service_server::MembershipService for MembershipApi {
    type JoinGroupStream = MemberStream;

    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<Self::JoinGroupStream>, Status> {
        let credentials = Credentials::of(&request);
        let join = match Joining::from_request(request.into_inner())? {
            Joining::Member(join) => join,
            Joining::Observer(group) => {
                // Observing reads the group's Member records.
                let access = Access::new("list", "members", &group.namespace);
                self.auth.check(&credentials, access).await?;
                let subscription =
                    self.shared
                        .watches
                        .subscribe(&group.namespace, &group.name, None);
                tracing::debug!(namespace = %group.namespace, group = %group.name, "observer following");
                let following = Following::observer(subscription, group, &self.shared);
                return Ok(Response::new(following.into_stream()));
            }
        };
        let access = Access::new("create", "members", &join.namespace);
        self.auth.check(&credentials, access).await?;
        let (joined_tx, joined_rx) = oneshot::channel();
        // A task of its own, so that a record once created is deleted again
        // however the call ends, also when the client gives up while the
        // create is in flight (which drops this future).
        tokio::spawn(Arc::clone(&self.shared).join(join, joined_tx));
        match joined_rx.await {
            Ok(Ok(following)) => Ok(Response::new(following.into_stream())),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Status::internal("the join ended before it was recorded")),
        }
    }
}

/// Requests and lists the tests of several files build.
#[cfg(test)]
mod fixtures {
    use super::pb;

    pub(super) fn request(
        member: &str,
        member_ns: &str,
        group: &str,
        group_ns: &str,
    ) -> pb::JoinGroupRequest {
        pb::JoinGroupRequest {
            member: Some(pb::Member {
                id: Some(pb::MemberId {
                    name: member.into(),
                    namespace: member_ns.into(),
                }),
                host: "10.0.0.1".into(),
                port: 5000,
            }),
            group_id: Some(pb::GroupId {
                name: group.into(),
                namespace: group_ns.into(),
            }),
        }
    }

    pub(super) fn names(list: &[pb::Member]) -> Vec<&str> {
        list.iter()
            .map(|m| m.id.as_ref().unwrap().name.as_str())
            .collect()
    }
}
