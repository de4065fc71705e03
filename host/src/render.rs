//! From a Database to the objects atoll applies: spec checks, plugin render,
//! output policy, pod overrides (`spec.pod`, then the policy's pod rules
//! again on the result), config checksums, and the
//! Partition objects derived from partition bindings.
//!
//! The operator and the offline `atoll render` command both go through
//! [`Renderer::render`], so what the CLI prints is what atoll applies.

pub mod checksum;
pub mod memo;
pub mod pod_overrides;

use std::sync::Arc;

use kube::{Resource, ResourceExt};
use serde_json::Value;

use crate::api::{
    ANNOTATION_OVERRIDDEN, ANNOTATION_PLUGIN_DIGEST, Database, LABEL_DATABASE, LABEL_MANAGED_BY,
    LABEL_PLUGIN, MAX_PARTITIONS, Partition, PartitionPlacement, PartitionSpec, PluginRef,
};
use crate::contract::{PartitionBinding, Placement, PluginDatabase, PluginRenderError, Violation};
use crate::error::RenderError;
use crate::plugin::source::{Rendering, ShadowRenderer};
use crate::plugin::{LoadedPlugin, Registry, Unchosen, Wanted};
use crate::policy::{OutputPolicy, Owner};

/// Everything that should exist for one Database.
#[derive(Debug, Clone)]
pub struct Desired {
    pub plugin: PluginRef,
    /// The component that rendered, so the status call of the same
    /// reconcile uses the same version even if a hot reload swaps it.
    pub component: Arc<LoadedPlugin>,
    /// Children after the output policy: namespaced, labelled, owned.
    pub objects: Vec<Value>,
    pub partitions: Vec<PartitionBinding>,
}

impl Desired {
    /// What the host changed in the render and why (each object's
    /// `atoll.dev/overridden` annotation), as `Kind name: note`.
    pub fn overrides(&self) -> Vec<String> {
        self.objects
            .iter()
            .filter_map(|o| {
                let note = o["metadata"]["annotations"][ANNOTATION_OVERRIDDEN].as_str()?;
                let kind = o["kind"].as_str().unwrap_or_default();
                let name = o["metadata"]["name"].as_str().unwrap_or_default();
                Some(format!("{kind} {name}: {note}"))
            })
            .collect()
    }

    /// ConfigMaps and Secrets the pod templates refer to that this render
    /// does not contain (the controller reads them for the checksums).
    pub fn external_configs(&self) -> std::collections::BTreeSet<checksum::ConfigRef> {
        checksum::external(&self.objects)
    }

    /// Stamp every pod template's config checksum again, with `external`
    /// holding what was read of [`Desired::external_configs`], and refresh
    /// the rendered-hash annotation of the templates' workloads.
    pub fn stamp_config_checksums(&mut self, external: &checksum::External) {
        checksum::stamp(&mut self.objects, external);
        for object in self
            .objects
            .iter_mut()
            .filter(|o| pod_overrides::has_template(o))
        {
            crate::policy::fingerprint(object);
        }
    }
}

/// Renders Databases through the registry's plugins.
pub struct Renderer {
    pub registry: Arc<Registry>,
    pub policy: OutputPolicy,
    /// DNS domain of the cluster, for partition endpoints and pod host names.
    pub cluster_domain: String,
}

impl Renderer {
    /// Render `db`: check the spec, find its plugin, render, enforce the
    /// policy, apply `spec.pod` to every pod template and stamp each
    /// template's config checksum (references outside the render hash as
    /// not read until [`Desired::stamp_config_checksums`] is given them).
    ///
    /// # Errors
    /// [`RenderError`]: whose fault, and what to do.
    pub fn render(&self, db: &Database) -> Result<Desired, RenderError> {
        let plugin = self.plugin_for(db)?;
        self.render_with(db, &plugin)
    }

    /// Render `db` with `plugin` rather than the one registered under its
    /// name (a shadow render compares two versions this way). Checks the
    /// spec's version requirement against `plugin`.
    ///
    /// # Errors
    /// As [`Renderer::render`].
    pub fn render_with(
        &self,
        db: &Database,
        plugin: &Arc<LoadedPlugin>,
    ) -> Result<Desired, RenderError> {
        check_requirement(db, plugin)?;
        let input = plugin_input(db, &self.cluster_domain);
        let answer = plugin.render(&input)?;
        self.finish(db, plugin, &input, &answer)
    }

    /// [`Renderer::render`], but the plugin is called only when `memo` holds
    /// no answer for the same component and input (see [`memo`]); the
    /// host's steps after the plugin always run. Records the call's time, or
    /// the memo hit, in `metrics`.
    ///
    /// # Errors
    /// As [`Renderer::render`].
    pub fn render_memoized(
        &self,
        db: &Database,
        memo: &memo::Memo<memo::KeptRender>,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Desired, RenderError> {
        let plugin = self.plugin_for(db)?;
        self.render_with_memoized(db, &plugin, memo, metrics)
    }

    /// [`Renderer::render_with`] through `memo`, as
    /// [`Renderer::render_memoized`]: a shadow render of a new version
    /// leaves its answers for the reconciles that follow the swap, and finds
    /// the serving version's answers already kept.
    ///
    /// # Errors
    /// As [`Renderer::render`].
    pub fn render_with_memoized(
        &self,
        db: &Database,
        plugin: &Arc<LoadedPlugin>,
        memo: &memo::Memo<memo::KeptRender>,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Desired, RenderError> {
        check_requirement(db, plugin)?;
        let input = plugin_input(db, &self.cluster_domain);
        let key = memo::render_key(plugin.digest(), &input);
        let name = &plugin.metadata().name;
        let answer = match memo.get(&key) {
            Some(kept) => {
                metrics.memoized(name, "render");
                kept.answer()
            }
            None => {
                let started = std::time::Instant::now();
                let answer = plugin.render(&input);
                metrics.plugin_call(name, "render", started.elapsed());
                let answer = answer?;
                let kept = memo::KeptRender::keep(&answer);
                let bytes = kept.bytes();
                memo.insert(key, Arc::new(kept), bytes);
                answer
            }
        };
        self.finish(db, plugin, &input, &answer)
    }

    /// The host's steps after the plugin answered: policy, `spec.pod`,
    /// checksums.
    fn finish(
        &self,
        db: &Database,
        plugin: &Arc<LoadedPlugin>,
        input: &PluginDatabase,
        answer: &memo::RenderAnswer,
    ) -> Result<Desired, RenderError> {
        let metadata = plugin.metadata();
        let rendered = match answer {
            Ok(rendered) => rendered,
            Err(PluginRenderError::Invalid(v)) => return Err(RenderError::Invalid(v.clone())),
            Err(PluginRenderError::Failed(message)) => {
                return Err(RenderError::Failed {
                    plugin: metadata.name.clone(),
                    message: message.clone(),
                });
            }
        };
        let owner = Owner {
            name: &input.name,
            namespace: &input.namespace,
            uid: &input.uid,
            plugin: &metadata.name,
            partitions: input.partitions,
            deletion: db.spec.deletion_policy.unwrap_or_default(),
        };
        let mut objects =
            self.policy
                .enforce(&owner, rendered)
                .map_err(|error| RenderError::Policy {
                    plugin: metadata.name.clone(),
                    error: Box::new(error),
                })?;
        if let Some(pod) = &db.spec.pod {
            pod_overrides::apply(&mut objects, pod).map_err(RenderError::Invalid)?;
            // The pod rules judge what would be applied: the plugin's render
            // passed them, so a refusal now is the Database's `spec.pod`.
            self.policy.pods.check(&objects).map_err(|error| {
                RenderError::Invalid(vec![violation(
                    "spec.pod",
                    format!("makes a pod break the output policy: {error}"),
                )])
            })?;
        }
        let mut desired = Desired {
            plugin: PluginRef {
                name: metadata.name.clone(),
                version: metadata.version.clone(),
                digest: plugin.digest().to_string(),
            },
            component: Arc::clone(plugin),
            objects,
            partitions: rendered.partitions.clone(),
        };
        // Offline: references outside the render hash as not read; the
        // controller stamps again with what it reads.
        desired.stamp_config_checksums(&checksum::External::new());
        Ok(desired)
    }

    /// The version of the plugin `db` renders with (see
    /// [`Registry::choose`]: exact digest pin, else the rollout's assignment
    /// or the default, narrowed by the version requirement), after the
    /// checks atoll makes itself (partition range, plugin name, version
    /// requirement syntax).
    ///
    /// # Errors
    /// `Invalid` for spec violations, `UnknownPlugin` when no plugin has the name.
    pub fn plugin_for(&self, db: &Database) -> Result<Arc<LoadedPlugin>, RenderError> {
        let mut violations = Vec::new();
        if !(1..=MAX_PARTITIONS).contains(&db.spec.partitions) {
            violations.push(violation(
                "spec.partitions",
                format!(
                    "must be between 1 and {MAX_PARTITIONS} (got {})",
                    db.spec.partitions
                ),
            ));
        }
        if let Err(e) = requirement(db) {
            violations.push(e);
        }
        if let Some(pod) = &db.spec.pod {
            violations.extend(pod_overrides::check(pod));
        }
        if !violations.is_empty() {
            return Err(RenderError::Invalid(violations));
        }
        let name = &db.spec.storage.plugin;
        let requirement = requirement(db).ok().flatten();
        let wanted = Wanted {
            digest: db.spec.storage.digest.as_deref(),
            assigned: db
                .annotations()
                .get(ANNOTATION_PLUGIN_DIGEST)
                .map(String::as_str),
            requirement: requirement.as_ref(),
        };
        self.registry
            .choose(name, wanted)
            .map_err(|unchosen| match unchosen {
                Unchosen::Unknown => RenderError::UnknownPlugin {
                    name: name.clone(),
                    why: self
                        .registry
                        .failure(name)
                        .map(|f| format!(" ({})", f.error))
                        .unwrap_or_default(),
                    available: self.registry.names().join(", "),
                },
                Unchosen::DigestNotLoaded { loaded } => RenderError::DigestNotLoaded {
                    plugin: name.clone(),
                    digest: db.spec.storage.digest.clone().unwrap_or_default(),
                    loaded: loaded.join(", "),
                },
                Unchosen::NoMatch { loaded } => RenderError::VersionMismatch {
                    plugin: name.clone(),
                    required: requirement.map(|r| r.to_string()).unwrap_or_default(),
                    loaded: loaded.join(", "),
                },
            })
    }

    /// The `host:port` clients use for a partition.
    pub fn endpoint(&self, namespace: &str, binding: &PartitionBinding) -> String {
        format!(
            "{}.{namespace}.svc.{}:{}",
            binding.service, self.cluster_domain, binding.port
        )
    }

    /// The Partition objects atoll keeps for `db`, one per binding, named
    /// `<db>-<partition>` and owned by the Database like every child, each
    /// recording where its data lives (`spec.placement`).
    pub fn partition_objects(&self, db: &Database, desired: &Desired) -> Vec<Partition> {
        let name = db.name_any();
        let namespace = db.namespace().unwrap_or_else(|| "default".into());
        let owner = db.controller_owner_ref(&()).map(|mut o| {
            o.block_owner_deletion = Some(true);
            o
        });
        desired
            .partitions
            .iter()
            .map(|b| {
                let mut p = Partition::new(
                    &format!("{name}-{}", b.partition),
                    PartitionSpec {
                        database: name.clone(),
                        partition_id: b.partition,
                        service_name: b.service.clone(),
                        port: b.port,
                        placement: recorded_placement(&b.placement),
                    },
                );
                p.metadata.namespace = Some(namespace.clone());
                p.metadata.labels = Some(
                    [
                        (LABEL_MANAGED_BY, "atoll"),
                        (LABEL_DATABASE, name.as_str()),
                        (LABEL_PLUGIN, desired.plugin.name.as_str()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                );
                p.metadata.owner_references = owner.clone().map(|o| vec![o]);
                p
            })
            .collect()
    }
}

impl ShadowRenderer for Renderer {
    fn render_with(&self, db: &Database, plugin: &Arc<LoadedPlugin>) -> Result<Rendering, String> {
        Renderer::render_with(self, db, plugin)
            .map(Rendering::from)
            .map_err(|e| e.to_string())
    }
}

impl From<Desired> for Rendering {
    fn from(desired: Desired) -> Self {
        Rendering {
            bindings: desired
                .partitions
                .iter()
                .map(|b| (b.partition, b.service.clone(), b.port))
                .collect(),
            objects: desired.objects,
        }
    }
}

/// What a Partition records of a binding's placement: the workload, or
/// nothing for `nowhere` and `unknown`.
pub fn recorded_placement(placement: &Placement) -> Option<PartitionPlacement> {
    match placement {
        Placement::Workload(w) => Some(PartitionPlacement {
            kind: w.kind.clone(),
            name: w.name.clone(),
        }),
        Placement::Nowhere | Placement::Unknown => None,
    }
}

/// The WIT `database` record for `db`.
pub fn plugin_input(db: &Database, cluster_domain: &str) -> PluginDatabase {
    PluginDatabase {
        name: db.name_any(),
        namespace: db.namespace().unwrap_or_else(|| "default".into()),
        uid: db.uid().unwrap_or_default(),
        generation: db.metadata.generation.unwrap_or(0),
        labels: db.labels().clone().into_iter().collect(),
        partitions: db.spec.partitions,
        config: db
            .spec
            .storage
            .config
            .as_ref()
            .map_or_else(|| "{}".to_string(), Value::to_string),
        cluster_domain: cluster_domain.to_string(),
    }
}

/// `spec.storage.version` parsed, if set.
fn requirement(db: &Database) -> Result<Option<semver::VersionReq>, Violation> {
    match db.spec.storage.version.as_deref() {
        None => Ok(None),
        Some(text) => semver::VersionReq::parse(text).map(Some).map_err(|e| {
            violation(
                "spec.storage.version",
                format!("is not a semantic version requirement such as ^0.1 or >=0.1.2 ({e})"),
            )
        }),
    }
}

/// `plugin`'s version satisfies `db`'s requirement, if it has one.
fn check_requirement(db: &Database, plugin: &LoadedPlugin) -> Result<(), RenderError> {
    let Some(req) = requirement(db).map_err(|v| RenderError::Invalid(vec![v]))? else {
        return Ok(());
    };
    let version = &plugin.metadata().version;
    if semver::Version::parse(version).is_ok_and(|v| req.matches(&v)) {
        return Ok(());
    }
    Err(RenderError::VersionMismatch {
        plugin: plugin.metadata().name.clone(),
        required: req.to_string(),
        loaded: version.clone(),
    })
}

fn violation(field: &str, message: String) -> Violation {
    Violation {
        field: field.to_string(),
        message,
    }
}
