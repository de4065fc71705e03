//! `atoll.v1alpha1.PluginService`: the plugins in the registry, and dry-run
//! renders through them (the same path as `atoll render` and the operator,
//! without touching the cluster).

use std::sync::Arc;

use kube::ResourceExt;
use tonic::{Request, Response, Status};

use super::auth::{Access, Auth, Credentials};
#[cfg(test)]
use super::auth::AuthConfig;
use super::error::GrpcError;
use super::proto::atoll::v1alpha1 as pb;
use crate::api::{Database, Reason};
use crate::error::RenderError;
use crate::plugin::{Entry, Failure};
use crate::render::Renderer;

/// A uid for dry-run renders, so owner references are complete (as in
/// `atoll render`).
const DRY_RUN_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Serves PluginService from the renderer's registry.
pub struct PluginApi {
    renderer: Arc<Renderer>,
    auth: Arc<Auth>,
}

impl PluginApi {
    pub fn new(renderer: Arc<Renderer>, auth: Arc<Auth>) -> Self {
        PluginApi { renderer, auth }
    }

    /// Every plugin: those serving, and those whose latest load failed or
    /// that were removed, by name.
    fn plugins(&self) -> Vec<pb::Plugin> {
        let registry = &self.renderer.registry;
        let failures = registry.failures();
        let mut plugins: Vec<pb::Plugin> = registry
            .entries()
            .iter()
            .map(|e| plugin(e, failures.get(&e.plugin.metadata().name)))
            .collect();
        for (name, failure) in &failures {
            if registry.get(name).is_none() {
                plugins.push(pb::Plugin {
                    name: name.clone(),
                    source: failure.source.to_string(),
                    state: pb::PluginState::Failed as i32,
                    last_error: failure.error.clone(),
                    ..Default::default()
                });
            }
        }
        plugins.sort_by(|a, b| a.name.cmp(&b.name));
        plugins
    }
}

#[tonic::async_trait]
impl pb::plugin_service_server::PluginService for PluginApi {
    async fn list_plugins(
        &self,
        request: Request<pb::ListPluginsRequest>,
    ) -> Result<Response<pb::ListPluginsResponse>, Status> {
        let credentials = Credentials::of(&request);
        self.auth
            .check(&credentials, Access::cluster("list", "storageplugins"))
            .await?;
        Ok(Response::new(pb::ListPluginsResponse {
            plugins: self.plugins(),
        }))
    }

    async fn get_plugin(
        &self,
        request: Request<pb::GetPluginRequest>,
    ) -> Result<Response<pb::GetPluginResponse>, Status> {
        let credentials = Credentials::of(&request);
        self.auth
            .check(&credentials, Access::cluster("list", "storageplugins"))
            .await?;
        let name = request.into_inner().name;
        if name.is_empty() {
            return Err(GrpcError::Invalid("name is required".into()).into());
        }
        let found = self.plugins().into_iter().find(|p| p.name == name);
        let found = found.ok_or_else(|| {
            GrpcError::NotFound(format!(
                "no plugin named {name:?} is loaded; loaded: {}",
                self.renderer.registry.names().join(", ")
            ))
        })?;
        Ok(Response::new(pb::GetPluginResponse {
            plugin: Some(found),
        }))
    }

    async fn render_database(
        &self,
        request: Request<pb::RenderDatabaseRequest>,
    ) -> Result<Response<pb::RenderDatabaseResponse>, Status> {
        let credentials = Credentials::of(&request);
        let manifest = request.into_inner().manifest;
        if manifest.trim().is_empty() {
            return Err(GrpcError::Invalid("manifest is required".into()).into());
        }
        let db = parse_one(&manifest)?;
        // A dry run of creating the Database: allowed to whoever may create it.
        let namespace = db.namespace().unwrap_or_else(|| "default".into());
        self.auth
            .check(&credentials, Access::new("create", "databases", &namespace))
            .await?;
        let renderer = Arc::clone(&self.renderer);
        // Plugin calls are CPU-bound wasm: keep them off the async workers.
        let rendered = tokio::task::spawn_blocking(move || dry_run(&renderer, db))
            .await
            .map_err(|e| GrpcError::Internal(format!("render task failed: {e}")))??;
        let entry = self.renderer.registry.entry(&rendered.plugin_name);
        Ok(Response::new(pb::RenderDatabaseResponse {
            plugin: Some(match entry {
                Some(entry) if entry.plugin.digest().to_string() == rendered.digest => {
                    plugin(&entry, None)
                }
                // Replaced by a hot reload meanwhile: say what rendered.
                _ => pb::Plugin {
                    name: rendered.plugin_name,
                    version: rendered.version,
                    digest: rendered.digest,
                    ..pb::Plugin::default()
                },
            }),
            objects: rendered.objects,
            partitions: rendered.partitions,
        }))
    }
}

struct DryRun {
    plugin_name: String,
    version: String,
    digest: String,
    objects: Vec<String>,
    partitions: Vec<pb::RenderedPartition>,
}

/// The one Database `manifest` holds.
fn parse_one(manifest: &str) -> Result<Database, GrpcError> {
    let mut dbs = crate::manifest::parse_databases("manifest", manifest)
        .map_err(|e| GrpcError::Invalid(e.to_string()))?;
    if dbs.len() != 1 {
        return Err(GrpcError::Invalid(format!(
            "manifest holds {} Databases; send one per request",
            dbs.len()
        )));
    }
    Ok(dbs.remove(0))
}

/// Render `db` as the operator would.
fn dry_run(renderer: &Renderer, mut db: Database) -> Result<DryRun, GrpcError> {
    db.metadata.uid.get_or_insert_with(|| DRY_RUN_UID.into());
    let desired = renderer.render(&db).map_err(render_error)?;
    let namespace = db.namespace().unwrap_or_default();
    let mut objects = Vec::new();
    for partition in renderer.partition_objects(&db, &desired) {
        objects.push(to_json(&partition)?);
    }
    for object in &desired.objects {
        objects.push(to_json(object)?);
    }
    let partitions = desired
        .partitions
        .iter()
        .map(|b| pb::RenderedPartition {
            partition: i32::try_from(b.partition).unwrap_or(i32::MAX),
            service: b.service.clone(),
            port: i32::from(b.port),
            endpoint: renderer.endpoint(&namespace, b),
        })
        .collect();
    Ok(DryRun {
        plugin_name: desired.plugin.name,
        version: desired.plugin.version,
        digest: desired.plugin.digest,
        objects,
        partitions,
    })
}

fn to_json(value: &impl serde::Serialize) -> Result<String, GrpcError> {
    serde_json::to_string(value)
        .map_err(|e| GrpcError::Internal(format!("encoding an object: {e}")))
}

/// Whose fault a failed render is: the request's (INVALID_ARGUMENT), a
/// missing plugin (NOT_FOUND), or the plugin's (FAILED_PRECONDITION).
fn render_error(e: RenderError) -> GrpcError {
    match e.reason() {
        Reason::InvalidSpec => GrpcError::Invalid(e.to_string()),
        Reason::UnknownPlugin => GrpcError::NotFound(e.to_string()),
        _ => GrpcError::FailedPrecondition(e.to_string()),
    }
}

/// A serving plugin; `failure`: its latest load failed (the entry serves on).
fn plugin(entry: &Entry, failure: Option<&Failure>) -> pb::Plugin {
    let m = entry.plugin.metadata();
    let (state, source, last_error) = match failure {
        Some(f) => (
            pb::PluginState::Failed,
            f.source.to_string(),
            f.error.clone(),
        ),
        None => (
            pb::PluginState::Loaded,
            entry.source.to_string(),
            String::new(),
        ),
    };
    pb::Plugin {
        name: m.name.clone(),
        version: m.version.clone(),
        digest: entry.plugin.digest().to_string(),
        source,
        state: state as i32,
        description: m.description.clone(),
        config_schema: m.config_schema.clone(),
        last_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Violation;

    #[test]
    fn render_errors_say_whose_fault() {
        let invalid = RenderError::Invalid(vec![Violation {
            field: "spec.partitions".into(),
            message: "must be between 1 and 1024".into(),
        }]);
        let e = render_error(invalid);
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("spec.partitions"), "{e}");
        let unknown = RenderError::UnknownPlugin {
            name: "nope".into(),
            why: String::new(),
            available: "raft".into(),
        };
        assert_eq!(render_error(unknown).code(), tonic::Code::NotFound);
        let failed = RenderError::Failed {
            plugin: "raft".into(),
            message: "no".into(),
        };
        assert_eq!(render_error(failed).code(), tonic::Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn failed_and_removed_plugins_are_listed_with_their_error() {
        use crate::plugin::{Limits, Registry, Runtime, Source};
        use crate::policy::OutputPolicy;
        let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
        let registry = Arc::new(Registry::new(Arc::clone(&runtime)));
        let (_, raft) = crate::plugin::builtin::BUILTIN[0];
        registry.insert(runtime.load("raft", raft).unwrap(), Source::Builtin);
        let cm = |name: &str| Source::ConfigMap {
            namespace: "atoll-system".into(),
            name: name.into(),
        };
        let failure = |name: &str, error: &str| Failure {
            source: cm(name),
            error: error.into(),
        };
        registry.record_failure("raft", failure("raft-next", "not a component"));
        registry.record_failure("echo", failure("echo", "removed"));
        // Never asked: this test calls no service method.
        let nowhere = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let auth = Auth::new(kube::Client::try_from(nowhere).unwrap(), AuthConfig::disabled());
        let renderer = Renderer {
            registry,
            policy: OutputPolicy::default(),
            cluster_domain: "cluster.local".into(),
        };
        let api = PluginApi::new(Arc::new(renderer), Arc::new(auth));
        let plugins = api.plugins();
        let names: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["echo", "raft"]);
        // Still serving its last good version, but the update failed.
        assert_eq!(plugins[1].state, pb::PluginState::Failed as i32);
        assert_eq!(plugins[1].version, "0.1.0");
        assert_eq!(plugins[1].source, "configmap/atoll-system/raft-next");
        assert_eq!(plugins[1].last_error, "not a component");
        // Gone: no version.
        assert_eq!(plugins[0].state, pb::PluginState::Failed as i32);
        assert_eq!(plugins[0].version, "");
        assert_eq!(plugins[0].last_error, "removed");
    }
}
