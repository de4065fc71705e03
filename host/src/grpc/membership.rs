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
//!   ([`Following`]): one that falls behind skips to the latest list instead
//!   of queueing every change, and holds no list while it waits;
//! - Member creates and deletes go to the API server at most
//!   [`API_CONCURRENCY`] at a time each, deletes from one queue
//!   ([`leave_all`]) that shutdown drains, and that hands freed memory back
//!   to the kernel after a burst.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tonic::{Request, Response, Status};

use super::error::{GrpcError, check_label_value, check_name, check_namespace};
use super::proto::atomix::membership as pb;
use crate::api::{Member, MemberSpec};
use crate::metrics::Metrics;

/// Label holding a Member's group, so a group's members can be watched.
pub const LABEL_GROUP: &str = "atoll.dev/group";

/// Member creates, and separately deletes, in flight at most. kube's client
/// speaks HTTP/1.1, one connection per request in flight: a thousand clients
/// joining or dropping at once would otherwise open a thousand connections
/// to the API server and run into its in-flight limit (200 mutating
/// requests by default), starving the controller's own writes.
pub const API_CONCURRENCY: usize = 32;

/// Longest host a member may give: a DNS name (253) or an IP address. The
/// host is stored in the Member record; without a bound one request could
/// put megabytes into etcd.
const MAX_HOST: usize = 253;

/// Attempts to delete a record whose delete failed for a reason that may
/// pass (connection lost, 5xx); kube's client already retries 429, 503 and
/// 504 itself, honouring Retry-After.
const LEAVE_ATTEMPTS: u32 = 5;

/// Serves MembershipService from Member objects.
pub struct MembershipApi {
    shared: Arc<Shared>,
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
    stopping: watch::Receiver<bool>,
}

impl MembershipApi {
    /// The service, and the task deleting the Member records of ended
    /// streams. The task ends once the service and every stream are gone
    /// and their records deleted: await it on shutdown, so records do not
    /// outlive the process.
    pub fn new(
        client: Client,
        metrics: Metrics,
        stopping: watch::Receiver<bool>,
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
        (MembershipApi { shared }, leaver)
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
        let join = Join::from_request(request.into_inner())?;
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

impl Shared {
    /// Record the member, then hand the caller what its stream follows
    /// (dropping that, however the stream ends, has the record deleted).
    async fn join(
        self: Arc<Self>,
        join: Join,
        mut joined: oneshot::Sender<Result<Following, GrpcError>>,
    ) {
        // First, so a namespace's new watch lists while the record is made.
        let group = self
            .watches
            .subscribe(&join.namespace, &join.group, &join.member);
        let api: Api<Member> = Api::namespaced(self.client.clone(), &join.namespace);
        let recorded = {
            let permit = tokio::select! {
                permit = self.recording.acquire() => permit,
                // The caller left before anything was written.
                () = joined.closed() => return,
            };
            let _permit = permit.expect("the semaphore is never closed");
            // Counted from before the create until the delete is done, so
            // 0 means no record of atoll's exists or is on its way.
            self.metrics.member_records().inc();
            record(&api, &join).await
        };
        let uid = match recorded {
            Ok(uid) => uid,
            Err(e) => {
                self.metrics.member_records().dec();
                let _ = joined.send(Err(e));
                return;
            }
        };
        let leave = Leave::new(&self, &join, uid.clone());
        tracing::info!(namespace = %join.namespace, group = %join.group, member = %join.member, "member joined");
        let following = Following {
            group,
            join,
            uid,
            sent: Sent::Nothing,
            stopping: self.stopping.clone(),
            ended: false,
            _open: Counted::new(self.metrics.join_streams()),
            _leave: leave,
        };
        // Refused if the caller left meanwhile: `following` comes back and
        // is dropped here, which has the record deleted.
        let _ = joined.send(Ok(following));
    }
}

/// A validated JoinGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Join {
    namespace: String,
    group: String,
    member: String,
    host: String,
    port: i32,
}

impl Join {
    fn from_request(req: pb::JoinGroupRequest) -> Result<Join, GrpcError> {
        let member = req
            .member
            .ok_or_else(|| GrpcError::Invalid("member is required".into()))?;
        let id = member.id.unwrap_or_default();
        let group = req.group_id.unwrap_or_default();
        check_name("member.id.name", &id.name)?;
        check_label_value("group_id.name", &group.name)?;
        // The group's namespace holds the records; a member may not name
        // another one.
        let namespace = match (group.namespace.as_str(), id.namespace.as_str()) {
            ("", "") => "default".to_string(),
            (g, m) if !g.is_empty() && !m.is_empty() && g != m => {
                return Err(GrpcError::Invalid(format!(
                    "member.id.namespace {m:?} differs from group_id.namespace {g:?}"
                )));
            }
            (g, m) => if g.is_empty() { m } else { g }.to_string(),
        };
        check_namespace("group_id.namespace", &namespace)?;
        if !(0..=65535).contains(&member.port) {
            return Err(GrpcError::Invalid(format!(
                "member.port {} is not a port number (0-65535)",
                member.port
            )));
        }
        if member.host.len() > MAX_HOST {
            return Err(GrpcError::Invalid(format!(
                "member.host is {} bytes long; a host name or address is at most {MAX_HOST}",
                member.host.len()
            )));
        }
        Ok(Join {
            namespace,
            group: group.name,
            member: id.name,
            host: member.host,
            port: member.port,
        })
    }

    fn object(&self) -> Member {
        let mut m = Member::new(
            &self.member,
            MemberSpec {
                group: self.group.clone(),
                host: self.host.clone(),
                port: self.port,
            },
        );
        m.metadata.labels = Some([(LABEL_GROUP.to_string(), self.group.clone())].into());
        m
    }

    /// The joiner as it appears in member lists.
    fn member(&self) -> pb::Member {
        pb::Member {
            id: Some(pb::MemberId {
                name: self.member.clone(),
                namespace: self.namespace.clone(),
            }),
            host: self.host.clone(),
            port: self.port,
        }
    }
}

/// Create the Member record and return its uid. A record of the same id in
/// the same group is replaced (the member reconnected before its old stream
/// was noticed gone); in another group it is ALREADY_EXISTS.
async fn record(api: &Api<Member>, join: &Join) -> Result<String, GrpcError> {
    let doing = || format!("recording Member {}/{}", join.namespace, join.member);
    for _ in 0..3 {
        match api.create(&PostParams::default(), &join.object()).await {
            Ok(created) => return Ok(created.uid().unwrap_or_default()),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(GrpcError::kube(doing())(e)),
        }
        let Some(existing) = api
            .get_opt(&join.member)
            .await
            .map_err(GrpcError::kube(doing()))?
        else {
            continue; // deleted meanwhile: create again
        };
        if existing.spec.group != join.group {
            return Err(GrpcError::AlreadyExists(format!(
                "member {} in namespace {} is already in group {:?}; a member id joins one group at a time",
                join.member, join.namespace, existing.spec.group
            )));
        }
        let params = DeleteParams {
            preconditions: existing.uid().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&join.member, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(GrpcError::kube(doing())(e)),
        }
    }
    Err(GrpcError::AlreadyExists(format!(
        "member {} in namespace {} keeps being recorded concurrently; retry",
        join.member, join.namespace
    )))
}

/// A Member record to delete: the stream that made it ended.
#[derive(Debug)]
struct Leaving {
    namespace: String,
    name: String,
    /// Only this record: a newer join under the same id made another one.
    uid: String,
}

/// Queues the member's record for deletion when dropped, however the stream
/// ended (no runtime is needed for that, so it works during shutdown too).
struct Leave {
    leaves: mpsc::UnboundedSender<Leaving>,
    leaving: Option<Leaving>,
}

impl Leave {
    fn new(shared: &Shared, join: &Join, uid: String) -> Leave {
        Leave {
            leaves: shared.leaves.clone(),
            leaving: Some(Leaving {
                namespace: join.namespace.clone(),
                name: join.member.clone(),
                uid,
            }),
        }
    }
}

impl Drop for Leave {
    fn drop(&mut self) {
        if let Some(leaving) = self.leaving.take()
            && let Err(e) = self.leaves.send(leaving)
        {
            let l = e.0;
            tracing::warn!(namespace = %l.namespace, member = %l.name, "the server stopped; the Member record stays");
        }
    }
}

/// Delete the records of ended streams, [`API_CONCURRENCY`] at a time,
/// until the service and every stream are gone and the queue is empty.
/// (Memory the ended streams freed goes back to the kernel through the
/// allocator: `atoll run` uses jemalloc, which purges unused pages after 1 s.)
async fn leave_all(client: Client, metrics: Metrics, mut queue: mpsc::UnboundedReceiver<Leaving>) {
    let mut deleting = futures::stream::FuturesUnordered::new();
    let mut open = true;
    while open || !deleting.is_empty() {
        tokio::select! {
            leaving = queue.recv(), if open && deleting.len() < API_CONCURRENCY => match leaving {
                Some(leaving) => deleting.push(delete_record(client.clone(), leaving)),
                None => open = false,
            },
            Some(()) = deleting.next() => {
                metrics.member_records().dec();
            }
        }
    }
}

/// Delete one record, retrying failures that may pass.
async fn delete_record(client: Client, leaving: Leaving) {
    let Leaving {
        namespace,
        name,
        uid,
    } = leaving;
    let api: Api<Member> = Api::namespaced(client, &namespace);
    // The uid precondition keeps a stale stream from deleting the record of
    // a newer join under the same id.
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=LEAVE_ATTEMPTS {
        let error = match api.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(%namespace, member = %name, "member left");
                return;
            }
            // Gone already, or replaced by a newer join (uid mismatch).
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return,
            Err(kube::Error::Api(s)) if s.code < 500 && s.code != 429 => {
                kube::Error::Api(s) // will not pass by retrying
            }
            Err(e) if attempt < LEAVE_ATTEMPTS => {
                tracing::debug!(%namespace, member = %name, error = %e, attempt, "deleting the Member record; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                continue;
            }
            Err(e) => e,
        };
        tracing::warn!(%namespace, member = %name, error = %error, "could not delete the Member record; it stays");
        return;
    }
}

/// One member's stream: the group's list whenever it changed, made when
/// the client is ready for the next message (tonic asks for it once HTTP/2
/// flow control lets it send), so a slow client holds no backlog, not even
/// one list, and gets the latest when it catches up. Ends only at shutdown;
/// dropped (the client went away), it has the record deleted.
struct Following {
    group: Subscription,
    join: Join,
    uid: String,
    sent: Sent,
    stopping: watch::Receiver<bool>,
    ended: bool,
    _open: Counted,
    _leave: Leave,
}

/// The list sent last.
enum Sent {
    Nothing,
    /// The watch's own list, compared by pointer: the watch publishes a new
    /// one only when the content changed.
    Watched(Arc<GroupList>),
    /// The watch's list with the joiner put in, before the watch saw its
    /// record.
    Merged(Vec<pb::Member>),
}

impl Following {
    fn into_stream(self) -> MemberStream {
        Box::pin(futures::stream::unfold(self, |mut following| async move {
            let item = following.next().await?;
            Some((item, following))
        }))
    }

    /// The next message: a list that differs from the last one sent, once
    /// there is one; UNAVAILABLE when the server stops, then the end.
    async fn next(&mut self) -> Option<Result<pb::JoinGroupResponse, Status>> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(members) = self.fresh() {
                return Some(Ok(pb::JoinGroupResponse {
                    group_id: Some(pb::GroupId {
                        name: self.join.group.clone(),
                        namespace: self.join.namespace.clone(),
                    }),
                    members,
                }));
            }
            tokio::select! {
                changed = self.group.changed() => if changed.is_err() {
                    break; // the watch is gone (cannot happen while subscribed)
                },
                () = stopped(&mut self.stopping) => break,
            }
        }
        self.ended = true;
        Some(Err(Status::unavailable(
            "atoll is shutting down; join again",
        )))
    }

    /// The list to send now, if it differs from the last one sent.
    fn fresh(&mut self) -> Option<Vec<pb::Member>> {
        let seen = self.group.seen(&self.uid);
        let list = self.group.latest()?;
        self.sent.next(list, seen, || self.join.member())
    }
}

impl Sent {
    /// What to send of `list`, if it differs from what was sent last; `seen`
    /// is whether the watch has seen the joiner's record. Until it has,
    /// lists show the joiner from the request (`me`): the record exists (it
    /// was just created), and the first list must hold the joiner, which
    /// clients wait for.
    fn next(
        &mut self,
        list: Arc<GroupList>,
        seen: bool,
        me: impl FnOnce() -> pb::Member,
    ) -> Option<Vec<pb::Member>> {
        if !seen {
            let merged = list.with(me());
            if matches!(self, Sent::Merged(last) if *last == merged) {
                return None;
            }
            *self = Sent::Merged(merged.clone());
            return Some(merged);
        }
        let unchanged = match self {
            Sent::Watched(last) => Arc::ptr_eq(last, &list),
            Sent::Merged(last) => *last == list.members,
            Sent::Nothing => false,
        };
        let members = (!unchanged).then(|| list.members.clone());
        *self = Sent::Watched(list);
        members
    }
}

/// Resolves once the server stops (or its stop channel is gone). Returns
/// `()`, not the guard `wait_for` yields, which must not live across awaits.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// A gauge counting something alive: up when made, down when dropped.
struct Counted(Gauge);

impl Counted {
    fn new(gauge: &Gauge) -> Counted {
        gauge.inc();
        Counted(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent between statements; a panic elsewhere
    // must not take every stream down with it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shared watches on Member objects: one per namespace with open
/// streams.
struct Watches {
    client: Client,
    metrics: Metrics,
    open: Mutex<HashMap<String, Weak<NamespaceWatch>>>,
}

impl Watches {
    fn new(client: Client, metrics: Metrics) -> Watches {
        Watches {
            client,
            metrics,
            open: Mutex::default(),
        }
    }

    /// Follow `group` in `namespace`, starting the namespace's watch if no
    /// stream there has yet, and look out for the records of `member` (not
    /// created yet) from now on.
    fn subscribe(&self, namespace: &str, group: &str, member: &str) -> Subscription {
        let watch = {
            let mut open = lock(&self.open);
            match open.get(namespace).and_then(Weak::upgrade) {
                Some(watch) => watch,
                None => {
                    open.retain(|_, w| w.strong_count() > 0);
                    let watch = Arc::new(NamespaceWatch::start(
                        self.client.clone(),
                        namespace,
                        &self.metrics,
                    ));
                    open.insert(namespace.to_string(), Arc::downgrade(&watch));
                    watch
                }
            }
        };
        let rx = {
            let mut state = lock(&watch.state);
            state.look_out(member);
            state.subscribe(group)
        };
        Subscription {
            watch,
            group: group.to_string(),
            member: Some(member.to_string()),
            rx: Some(rx),
        }
    }
}

/// One watch on the Member objects of a namespace, stopped when the last
/// stream there ends (the last [`Subscription`] drops it).
struct NamespaceWatch {
    state: Arc<Mutex<State>>,
    task: tokio::task::AbortHandle,
    _counted: Counted,
}

impl NamespaceWatch {
    fn start(client: Client, namespace: &str, metrics: &Metrics) -> NamespaceWatch {
        let state = Arc::new(Mutex::new(State::default()));
        let api: Api<Member> = Api::namespaced(client, namespace);
        let task = tokio::spawn(watch_members(
            api,
            namespace.to_string(),
            Arc::clone(&state),
        ));
        tracing::debug!(%namespace, "watching Members");
        NamespaceWatch {
            state,
            task: task.abort_handle(),
            _counted: Counted::new(metrics.member_watches()),
        }
    }
}

impl Drop for NamespaceWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A group's members as the watch saw them last.
#[derive(Debug, Default, PartialEq)]
struct GroupList {
    /// Sorted by id (the watch's order is not stable).
    members: Vec<pb::Member>,
}

impl GroupList {
    /// The members, with `member` in place of the record of its id.
    fn with(&self, member: pb::Member) -> Vec<pb::Member> {
        let mut members = self.members.clone();
        let name = member.id.as_ref().map_or("", |id| id.name.as_str());
        match self.position(name) {
            Ok(i) => members[i] = member,
            Err(i) => members.insert(i, member),
        }
        members
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.members
            .binary_search_by(|m| m.id.as_ref().map_or("", |id| id.name.as_str()).cmp(name))
    }
}

/// A Member record as lists show it.
#[derive(Debug, Clone)]
struct Record {
    group: String,
    member: pb::Member,
}

impl Record {
    /// `None` for a record no list shows: being deleted, or its label and
    /// spec naming different groups.
    fn of(m: &Member) -> Option<Record> {
        let label = m.labels().get(LABEL_GROUP)?;
        if *label != m.spec.group || m.metadata.deletion_timestamp.is_some() {
            return None;
        }
        Some(Record {
            group: m.spec.group.clone(),
            member: pb::Member {
                id: Some(pb::MemberId {
                    name: m.name_any(),
                    namespace: m.namespace().unwrap_or_default(),
                }),
                host: m.spec.host.clone(),
                port: m.spec.port,
            },
        })
    }
}

type Latest = Option<Arc<GroupList>>;

/// What a namespace's watch knows, and the lists streams follow.
#[derive(Default)]
struct State {
    /// The namespace's member records by name; `None` until the watch has
    /// listed them once.
    members: Option<BTreeMap<String, Record>>,
    /// The latest list of each group a stream follows.
    groups: HashMap<String, watch::Sender<Latest>>,
    /// Uids of the records seen under the names of members joining, since
    /// they subscribed (before their create), and how many streams look.
    /// Lists skip changes, so a stream cannot tell from them whether the
    /// watch ever saw its record, should it be gone again at once.
    lookouts: HashMap<String, Lookout>,
}

#[derive(Default)]
struct Lookout {
    streams: usize,
    uids: Vec<String>,
}

impl State {
    fn subscribe(&mut self, group: &str) -> watch::Receiver<Latest> {
        if let Some(tx) = self.groups.get(group) {
            return tx.subscribe();
        }
        let latest = self
            .members
            .as_ref()
            .map(|m| Arc::new(group_list(m, group)));
        let (tx, rx) = watch::channel(latest);
        self.groups.insert(group.to_string(), tx);
        rx
    }

    /// Note the uids of records named `member` from now on.
    fn look_out(&mut self, member: &str) {
        self.lookouts.entry(member.to_string()).or_default().streams += 1;
    }

    /// Whether a record `member` with `uid` was seen since [`look_out`](Self::look_out).
    fn saw(&self, member: &str, uid: &str) -> bool {
        self.lookouts
            .get(member)
            .is_some_and(|l| l.uids.iter().any(|u| u == uid))
    }

    fn stop_looking_out(&mut self, member: &str) {
        if let Some(lookout) = self.lookouts.get_mut(member) {
            lookout.streams -= 1;
            if lookout.streams == 0 {
                self.lookouts.remove(member);
            }
        }
    }

    /// A record was seen: note it for whoever looks out for its name.
    fn note(&mut self, name: &str, uid: Option<&str>) {
        if let (Some(lookout), Some(uid)) = (self.lookouts.get_mut(name), uid) {
            lookout.uids.push(uid.to_string());
        }
    }

    /// A stream of `group` ended: forget the group if it was the last one.
    fn unsubscribe(&mut self, group: &str) {
        if self
            .groups
            .get(group)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            self.groups.remove(group);
        }
    }

    /// The watch listed every record (at the start, or after it lost track).
    fn relisted(&mut self, members: BTreeMap<String, Record>) {
        self.members = Some(members);
        let groups: Vec<String> = self.groups.keys().cloned().collect();
        for group in groups {
            self.publish(&group);
        }
    }

    fn applied(&mut self, m: &Member) {
        let name = m.name_any();
        self.note(&name, m.metadata.uid.as_deref());
        let Some(members) = &mut self.members else {
            return; // not listed yet: the listing brings it
        };
        let before = members.remove(&name).map(|r| r.group);
        let after = Record::of(m).map(|r| {
            let group = r.group.clone();
            members.insert(name, r);
            group
        });
        for group in before
            .iter()
            .chain(after.iter().filter(|a| before.as_ref() != Some(*a)))
        {
            self.publish(group);
        }
    }

    fn deleted(&mut self, m: &Member) {
        let before = self
            .members
            .as_mut()
            .and_then(|members| members.remove(&m.name_any()));
        if let Some(record) = before {
            self.publish(&record.group);
        }
    }

    /// Give `group`'s followers its list, if it changed.
    fn publish(&self, group: &str) {
        let (Some(tx), Some(members)) = (self.groups.get(group), &self.members) else {
            return;
        };
        let list = group_list(members, group);
        tx.send_if_modified(|latest| {
            if latest.as_deref() == Some(&list) {
                return false;
            }
            *latest = Some(Arc::new(list));
            true
        });
    }
}

/// `group`'s records, sorted by name (the map's order).
fn group_list(members: &BTreeMap<String, Record>, group: &str) -> GroupList {
    let mut list = GroupList::default();
    for record in members.values().filter(|r| r.group == group) {
        list.members.push(record.member.clone());
    }
    list
}

/// A stream's view of its group; unsubscribes when dropped.
struct Subscription {
    watch: Arc<NamespaceWatch>,
    group: String,
    /// The member whose record the watch has not seen yet.
    member: Option<String>,
    /// `Some` until dropped.
    rx: Option<watch::Receiver<Latest>>,
}

impl Subscription {
    /// Whether the watch has seen the member's record `uid` (since the
    /// subscription; once it has, it is no longer looked out for).
    fn seen(&mut self, uid: &str) -> bool {
        let Some(member) = &self.member else {
            return true;
        };
        let mut state = lock(&self.watch.state);
        if !state.saw(member, uid) {
            return false;
        }
        state.stop_looking_out(member);
        drop(state);
        self.member = None;
        true
    }

    /// The latest list (`None` until the namespace is listed), marked seen.
    fn latest(&mut self) -> Latest {
        self.rx.as_mut()?.borrow_and_update().clone()
    }

    /// Resolves when a list newer than the last [`latest`](Self::latest)
    /// is there.
    async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        match &mut self.rx {
            Some(rx) => rx.changed().await,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take()); // no longer counted among the receivers
        let mut state = lock(&self.watch.state);
        state.unsubscribe(&self.group);
        if let Some(member) = &self.member {
            state.stop_looking_out(member);
        }
    }
}

/// Follow the namespace's Member records into `state`, until aborted (when
/// its last stream ends). The watcher relists by itself when it loses track,
/// backing off while the API server does not answer.
async fn watch_members(api: Api<Member>, namespace: String, state: Arc<Mutex<State>>) {
    let config = watcher::Config::default().labels(LABEL_GROUP);
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut listing: Option<BTreeMap<String, Record>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listing = Some(BTreeMap::new()),
            Ok(watcher::Event::InitApply(m)) => {
                lock(&state).note(&m.name_any(), m.metadata.uid.as_deref());
                if let Some(record) = Record::of(&m) {
                    listing.get_or_insert_default().insert(m.name_any(), record);
                }
            }
            Ok(watcher::Event::InitDone) => {
                lock(&state).relisted(listing.take().unwrap_or_default());
            }
            Ok(watcher::Event::Apply(m)) => lock(&state).applied(&m),
            Ok(watcher::Event::Delete(m)) => lock(&state).deleted(&m),
            Err(e) => tracing::warn!(%namespace, error = %e, "watching Members; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(member: &str, member_ns: &str, group: &str, group_ns: &str) -> pb::JoinGroupRequest {
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

    #[test]
    fn joins_are_validated_and_namespaced() {
        let join = Join::from_request(request("m-1", "", "Workers_1", "apps")).unwrap();
        assert_eq!(join.namespace, "apps");
        assert_eq!(join.group, "Workers_1");
        assert_eq!(
            Join::from_request(request("m-1", "apps", "g", ""))
                .unwrap()
                .namespace,
            "apps"
        );
        assert_eq!(
            Join::from_request(request("m-1", "", "g", ""))
                .unwrap()
                .namespace,
            "default"
        );
        for bad in [
            request("", "", "g", ""),
            request("m", "", "", ""),
            request("M", "", "g", ""),
            request("m", "a", "g", "b"),
            request("m", "", "g/x", ""),
        ] {
            let e = Join::from_request(bad.clone()).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
        let mut no_member = request("m", "", "g", "");
        no_member.member = None;
        assert!(Join::from_request(no_member).is_err());
        let mut bad_port = request("m", "", "g", "");
        bad_port.member.as_mut().unwrap().port = 70000;
        assert!(Join::from_request(bad_port).is_err());
    }

    #[test]
    fn long_hosts_are_refused() {
        let mut long = request("m", "", "g", "");
        long.member.as_mut().unwrap().host = "h".repeat(MAX_HOST + 1);
        let e = Join::from_request(long).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("member.host"), "{e}");
    }

    /// A Member record as the API server returns it.
    fn stored(join: &Join, uid: &str) -> Member {
        let mut m = join.object();
        m.metadata.namespace = Some(join.namespace.clone());
        m.metadata.uid = Some(uid.into());
        m
    }

    fn names(list: &[pb::Member]) -> Vec<&str> {
        list.iter()
            .map(|m| m.id.as_ref().unwrap().name.as_str())
            .collect()
    }

    #[test]
    fn member_records_carry_the_group_label_and_lists_are_sorted() {
        let join = Join::from_request(request("b", "", "g", "ns")).unwrap();
        let b = join.object();
        assert_eq!(b.labels().get(LABEL_GROUP).map(String::as_str), Some("g"));
        let a = Join {
            member: "a".into(),
            ..join.clone()
        };
        let other = Join {
            member: "c".into(),
            group: "h".into(),
            ..join.clone()
        };
        let mut state = State::default();
        let mut rx = state.subscribe("g");
        assert!(
            rx.borrow_and_update().is_none(),
            "nothing before the listing"
        );
        let records: BTreeMap<String, Record> = [(&join, "u-b"), (&other, "u-c"), (&a, "u-a")]
            .into_iter()
            .map(|(j, uid)| (j.member.clone(), Record::of(&stored(j, uid)).unwrap()))
            .collect();
        state.relisted(records);
        assert!(rx.has_changed().unwrap());
        let list = rx.borrow_and_update().clone().unwrap();
        assert_eq!(names(&list.members), ["a", "b"]);
        assert_eq!(list.members[0].port, 5000);
        assert_eq!(list.members[0].id.as_ref().unwrap().namespace, "ns");

        // A change in another group wakes nobody here.
        let mut moved = stored(&other, "u-c");
        moved.spec.port = 6000;
        state.applied(&moved);
        assert!(!rx.has_changed().unwrap());

        // A record being deleted leaves the list at once.
        let mut leaving = stored(&a, "u-a");
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        state.applied(&leaving);
        assert_eq!(
            names(&rx.borrow_and_update().clone().unwrap().members),
            ["b"]
        );
        state.deleted(&leaving);
        assert!(!rx.has_changed().unwrap(), "nothing changed for the group");

        // A record whose label and spec disagree is in no list.
        let mut mislabelled = stored(
            &Join {
                member: "d".into(),
                ..join.clone()
            },
            "u-d",
        );
        mislabelled.spec.group = "h".into();
        state.applied(&mislabelled);
        assert!(!rx.has_changed().unwrap());

        // The last follower gone, the group is forgotten.
        drop(rx);
        state.unsubscribe("g");
        assert!(state.groups.is_empty());
    }

    #[test]
    fn records_are_looked_out_for_by_name_from_before_the_create() {
        let join = Join::from_request(request("b", "", "g", "ns")).unwrap();
        let mut state = State::default();
        state.relisted(BTreeMap::new());
        state.look_out("b");
        state.look_out("b"); // a reconnect racing its old stream
        // Created and deleted before the stream looked: still seen.
        state.applied(&stored(&join, "u-1"));
        state.deleted(&stored(&join, "u-1"));
        assert!(state.saw("b", "u-1"));
        assert!(!state.saw("b", "u-2"));
        assert!(!state.saw("a", "u-1"));
        state.stop_looking_out("b");
        assert!(state.saw("b", "u-1"), "the other stream still looks");
        state.stop_looking_out("b");
        assert!(state.lookouts.is_empty());
        state.applied(&stored(&join, "u-3"));
        assert!(state.lookouts.is_empty(), "nobody looks: nothing kept");
    }

    #[test]
    fn lists_are_sent_once_each() {
        let member = |name: &str| {
            Join::from_request(request(name, "", "g", ""))
                .unwrap()
                .member()
        };
        let before = Arc::new(GroupList {
            members: vec![member("a")],
        });
        let mut sent = Sent::Nothing;
        // Not seen yet: the joiner is put in, once.
        assert_eq!(
            names(
                &sent
                    .next(Arc::clone(&before), false, || member("b"))
                    .unwrap()
            ),
            ["a", "b"]
        );
        assert_eq!(sent.next(Arc::clone(&before), false, || member("b")), None);
        // The watch caught up with the same list: nothing new to send.
        let after = Arc::new(GroupList {
            members: vec![member("a"), member("b")],
        });
        assert_eq!(sent.next(Arc::clone(&after), true, || member("b")), None);
        assert_eq!(sent.next(Arc::clone(&after), true, || member("b")), None);
        // A change is sent; and once seen, a list without the joiner too
        // (its record is gone).
        let gone = Arc::new(GroupList {
            members: vec![member("a")],
        });
        assert_eq!(
            names(&sent.next(gone, true, || member("b")).unwrap()),
            ["a"]
        );
    }

    #[test]
    fn the_joiner_is_shown_until_the_watch_sees_its_record() {
        let list = GroupList {
            members: vec![
                Join::from_request(request("a", "", "g", ""))
                    .unwrap()
                    .member(),
                Join::from_request(request("c", "", "g", ""))
                    .unwrap()
                    .member(),
            ],
        };
        let mut b = Join::from_request(request("b", "", "g", ""))
            .unwrap()
            .member();
        assert_eq!(names(&list.with(b.clone())), ["a", "b", "c"]);
        // An older record of the same id is replaced by the joiner's.
        b.id.as_mut().unwrap().name = "c".into();
        b.port = 7;
        let replaced = list.with(b);
        assert_eq!(names(&replaced), ["a", "c"]);
        assert_eq!(replaced[1].port, 7);
    }
}
