//! Leaving: once a stream ended, its Member record is queued and deleted.

use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DeleteParams, Preconditions};
use tokio::sync::mpsc;

use super::join::Join;
use super::{API_CONCURRENCY, Shared};
use crate::api::Member;
use crate::metrics::Metrics;
use crate::sync::MutexExt;

/// Attempts to delete a record whose delete failed for a reason that may
/// pass (connection lost, 5xx); kube's client already retries 429, 503 and
/// 504 itself, honouring Retry-After.
const LEAVE_ATTEMPTS: u32 = 5;

/// A Member record to delete: the stream that made it ended (or, for the
/// sweep, the instance that made it is gone).
#[derive(Debug)]
pub(super) struct Leaving {
    namespace: String,
    name: String,
    /// Only this record: a newer join under the same id made another one.
    uid: String,
}

impl Leaving {
    /// The record `m` as listed (`None` without a namespace, name or uid).
    pub(super) fn of(m: &kube::core::PartialObjectMeta<Member>) -> Option<Leaving> {
        Some(Leaving {
            namespace: m.metadata.namespace.clone()?,
            name: m.metadata.name.clone()?,
            uid: m.metadata.uid.clone()?,
        })
    }
}

/// Queues the member's record for deletion when dropped, however the stream
/// ended (no runtime is needed for that, so it works during shutdown too).
/// Until then the record counts as held by a live stream
/// ([`Shared::holding`]).
pub(super) struct Leave {
    leaves: mpsc::UnboundedSender<Leaving>,
    holding: std::sync::Weak<std::sync::Mutex<std::collections::HashSet<String>>>,
    leaving: Option<Leaving>,
}

impl Leave {
    /// Noted as held from now on (until dropped).
    pub(super) fn new(shared: &Shared, join: &Join, uid: String) -> Leave {
        shared.holding.locked().insert(uid.clone());
        Leave {
            leaves: shared.leaves.clone(),
            holding: std::sync::Arc::downgrade(&shared.holding),
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
        if let (Some(holding), Some(leaving)) = (self.holding.upgrade(), &self.leaving) {
            holding.locked().remove(&leaving.uid);
        }
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
pub(super) async fn leave_all(
    client: Client,
    metrics: Metrics,
    mut queue: mpsc::UnboundedReceiver<Leaving>,
) {
    let mut deleting = futures::stream::FuturesUnordered::new();
    let mut open = true;
    while open || !deleting.is_empty() {
        tokio::select! {
            leaving = queue.recv(), if open && deleting.len() < API_CONCURRENCY => match leaving {
                Some(leaving) => deleting.push(delete_record(client.clone(), leaving, "member left")),
                None => open = false,
            },
            Some(()) = deleting.next() => {
                metrics.member_records().dec();
            }
        }
    }
}

/// Delete one record, retrying failures that may pass; log `done` once
/// deleted.
pub(super) async fn delete_record(client: Client, leaving: Leaving, done: &'static str) {
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
                tracing::info!(%namespace, member = %name, "{done}");
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
