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

use std::pin::Pin;

use futures::{Stream, StreamExt};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::error::{GrpcError, check_label_value, check_name, check_namespace};
use super::proto::atomix::membership as pb;
use crate::api::{Member, MemberSpec};

/// Label holding a Member's group, so a group's members can be watched.
pub const LABEL_GROUP: &str = "atoll.dev/group";

/// Serves MembershipService from Member objects.
pub struct MembershipApi {
    client: Client,
    /// Turns true when the server shuts down: open streams end then.
    stopping: watch::Receiver<bool>,
}

impl MembershipApi {
    pub fn new(client: Client, stopping: watch::Receiver<bool>) -> Self {
        MembershipApi { client, stopping }
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
        let api: Api<Member> = Api::namespaced(self.client.clone(), &join.namespace);
        let uid = record(&api, &join).await?;
        let guard = Leave {
            api: api.clone(),
            name: join.member.clone(),
            uid,
        };
        tracing::info!(namespace = %join.namespace, group = %join.group, member = %join.member, "member joined");
        // Small: a slow client only delays lists, each of which is complete.
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(follow_group(api, join, guard, tx, self.stopping.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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

/// Deletes the member's record when dropped, however the stream ended. The
/// uid precondition keeps a stale stream from deleting the record of a
/// newer join under the same id.
struct Leave {
    api: Api<Member>,
    name: String,
    uid: String,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let (api, name, uid) = (self.api.clone(), self.name.clone(), self.uid.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(member = %name, "no runtime to delete the Member record; it stays");
            return;
        };
        runtime.spawn(async move {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => tracing::info!(member = %name, "member left"),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => {
                    tracing::warn!(member = %name, error = %e, "could not delete the Member record")
                }
            }
        });
    }
}

/// Watch the group and send its member list whenever it changes, until the
/// client goes away or the server stops; `_leave` deletes the record then.
async fn follow_group(
    api: Api<Member>,
    join: Join,
    _leave: Leave,
    tx: mpsc::Sender<Result<pb::JoinGroupResponse, Status>>,
    mut stopping: watch::Receiver<bool>,
) {
    let config = watcher::Config::default().labels(&format!("{LABEL_GROUP}={}", join.group));
    let mut events = watcher(api, config).boxed();
    let mut members: std::collections::BTreeMap<String, Member> = Default::default();
    let mut listing: Option<std::collections::BTreeMap<String, Member>> = None;
    let mut sent: Option<Vec<pb::Member>> = None;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = tx.closed() => return,
            () = stopped(&mut stopping) => {
                let _ = tx.send(Err(Status::unavailable("atoll is shutting down; join again"))).await;
                return;
            }
        };
        match event {
            Some(Ok(watcher::Event::Init)) => listing = Some(Default::default()),
            Some(Ok(watcher::Event::InitApply(m))) => {
                listing
                    .get_or_insert_with(Default::default)
                    .insert(m.name_any(), m);
            }
            Some(Ok(watcher::Event::InitDone)) => members = listing.take().unwrap_or_default(),
            Some(Ok(watcher::Event::Apply(m))) => {
                members.insert(m.name_any(), m);
            }
            Some(Ok(watcher::Event::Delete(m))) => {
                members.remove(&m.name_any());
            }
            Some(Err(e)) => {
                // The watcher retries by itself; say so and keep going.
                tracing::warn!(group = %join.group, error = %e, "watching group members");
                continue;
            }
            None => return,
        }
        if listing.is_some() {
            continue; // wait for the complete list
        }
        let list = member_list(&join, members.values());
        if sent.as_ref() != Some(&list) {
            let response = pb::JoinGroupResponse {
                group_id: Some(pb::GroupId {
                    name: join.group.clone(),
                    namespace: join.namespace.clone(),
                }),
                members: list.clone(),
            };
            if tx.send(Ok(response)).await.is_err() {
                return;
            }
            sent = Some(list);
        }
    }
}

/// Resolves once the server stops (or its stop channel is gone). Returns
/// `()`, not the guard `wait_for` yields, which must not live across awaits.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// The group's members, sorted by id (the watch's order is not stable).
fn member_list<'a>(join: &Join, members: impl Iterator<Item = &'a Member>) -> Vec<pb::Member> {
    let mut list: Vec<pb::Member> = members
        .filter(|m| m.spec.group == join.group && m.metadata.deletion_timestamp.is_none())
        .map(|m| pb::Member {
            id: Some(pb::MemberId {
                name: m.name_any(),
                namespace: join.namespace.clone(),
            }),
            host: m.spec.host.clone(),
            port: m.spec.port,
        })
        .collect();
    list.sort_by(|a, b| {
        a.id.as_ref()
            .map(|i| &i.name)
            .cmp(&b.id.as_ref().map(|i| &i.name))
    });
    list
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
    fn member_records_carry_the_group_label_and_lists_are_sorted() {
        let join = Join::from_request(request("b", "", "g", "ns")).unwrap();
        let b = join.object();
        assert_eq!(b.labels().get(LABEL_GROUP).map(String::as_str), Some("g"));
        let a = Join {
            member: "a".into(),
            ..join.clone()
        }
        .object();
        let other = Join {
            member: "c".into(),
            group: "h".into(),
            ..join.clone()
        }
        .object();
        let list = member_list(&join, [&b, &other, &a].into_iter());
        let names: Vec<&str> = list
            .iter()
            .map(|m| m.id.as_ref().unwrap().name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(list[0].port, 5000);
    }
}
