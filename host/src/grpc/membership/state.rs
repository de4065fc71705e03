//! What a namespace's watch knows: its Member records, the sorted list of
//! each group a stream follows (published once per change), and the records
//! joining members look out for.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kube::ResourceExt;
use tokio::sync::watch;

use super::{LABEL_GROUP, pb};
use crate::api::Member;

/// A group's members as the watch saw them last.
#[derive(Debug, Default, PartialEq)]
pub(super) struct GroupList {
    /// Sorted by id (the watch's order is not stable).
    pub(super) members: Vec<pb::Member>,
}

impl GroupList {
    /// The members, with `member` in place of the record of its id.
    pub(super) fn with(&self, member: pb::Member) -> Vec<pb::Member> {
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
pub(super) struct Record {
    group: String,
    member: pb::Member,
}

impl Record {
    /// `None` for a record no list shows: being deleted, or its label and
    /// spec naming different groups.
    pub(super) fn of(m: &Member) -> Option<Record> {
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

pub(super) type Latest = Option<Arc<GroupList>>;

/// What a namespace's watch knows, and the lists streams follow.
#[derive(Default)]
pub(super) struct State {
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
    pub(super) fn subscribe(&mut self, group: &str) -> watch::Receiver<Latest> {
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
    pub(super) fn look_out(&mut self, member: &str) {
        self.lookouts.entry(member.to_string()).or_default().streams += 1;
    }

    /// Whether a record `member` with `uid` was seen since [`look_out`](Self::look_out).
    pub(super) fn saw(&self, member: &str, uid: &str) -> bool {
        self.lookouts
            .get(member)
            .is_some_and(|l| l.uids.iter().any(|u| u == uid))
    }

    pub(super) fn stop_looking_out(&mut self, member: &str) {
        if let Some(lookout) = self.lookouts.get_mut(member) {
            lookout.streams -= 1;
            if lookout.streams == 0 {
                self.lookouts.remove(member);
            }
        }
    }

    /// A record was seen: note it for whoever looks out for its name.
    pub(super) fn note(&mut self, name: &str, uid: Option<&str>) {
        if let (Some(lookout), Some(uid)) = (self.lookouts.get_mut(name), uid) {
            lookout.uids.push(uid.to_string());
        }
    }

    /// A stream of `group` ended: forget the group if it was the last one.
    pub(super) fn unsubscribe(&mut self, group: &str) {
        if self
            .groups
            .get(group)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            self.groups.remove(group);
        }
    }

    /// The watch listed every record (at the start, or after it lost track).
    pub(super) fn relisted(&mut self, members: BTreeMap<String, Record>) {
        self.members = Some(members);
        let groups: Vec<String> = self.groups.keys().cloned().collect();
        for group in groups {
            self.publish(&group);
        }
    }

    pub(super) fn applied(&mut self, m: &Member) {
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

    pub(super) fn deleted(&mut self, m: &Member) {
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{names, request};
    use super::super::join::Join;
    use super::*;

    /// A Member record as the API server returns it.
    fn stored(join: &Join, uid: &str) -> Member {
        let mut m = join.object();
        m.metadata.namespace = Some(join.namespace.clone());
        m.metadata.uid = Some(uid.into());
        m
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
