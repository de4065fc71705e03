//! Joining: a validated JoinGroup request, and the Member record made of it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use tokio::sync::oneshot;

use super::super::error::{GrpcError, check_label_value, check_name, check_namespace};
use super::instance::lease_name;
use super::leave::Leave;
use super::stream::{Following, Recorded};
use super::sweep::LeaseView;
use super::{LABEL_GROUP, LABEL_INSTANCE, LABEL_INSTANCE_NAMESPACE, Shared, pb};
use crate::api::{Member, MemberSpec};
use crate::sync::MutexExt;

/// How long a join waits for this process to hold its instance Lease (at
/// start-up, or after it lost it) before it is UNAVAILABLE.
const HELD_WAIT: Duration = Duration::from_secs(10);

/// Longest host a member may give: a DNS name (253) or an IP address. The
/// host is stored in the Member record; without a bound one request could
/// put megabytes into etcd.
const MAX_HOST: usize = 253;

impl Shared {
    /// Record the member, then hand the caller what its stream follows
    /// (dropping that, however the stream ends, has the record deleted).
    pub(super) async fn join(
        self: Arc<Self>,
        join: Join,
        mut joined: oneshot::Sender<Result<Following, GrpcError>>,
    ) {
        // No record before the instance Lease is written: a record whose
        // Lease is missing counts as left behind.
        let held = tokio::select! {
            held = self.wait_held() => held,
            () = joined.closed() => return,
        };
        let epoch = match held {
            Ok(epoch) => epoch,
            Err(e) => {
                let _ = joined.send(Err(e));
                return;
            }
        };
        // First, so a namespace's new watch lists while the record is made.
        let group = self
            .watches
            .subscribe(&join.namespace, &join.group, Some(&join.member));
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
            self.record(&api, &join).await
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
        let record = Recorded {
            join,
            uid,
            epoch,
            _leave: leave,
        };
        let following = Following::member(group, record, &self);
        // Refused if the caller left meanwhile: `following` comes back and
        // is dropped here, which has the record deleted.
        let _ = joined.send(Ok(following));
    }
}

/// What a validated JoinGroup request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Joining {
    /// To be a member of the group, recorded while its stream lasts.
    Member(Join),
    /// No `member`: to follow the group's list without being in it, as the
    /// Atomix controller let clients do (go-client v0.4.1 sends no member
    /// unless given a member id). Nothing is recorded.
    Observer(GroupRef),
}

impl Joining {
    pub(super) fn from_request(req: pb::JoinGroupRequest) -> Result<Joining, GrpcError> {
        if req.member.is_some() {
            return Join::from_request(req).map(Joining::Member);
        }
        let group = req.group_id.unwrap_or_default();
        check_label_value("group_id.name", &group.name)?;
        let namespace = if group.namespace.is_empty() {
            "default".to_string()
        } else {
            group.namespace
        };
        check_namespace("group_id.namespace", &namespace)?;
        Ok(Joining::Observer(GroupRef {
            namespace,
            name: group.name,
        }))
    }
}

/// A group: its namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GroupRef {
    pub(super) namespace: String,
    pub(super) name: String,
}

/// A validated JoinGroup request of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Join {
    pub(super) namespace: String,
    pub(super) group: String,
    pub(super) member: String,
    pub(super) host: String,
    pub(super) port: i32,
}

impl Join {
    pub(super) fn from_request(req: pb::JoinGroupRequest) -> Result<Join, GrpcError> {
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

    pub(super) fn object(&self) -> Member {
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

    /// The group joined.
    pub(super) fn group(&self) -> GroupRef {
        GroupRef {
            namespace: self.namespace.clone(),
            name: self.group.clone(),
        }
    }

    /// The joiner as it appears in member lists.
    pub(super) fn member(&self) -> pb::Member {
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

impl Shared {
    /// The epoch of this process's instance Lease, once it holds it.
    async fn wait_held(&self) -> Result<u64, GrpcError> {
        let mut held = self.held.clone();
        match tokio::time::timeout(HELD_WAIT, held.wait_for(|h| h.held)).await {
            Ok(Ok(h)) => Ok(h.epoch),
            _ => Err(GrpcError::Unavailable(format!(
                "this atoll replica cannot write its instance Lease {}/{} (see its log), \
                 so it records no member; join again",
                self.instance.namespace,
                self.instance.lease()
            ))),
        }
    }

    /// Create the Member record, labelled with this instance, and return its
    /// uid. A record of the same id held by a live stream is ALREADY_EXISTS,
    /// left as it is, as is one in another group; one whose stream is gone
    /// (ended here, or on a replica that is gone) is replaced.
    async fn record(&self, api: &Api<Member>, join: &Join) -> Result<String, GrpcError> {
        let doing = || format!("recording Member {}/{}", join.namespace, join.member);
        let mut object = join.object();
        object.labels_mut().extend([
            (LABEL_INSTANCE.to_string(), self.instance.id.clone()),
            (
                LABEL_INSTANCE_NAMESPACE.to_string(),
                self.instance.namespace.clone(),
            ),
        ]);
        for _ in 0..3 {
            match api.create(&PostParams::default(), &object).await {
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
            if let Some(holder) = self.holder(&existing).await? {
                return Err(GrpcError::AlreadyExists(format!(
                    "member {} of group {:?} in namespace {} is held by a live JoinGroup stream ({holder}); \
                     the existing member must leave first (its record is deleted when its stream ends)",
                    join.member, join.group, join.namespace
                )));
            }
            tracing::info!(namespace = %join.namespace, member = %join.member,
                "taking over the Member record of a stream that is gone");
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

    /// Who holds the record `existing` by a live stream, if anyone: a stream
    /// of this process, or another instance whose Lease is there and has not
    /// expired (as far as this process has seen it).
    async fn holder(&self, existing: &Member) -> Result<Option<String>, GrpcError> {
        let labels = existing.labels();
        let own = &self.instance;
        let instance = match (
            labels.get(LABEL_INSTANCE),
            labels.get(LABEL_INSTANCE_NAMESPACE),
        ) {
            (Some(id), Some(ns)) if *ns == own.namespace => id,
            _ => {
                return Ok(Some(format!(
                    "its record names no atoll instance with a Lease in {}; if no stream holds it, \
                     delete it: kubectl delete members.atoll.dev {} -n {}",
                    own.namespace,
                    existing.name_any(),
                    existing.namespace().unwrap_or_default()
                )));
            }
        };
        if *instance == own.id {
            let uid = existing.uid().unwrap_or_default();
            let held = self.holding.locked().contains(&uid);
            return Ok(held.then(|| "on this atoll replica".to_string()));
        }
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &own.namespace);
        let name = lease_name(instance);
        let lease = leases
            .get_opt(&name)
            .await
            .map_err(GrpcError::kube(format!(
                "reading Lease {}/{name}",
                own.namespace
            )))?;
        let Some(view) = lease.as_ref().and_then(LeaseView::of) else {
            return Ok(None); // its instance is gone
        };
        let now = tokio::time::Instant::now();
        let mut judge = self.judge.locked();
        judge.saw(view, now);
        Ok((!judge.stale(&own.id, instance, now)).then(|| format!("on atoll instance {instance}")))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::request;
    use super::*;

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
        assert!(matches!(
            Joining::from_request(request("m", "", "g", "apps")),
            Ok(Joining::Member(j)) if j.member == "m"
        ));
        let mut bad_port = request("m", "", "g", "");
        bad_port.member.as_mut().unwrap().port = 70000;
        assert!(Join::from_request(bad_port).is_err());
    }

    #[test]
    fn a_request_without_a_member_observes_its_group() {
        let mut observe = request("m", "", "Workers_1", "apps");
        observe.member = None;
        assert_eq!(
            Joining::from_request(observe.clone()).unwrap(),
            Joining::Observer(GroupRef {
                namespace: "apps".into(),
                name: "Workers_1".into()
            })
        );
        observe.group_id.as_mut().unwrap().namespace.clear();
        assert!(matches!(
            Joining::from_request(observe.clone()),
            Ok(Joining::Observer(g)) if g.namespace == "default"
        ));
        for (group, ns) in [("", "apps"), ("g/x", "apps"), ("g", "Apps")] {
            observe.group_id = Some(pb::GroupId {
                name: group.into(),
                namespace: ns.into(),
            });
            let e = Joining::from_request(observe.clone()).unwrap_err();
            assert_eq!(
                e.code(),
                tonic::Code::InvalidArgument,
                "{group:?} in {ns:?}"
            );
        }
    }

    #[test]
    fn long_hosts_are_refused() {
        let mut long = request("m", "", "g", "");
        long.member.as_mut().unwrap().host = "h".repeat(MAX_HOST + 1);
        let e = Join::from_request(long).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("member.host"), "{e}");
    }
}
