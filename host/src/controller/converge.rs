//! Converge: get a Database's children to the rendered state. Server-side
//! apply what is missing or drifted, then prune what is no longer rendered.
//!
//! Guarantees:
//! - Only the children [`observe`](super::observe) found (labelled
//!   `atoll.dev/database=<db>`, controller owner reference with this
//!   Database's uid) are ever pruned.
//! - An object is applied only when it is missing or differs from what was
//!   rendered (every rendered field present with the rendered value), so a
//!   reconcile of an unchanged Database sends no write request.
//! - Applies use field manager `atoll` and force ownership of the fields atoll
//!   renders: hand edits to those fields are reverted.
//! - Prunes happen only after every apply succeeded.
//! - Never adopt: a rendered object that is not among this Database's
//!   children but whose name exists (created by hand, or by another
//!   Database) is not written, and nothing else is either: the reconcile
//!   stops with [`ConvergeError::NameConflict`].
//!
//! Caveat: the API server normalises some values (e.g. CPU `0.5` becomes
//! `500m`); a plugin rendering a non-canonical form is re-applied on every
//! reconcile (harmless, but not free).

use std::collections::BTreeMap;

use futures::StreamExt;
use kube::Client;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use super::Context;
use super::observe::{Key, Kind, Live, belongs_to, key};
use super::plan::Plan;
use crate::api::{FIELD_MANAGER, LABEL_DATABASE, LABEL_RETAINED_FROM};

/// Server-side applies in flight at once within one reconcile.
pub const APPLIES_IN_FLIGHT: usize = 8;

/// A child the API server would not take; nothing was pruned.
#[derive(Debug, thiserror::Error)]
#[error("applying {kind} {name} failed: {source}")]
pub struct ApplyError {
    pub kind: String,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

/// Apply what drifted in `plan` (concurrently: a reconcile's latency is then
/// one round trip, not one per child), then prune. `live` is what
/// [`observe`](super::observe) found.
///
/// # Errors
/// [`ConvergeError::NameConflict`] when a rendered name is taken (nothing is
/// written then), [`ConvergeError::Apply`] when an apply is refused (nothing
/// is pruned then), [`ConvergeError::Prune`] when a delete fails.
pub async fn converge(
    ctx: &Context,
    namespace: &str,
    uid: &str,
    plan: &Plan<'_>,
    live: &BTreeMap<Key, Live>,
) -> Result<(), ConvergeError> {
    let drifted: Vec<Value> = plan
        .wanted
        .iter()
        .filter(|object| {
            live.get(&key(object))
                .is_none_or(|l| !contains(&l.object, object))
        })
        .cloned()
        .collect();
    let missing = drifted.iter().filter(|o| !live.contains_key(&key(o)));
    let taken = taken_names(&ctx.client, namespace, uid, missing).await?;
    if !taken.is_empty() {
        return Err(ConvergeError::NameConflict(taken.join("; ")));
    }
    let mut applies = futures::stream::iter(drifted)
        .map(|object| {
            let (client, namespace) = (ctx.client.clone(), namespace.to_string());
            async move {
                let result = apply(&client, &namespace, &object).await;
                (key(&object), result)
            }
        })
        .buffer_unordered(APPLIES_IN_FLIGHT);
    while let Some(((kind, name), result)) = applies.next().await {
        match result {
            Ok(stored) => {
                ctx.remember_write(&kind, stored);
                ctx.metrics.applied(&kind);
            }
            Err(source) => return Err(ConvergeError::Apply(ApplyError { kind, name, source })),
        }
    }
    for l in &plan.prune {
        delete(&ctx.client, namespace, l)
            .await
            .map_err(ConvergeError::Prune)?;
        let metadata = &l.object["metadata"];
        let name = metadata["name"].as_str().unwrap_or_default();
        if let Some(database) = metadata["labels"][LABEL_DATABASE].as_str() {
            ctx.written
                .forget(&l.kind.resource.kind, namespace, database, name);
        }
        ctx.metrics.pruned(&l.kind.resource.kind);
    }
    Ok(())
}

/// Of the rendered objects this Database does not have yet, those whose name
/// exists in the cluster under another controller (or none), each described
/// with its owner. One GET per object: only creations pay it.
pub(crate) async fn taken_names(
    client: &Client,
    namespace: &str,
    uid: &str,
    missing: impl Iterator<Item = &Value>,
) -> Result<Vec<String>, ConvergeError> {
    let mut taken = Vec::new();
    for object in missing {
        let (kind, name) = key(object);
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let api = Kind::new(api_version, &kind).api(client, namespace);
        let Some(existing) = api.get_opt(&name).await.map_err(ConvergeError::Read)? else {
            continue;
        };
        if belongs_to(&existing.metadata, uid) {
            continue;
        }
        let controller = existing
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        let retained = existing
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_RETAINED_FROM));
        let owner = match (controller, retained) {
            (Some(o), _) => format!("controlled by {} {}", o.kind, o.name),
            (None, Some(from)) => format!("kept from a deleted Database, uid {from}"),
            (None, None) => "created outside atoll".to_string(),
        };
        taken.push(format!(
            "{kind} {name} already exists ({owner}) and atoll never takes over an object; delete or rename it, or give the Database another name"
        ));
    }
    Ok(taken)
}

/// Why [`converge`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    /// Rendered names are taken by objects that are not this Database's:
    /// nothing was written.
    #[error("{0}")]
    NameConflict(String),
    /// Reading whether a name is taken failed: retried.
    #[error("checking rendered names: {0}")]
    Read(kube::Error),
    /// The API server refused an apply: the Database turns Degraded.
    #[error(transparent)]
    Apply(ApplyError),
    /// A prune failed: retried.
    #[error("pruning failed: {0}")]
    Prune(kube::Error),
}

/// Whether `live` holds every field of `desired` with the same value.
/// Arrays must match element-wise (same length); extra fields in `live`
/// (defaults, status, metadata the server adds) are ignored.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| contains(lv, dv)) || dv.is_null()),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv))
        }
        (Value::Number(l), Value::Number(d)) => l.as_f64() == d.as_f64(),
        (l, d) => l == d,
    }
}

/// Server-side apply `object` (field manager `atoll`, forced); returns the
/// object as the API server stored it.
async fn apply(
    client: &Client,
    namespace: &str,
    object: &Value,
) -> Result<DynamicObject, kube::Error> {
    let kind = Kind::new(
        object["apiVersion"].as_str().unwrap_or_default(),
        object["kind"].as_str().unwrap_or_default(),
    );
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    kind.api(client, namespace)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
}

/// Delete a child (background propagation: its own dependents, such as a
/// StatefulSet's pods, go with it).
async fn delete(client: &Client, namespace: &str, live: &Live) -> Result<(), kube::Error> {
    let name = live.object["metadata"]["name"].as_str().unwrap_or_default();
    match live
        .kind
        .api(client, namespace)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn live_with_server_defaults_contains_the_rendered_object() {
        let desired = json!({"spec": {"replicas": 3, "template": {"ports": [{"port": 5678}]}}});
        let live = json!({"spec": {"replicas": 3, "revisionHistoryLimit": 10,
            "template": {"ports": [{"port": 5678, "protocol": "TCP"}]}}, "status": {}});
        assert!(contains(&live, &desired));
    }

    #[test]
    fn changed_missing_or_extra_elements_are_drift() {
        let desired = json!({"spec": {"replicas": 3, "ports": [{"port": 1}]}});
        assert!(!contains(
            &json!({"spec": {"replicas": 1, "ports": [{"port": 1}]}}),
            &desired
        ));
        assert!(!contains(
            &json!({"spec": {"ports": [{"port": 1}]}}),
            &desired
        ));
        assert!(!contains(
            &json!({"spec": {"replicas": 3, "ports": [{"port": 1}, {"port": 2}]}}),
            &desired
        ));
    }
}
