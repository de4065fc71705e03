//! `atoll diff`: what `atoll run` would do to a live cluster if Database
//! manifests were applied, touching nothing.
//!
//! For each Database it takes the same steps as a reconcile
//! ([`crate::controller`]) up to the writes: observe the live children
//! (the controller's own selection: labelled for the Database, owned by its
//! uid), render with the plugins this command loads (the built-ins and
//! `--plugin-dir`) through the output policy, stamp config checksums, add
//! the host's discovery objects, and plan with the controller's
//! [`plan`](crate::controller::plan::plan), whose data-loss guard decides
//! refusals. Then, instead of applying, each object the controller would
//! write (missing, or drifted from what is rendered) is applied with
//! `dryRun=All`, server-side, with atoll's field manager and forced
//! ownership, exactly as [`converge`] would;
//! the API server's answer is compared with the live object.
//!
//! Guarantees: no request made here writes anything (every apply is a dry
//! run; the rest are GETs and LISTs). Exit codes: [`EXIT_SAME`],
//! [`EXIT_CHANGES`], [`EXIT_REFUSED`], [`EXIT_ERROR`].
//!
//! Caveats: the Database is compared as if the manifest's `spec` replaced
//! the live one and its labels and annotations were merged over the live
//! ones (what `kubectl apply` of the whole file does to fields it set);
//! plugins loaded by `atoll run` from ConfigMaps are not seen unless given
//! with `--plugin-dir`; status (Partition and Database status, which atoll
//! writes after converging) is left out.

mod unified;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Args;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::PluginArgs;
use super::offline::{OFFLINE_UID, read_databases};
use crate::api::{Database, FIELD_MANAGER};
use crate::controller::observe::{self, Key, Kind, key};
use crate::controller::{Context, configs, converge, discovery, plan};
use crate::render::Renderer;

/// Nothing would change.
pub const EXIT_SAME: i32 = 0;
/// Objects would be created, changed or pruned.
pub const EXIT_CHANGES: i32 = 1;
/// The diff could not be made: a manifest, plugin, render or API error.
pub const EXIT_ERROR: i32 = 2;
/// atoll would refuse the change (the data-loss guard, a name taken by an
/// object that is not the Database's, or an apply the API server rejects).
pub const EXIT_REFUSED: i32 = 3;

/// `atoll diff`.
#[derive(Args)]
pub struct DiffArgs {
    /// Database manifest (YAML or JSON, several documents allowed); `-` reads
    /// standard input. Repeat for several files.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    files: Vec<String>,
    /// Cluster DNS domain used in host names and partition endpoints (as
    /// `atoll run` is given it).
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// What plugins may render (give it as `atoll run` is given it).
    #[command(flatten)]
    policy: super::PolicyArgs,
    /// Unchanged lines shown around each change.
    #[arg(long, value_name = "LINES", default_value_t = 3)]
    context: usize,
    #[command(flatten)]
    plugins: PluginArgs,
}

/// What would happen to one object.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    /// Created: the diff from nothing.
    Create(String),
    /// Changed: the diff from the live object.
    Update(String),
    /// Deleted as no longer rendered.
    Prune,
    /// The API server would reject the apply: its message.
    Rejected(String),
}

/// The worst outcome over every Database, as an exit code.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    #[default]
    Same,
    Changes,
    Refused,
}

/// `atoll diff`: print what would change and return the exit code.
///
/// # Errors
/// A manifest cannot be read, a plugin does not load, a render fails, or
/// the API server cannot be reached; the caller exits with [`EXIT_ERROR`].
pub fn diff(args: DiffArgs) -> Result<i32> {
    let databases = read_databases(&args.files)?;
    let renderer = Arc::new(Renderer {
        registry: args.plugins.config().registry()?,
        policy: args.policy.policy(),
        cluster_domain: args.cluster_domain,
    });
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = Client::try_default()
            .await
            .context("connecting to the cluster in KUBECONFIG")?;
        let ctx = Context::new(client, renderer);
        let mut verdict = Verdict::Same;
        for (origin, db) in databases {
            let id = format!("{}/{}", db.namespace().unwrap_or_default(), db.name_any());
            let (text, v) = database(&ctx, db, args.context)
                .await
                .with_context(|| format!("{origin}: Database {id}"))?;
            super::offline::emit(&text)?;
            verdict = verdict.max(v);
        }
        Ok(match verdict {
            Verdict::Same => EXIT_SAME,
            Verdict::Changes => EXIT_CHANGES,
            Verdict::Refused => EXIT_REFUSED,
        })
    })
}

/// The report for one Database from a manifest, and its verdict.
async fn database(ctx: &Context, file: Database, context: usize) -> Result<(String, Verdict)> {
    let namespace = file.namespace().unwrap_or_else(|| "default".into());
    let name = file.name_any();
    let live_db = Api::<Database>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&name)
        .await
        .context("reading the Database (are atoll's CRDs installed?)")?;
    let exists = live_db.is_some();
    let db = Arc::new(as_applied(file, live_db.as_ref()));
    let uid = db.uid().unwrap_or_default();

    let live = match exists {
        true => observe::observe(&ctx.client, &namespace, &name, &uid, &ctx.kinds).await?,
        false => BTreeMap::new(),
    };
    let (renderer, for_render) = (Arc::clone(&ctx.renderer), Arc::clone(&db));
    let mut desired = tokio::task::spawn_blocking(move || renderer.render(&for_render)).await??;
    configs::stamp_external(ctx, &namespace, &mut desired).await?;
    let group = discovery::objects(&db, &desired, &live);
    let plan = plan::plan(&db, &ctx.renderer, &desired, group, &live);

    let mut out = format!(
        "Database {namespace}/{name}{}: plugin {} {} ({})\n",
        if !exists {
            " (not in the cluster yet)"
        } else {
            ""
        },
        desired.plugin.name,
        desired.plugin.version,
        desired.plugin.digest,
    );
    let mut verdict = Verdict::Same;

    let missing = plan.wanted.iter().filter(|o| !live.contains_key(&key(o)));
    let taken = converge::taken_names(&ctx.client, &namespace, &uid, missing)
        .await
        .map_err(anyhow::Error::new)?;
    let mut changes: Vec<(Key, Change)> = Vec::new();
    let mut unchanged = 0;
    for object in &plan.wanted {
        let k = key(object);
        let before = live.get(&k).map(|l| &l.object);
        // The controller writes only what is missing or drifted.
        if before.is_some_and(|b| converge::contains(b, object)) {
            unchanged += 1;
            continue;
        }
        let change = match dry_run_apply(&ctx.client, &namespace, object).await {
            Ok(after) => describe(before, &after, &k, context),
            Err(kube::Error::Api(e)) => Some(Change::Rejected(e.message)),
            Err(e) => return Err(e.into()),
        };
        match change {
            Some(change) => changes.push((k, change)),
            // Drifted only in form (the server normalises `0.5` to `500m`).
            None => unchanged += 1,
        }
    }
    for l in &plan.prune {
        changes.push((key(&l.object), Change::Prune));
    }

    let (mut created, mut updated, mut pruned) = (0, 0, 0);
    for ((kind, object_name), change) in &changes {
        match change {
            Change::Create(diff) => {
                created += 1;
                out.push_str(&format!("+ {kind} {object_name} (created)\n{diff}"));
            }
            Change::Update(diff) => {
                updated += 1;
                out.push_str(&format!("~ {kind} {object_name} (changed)\n{diff}"));
            }
            Change::Prune => {
                pruned += 1;
                out.push_str(&format!("- {kind} {object_name} (pruned)\n"));
            }
            Change::Rejected(message) => {
                verdict = Verdict::Refused;
                out.push_str(&format!(
                    "! {kind} {object_name}: the API server would reject the apply: {message}\n"
                ));
            }
        }
    }
    if created + updated + pruned > 0 {
        verdict = verdict.max(Verdict::Changes);
    }
    for conflict in &taken {
        verdict = Verdict::Refused;
        out.push_str(&format!("REFUSED (NameConflict): {conflict}\n"));
    }
    if let Some(refusal) = &plan.refused {
        verdict = Verdict::Refused;
        out.push_str(&format!(
            "REFUSED ({}): {}\n",
            refusal.reason.as_str(),
            refusal.message
        ));
    }
    if verdict == Verdict::Refused {
        out.push_str("atoll would apply and prune nothing of the above until that is resolved\n");
    }
    out.push_str(&match verdict {
        Verdict::Same => format!("no changes ({unchanged} objects up to date)\n"),
        _ => format!(
            "{created} to create, {updated} to change, {pruned} to prune, {unchanged} unchanged{}\n",
            if verdict == Verdict::Refused {
                "; refused"
            } else {
                ""
            }
        ),
    });
    Ok((out, verdict))
}

/// The Database as it would be once `file` is applied over `live`: the
/// file's spec, its labels and annotations merged over the live ones, the
/// live uid and status, and the generation the API server would give it
/// (one more when the spec changes), which the data-loss guard's one-time
/// approval names. A Database not in the cluster gets an all-zero uid and
/// generation 1.
fn as_applied(mut file: Database, live: Option<&Database>) -> Database {
    let Some(live) = live else {
        file.metadata.uid = Some(OFFLINE_UID.into());
        file.metadata.generation = Some(1);
        file.status = None;
        return file;
    };
    let spec_changed =
        serde_json::to_value(&file.spec).ok() != serde_json::to_value(&live.spec).ok();
    let merge = |live: Option<&BTreeMap<String, String>>,
                 file: Option<BTreeMap<String, String>>| {
        let mut merged = live.cloned().unwrap_or_default();
        merged.extend(file.unwrap_or_default());
        (!merged.is_empty()).then_some(merged)
    };
    let labels = merge(live.metadata.labels.as_ref(), file.metadata.labels.take());
    let annotations = merge(
        live.metadata.annotations.as_ref(),
        file.metadata.annotations.take(),
    );
    let generation = live.metadata.generation.unwrap_or(1) + i64::from(spec_changed);
    Database {
        metadata: kube::api::ObjectMeta {
            labels,
            annotations,
            generation: Some(generation),
            ..live.metadata.clone()
        },
        spec: file.spec,
        status: live.status.clone(),
    }
}

/// Server-side apply `object` as the controller does, with `dryRun=All`:
/// the object the API server would store, nothing written.
async fn dry_run_apply(
    client: &Client,
    namespace: &str,
    object: &Value,
) -> Result<Value, kube::Error> {
    let kind = Kind::new(
        object["apiVersion"].as_str().unwrap_or_default(),
        object["kind"].as_str().unwrap_or_default(),
    );
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let stored = kind
        .api(client, namespace)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force().dry_run(),
            &Patch::Apply(object),
        )
        .await?;
    Ok(serde_json::to_value(stored).expect("a stored object serialises"))
}

/// The change from `before` (absent: a creation) to `after` as a unified
/// diff of their YAML without server-populated noise; `None` when they are
/// the same.
fn describe(before: Option<&Value>, after: &Value, key: &Key, context: usize) -> Option<Change> {
    let yaml = |v: &Value| serde_saphyr::to_string(&without_noise(v)).unwrap_or_default();
    let new = yaml(after);
    let old = before.map(yaml).unwrap_or_default();
    let (kind, name) = key;
    let diff = unified::unified(
        &old,
        &new,
        &format!("live/{kind}/{name}"),
        &format!("after/{kind}/{name}"),
        context,
    );
    match (before, diff.is_empty()) {
        (_, true) => None,
        (None, false) => Some(Change::Create(diff)),
        (Some(_), false) => Some(Change::Update(diff)),
    }
}

/// `object` without what the API server fills in and changes on every
/// write (managedFields, resourceVersion, uid, creationTimestamp,
/// generation) and without status, which applies do not write.
fn without_noise(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in [
                "managedFields",
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
                "selfLink",
            ] {
                metadata.remove(field);
            }
        }
    }
    object
}

#[cfg(test)]
mod tests;
