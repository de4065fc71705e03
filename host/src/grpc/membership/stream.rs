//! What each JoinGroup response stream does: send its group's list whenever
//! it changed, when the client is ready for it, until the server stops.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tonic::Status;

use super::instance::Held;
use super::join::{GroupRef, Join};
use super::leave::Leave;
use super::state::GroupList;
use super::watch::Subscription;
use super::{MemberStream, Shared, pb};

/// One JoinGroup stream: the group's list whenever it changed, made when
/// the client is ready for the next message (tonic asks for it once HTTP/2
/// flow control lets it send), so a slow client holds no backlog, not even
/// one list, and gets the latest when it catches up. A member's stream ends
/// only at shutdown or when this process loses its instance Lease (then its
/// record may be swept: the client must join again); dropped (the client
/// went away), it has the record deleted. An observer's stream has no
/// record, so only shutdown ends it.
pub(super) struct Following {
    group: Subscription,
    id: GroupRef,
    /// The member's record; `None` for an observer.
    record: Option<Recorded>,
    sent: Sent,
    stopping: watch::Receiver<bool>,
    held: watch::Receiver<Held>,
    ended: bool,
    _open: Counted,
}

/// A member's record, made of `join` as `uid` while the instance Lease was
/// held in `epoch`; `_leave` has it deleted when dropped.
pub(super) struct Recorded {
    pub(super) join: Join,
    pub(super) uid: String,
    pub(super) epoch: u64,
    /// Held for its `Drop`, which has the record deleted.
    pub(super) _leave: Leave,
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
    /// The stream of the member `record`, following `group`; counted among
    /// the open streams while it lives; it ends when the instance Lease is
    /// no longer held in the record's epoch.
    pub(super) fn member(group: Subscription, record: Recorded, shared: &Shared) -> Following {
        let id = record.join.group();
        Following::new(group, id, Some(record), shared)
    }

    /// The stream of an observer of `group` (named `id`), recorded nowhere.
    pub(super) fn observer(group: Subscription, id: GroupRef, shared: &Shared) -> Following {
        Following::new(group, id, None, shared)
    }

    fn new(
        group: Subscription,
        id: GroupRef,
        record: Option<Recorded>,
        shared: &Shared,
    ) -> Following {
        Following {
            group,
            id,
            record,
            sent: Sent::Nothing,
            stopping: shared.stopping.clone(),
            held: shared.held.clone(),
            ended: false,
            _open: Counted::new(shared.metrics.join_streams()),
        }
    }

    pub(super) fn into_stream(self) -> MemberStream {
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
        let mut message = "atoll is shutting down; join again";
        loop {
            if let Some(members) = self.fresh() {
                return Some(Ok(pb::JoinGroupResponse {
                    group_id: Some(pb::GroupId {
                        name: self.id.name.clone(),
                        namespace: self.id.namespace.clone(),
                    }),
                    members,
                }));
            }
            tokio::select! {
                changed = self.group.changed() => if changed.is_err() {
                    break; // the watch is gone (cannot happen while subscribed)
                },
                () = stopped(&mut self.stopping) => break,
                () = lost(&mut self.held, self.record.as_ref().map(|r| r.epoch)) => {
                    message = "this atoll replica lost its instance Lease, so its member records \
                               may be deleted; join again";
                    break;
                }
            }
        }
        self.ended = true;
        Some(Err(Status::unavailable(message)))
    }

    /// The list to send now, if it differs from the last one sent.
    fn fresh(&mut self) -> Option<Vec<pb::Member>> {
        let seen = match &self.record {
            Some(record) => self.group.seen(&record.uid),
            None => true, // an observer has no record to wait for
        };
        let list = self.group.latest()?;
        let record = &self.record;
        self.sent.next(list, seen, || {
            record
                .as_ref()
                .expect("only a member's record can be unseen")
                .join
                .member()
        })
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

/// Resolves once the instance Lease is no longer held in `epoch` (or its
/// keeper is gone); never for an observer (no epoch): it has no record the
/// Lease could take along.
async fn lost(held: &mut watch::Receiver<Held>, epoch: Option<u64>) {
    let Some(epoch) = epoch else {
        return std::future::pending().await;
    };
    let _ = held.wait_for(|h| !h.held || h.epoch != epoch).await;
}

/// A gauge counting something alive: up when made, down when dropped.
pub(super) struct Counted(Gauge);

impl Counted {
    pub(super) fn new(gauge: &Gauge) -> Counted {
        gauge.inc();
        Counted(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{names, request};
    use super::*;

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
}
