//! `atomix.membership.MembershipService`: membership groups backed by
//! Member objects.
//!
//! Joining creates a Member named after the member id, in the group's
//! namespace, labelled `atoll.dev/group=<group>`. The stream sends the
//! group's members as soon as the server's watch has listed them (the joiner
//! included), then the full list after every change. When the stream ends
//! (the client cancels, disconnects, or vanishes and HTTP/2 keepalive gives
//! up on it; or atoll shuts down) the Member is deleted. A member id names
//! one member: joining again under the same id and group takes the record
//! over (a reconnect), while a record of that id in another group is
//! ALREADY_EXISTS.
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
//! - [`stream`]: what each JoinGroup response stream sends, and when;
//! - [`watch`]: the shared per-namespace watches streams follow;
//! - [`state`]: what such a watch knows, and the group lists it publishes.

mod join;
mod leave;
mod state;
mod stream;
mod watch;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use kube::Client;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::{Request, Response, Status};

use super::auth::{Access, Auth, Credentials};
use super::proto::atomix::membership as pb;
use crate::metrics::Metrics;
use join::Join;
use leave::{Leaving, leave_all};
use watch::Watches;

pub use crate::api::LABEL_GROUP;

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
}

impl MembershipApi {
    /// The service, and the task deleting the Member records of ended
    /// streams. The task ends once the service and every stream are gone
    /// and their records deleted: await it on shutdown, so records do not
    /// outlive the process.
    pub fn new(
        client: Client,
        metrics: Metrics,
        stopping: tokio::sync::watch::Receiver<bool>,
        auth: Arc<Auth>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (leaves, queue) = mpsc::unbounded_channel();
        let leaver = tokio::spawn(leave_all(client.clone(), metrics.clone(), queue));
        let shared = Arc::new(Shared {
            watches: Watches::new(client.clone(), metrics.clone()),
            client,
            metrics,
            recording: Semaphore::new(API_CONCURRENCY),
            leaves,
            stopping,
        });
        (MembershipApi { shared, auth }, leaver)
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
        let join = Join::from_request(request.into_inner())?;
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
