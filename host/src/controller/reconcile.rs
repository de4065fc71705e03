//! One reconcile of one Database, as the sequence of its steps.

use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::converge::{self, ConvergeError};
use super::status::{self, Outcome};
use super::{Context, Error, RESYNC, RETRY, configs, discovery, observe, plan, readiness};
use crate::api::{Database, PluginRef, Reason};
use crate::render::Desired;

/// Reconcile one Database, recording duration and errors per plugin.
///
/// # Errors
/// A Kubernetes request failed or a plugin call panicked its thread; the
/// controller retries with backoff. Problems the user or plugin author must
/// fix are not errors: they become `Degraded` status and a Warning Event.
pub async fn reconcile(db: Arc<Database>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let plugin = db.spec.storage.plugin.clone();
    let result = steps(&db, &ctx).await;
    ctx.metrics.reconciled(&plugin, started.elapsed());
    if let Err(e) = &result {
        ctx.metrics
            .reconcile_error(&plugin, e.metric_label().as_str());
    }
    result
}

/// observe → render → external configs → discovery → plan → converge →
/// readiness → status.
async fn steps(db: &Arc<Database>, ctx: &Arc<Context>) -> Result<Action, Error> {
    if db.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the children through their owner
        // references; applying now would recreate what it just deleted.
        return Ok(Action::await_change());
    }
    let namespace = db.namespace().unwrap_or_default();
    let name = db.name_any();
    let uid = db.uid().unwrap_or_default();
    let live = observe::children(ctx, &namespace, &name, &uid).await?;

    let mut desired = match render(ctx, db).await? {
        Ok(desired) => desired,
        Err(e) => {
            let after = if e.is_transient() { RETRY } else { RESYNC };
            return problem(ctx, db, e.reason(), e.to_string(), None, after).await;
        }
    };

    configs::stamp_external(ctx, &namespace, &mut desired).await?;

    let group = discovery::objects(db, &desired, &live);
    let plan = plan::plan(db, &ctx.renderer, &desired, group, &live);
    if let Some(refusal) = &plan.refused {
        // A refused plugin change keeps naming the plugin that last
        // converged the Database: the guard compares with it.
        let last = db.status.as_ref().and_then(|s| s.plugin.as_ref());
        let same = last.is_none_or(|p| p.digest == desired.plugin.digest);
        let plugin = same.then(|| desired.plugin.clone());
        let message = refusal.message.clone();
        return problem(ctx, db, refusal.reason, message, plugin, RESYNC).await;
    }

    match converge::converge(ctx, &namespace, &uid, &plan, &live).await {
        Ok(()) => {}
        Err(ConvergeError::NameConflict(message)) => {
            let plugin = Some(desired.plugin.clone());
            return problem(ctx, db, Reason::NameConflict, message, plugin, RESYNC).await;
        }
        Err(ConvergeError::Read(e)) => return Err(e.into()),
        Err(ConvergeError::Apply(e)) => {
            let plugin = Some(desired.plugin.clone());
            status::degrade(db, ctx, Reason::ApplyFailed, e.to_string(), plugin).await?;
            return Err(e.source.into());
        }
        Err(ConvergeError::Prune(e)) => return Err(e.into()),
    }

    let ready = match readiness::readiness(ctx, db, &desired, &live).await? {
        Ok(ready) => ready,
        Err(e) => {
            let plugin = Some(desired.plugin.clone());
            return problem(ctx, db, Reason::PluginError, e.to_string(), plugin, RETRY).await;
        }
    };
    status::write_partition_status(ctx, &namespace, &name, &live, &ready.partitions).await?;
    let overrides = desired.overrides();
    let message = match overrides.is_empty() {
        true => ready.message,
        false => format!("{}; atoll overrode {}", ready.message, overrides.join("; ")),
    };
    let outcome = Outcome::Converged {
        plugin: desired.plugin,
        partitions: ready.partitions,
        message,
        rollouts: ready.rollouts,
    };
    status::write_status(db, ctx, outcome).await?;
    Ok(Action::requeue(RESYNC))
}

/// Render on a blocking thread (plugin calls are CPU-bound), through the
/// memo: an unchanged input calls no plugin.
async fn render(
    ctx: &Arc<Context>,
    db: &Arc<Database>,
) -> Result<Result<Desired, crate::RenderError>, Error> {
    let (ctx, db) = (Arc::clone(ctx), Arc::clone(db));
    Ok(tokio::task::spawn_blocking(move || {
        ctx.renderer
            .render_memoized(&db, &ctx.memos.render, &ctx.metrics)
    })
    .await?)
}

/// A problem the Database's owner or plugin author must fix: count it,
/// report it as `Degraded` (with an Event), and look again after `after`.
async fn problem(
    ctx: &Context,
    db: &Database,
    reason: Reason,
    message: String,
    plugin: Option<PluginRef>,
    after: std::time::Duration,
) -> Result<Action, Error> {
    ctx.metrics
        .reconcile_error(&db.spec.storage.plugin, reason.as_str());
    status::degrade(db, ctx, reason, message, plugin).await?;
    Ok(Action::requeue(after))
}
