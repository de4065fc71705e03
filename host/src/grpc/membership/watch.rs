//! The shared watches on Member objects: one per namespace with open
//! streams, started by the first stream there and stopped with the last.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::LABEL_GROUP;
use super::state::{Latest, Record, State};
use super::stream::Counted;
use crate::api::Member;
use crate::metrics::Metrics;
use crate::sync::MutexExt;

/// The shared watches on Member objects: one per namespace with open
/// streams.
pub(super) struct Watches {
    client: Client,
    metrics: Metrics,
    open: Mutex<HashMap<String, Weak<NamespaceWatch>>>,
}

impl Watches {
    pub(super) fn new(client: Client, metrics: Metrics) -> Watches {
        Watches {
            client,
            metrics,
            open: Mutex::default(),
        }
    }

    /// Follow `group` in `namespace`, starting the namespace's watch if no
    /// stream there has yet, and look out for the records of `member` (not
    /// created yet; none for an observer) from now on.
    pub(super) fn subscribe(
        &self,
        namespace: &str,
        group: &str,
        member: Option<&str>,
    ) -> Subscription {
        let watch = {
            let mut open = self.open.locked();
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
            let mut state = watch.state.locked();
            if let Some(member) = member {
                state.look_out(member);
            }
            state.subscribe(group)
        };
        Subscription {
            watch,
            group: group.to_string(),
            member: member.map(str::to_string),
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

/// A stream's view of its group; unsubscribes when dropped.
pub(super) struct Subscription {
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
    pub(super) fn seen(&mut self, uid: &str) -> bool {
        let Some(member) = &self.member else {
            return true;
        };
        let mut state = self.watch.state.locked();
        if !state.saw(member, uid) {
            return false;
        }
        state.stop_looking_out(member);
        drop(state);
        self.member = None;
        true
    }

    /// The latest list (`None` until the namespace is listed), marked seen.
    pub(super) fn latest(&mut self) -> Latest {
        self.rx.as_mut()?.borrow_and_update().clone()
    }

    /// Resolves when a list newer than the last [`latest`](Self::latest)
    /// is there.
    pub(super) async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        match &mut self.rx {
            Some(rx) => rx.changed().await,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take()); // no longer counted among the receivers
        let mut state = self.watch.state.locked();
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
                state
                    .locked()
                    .note(&m.name_any(), m.metadata.uid.as_deref());
                if let Some(record) = Record::of(&m) {
                    listing.get_or_insert_default().insert(m.name_any(), record);
                }
            }
            Ok(watcher::Event::InitDone) => {
                state.locked().relisted(listing.take().unwrap_or_default());
            }
            Ok(watcher::Event::Apply(m)) => state.locked().applied(&m),
            Ok(watcher::Event::Delete(m)) => state.locked().deleted(&m),
            Err(e) => tracing::warn!(%namespace, error = %e, "watching Members; retrying"),
        }
    }
}
