//! `atoll.v1alpha1.PluginService`: the plugins in the registry, and dry-run
//! renders through them (the same path as `atoll render` and the operator,
//! without touching the cluster).

use std::sync::Arc;

use kube::ResourceExt;
use tonic::{Request, Response, Status};

use super::error::GrpcError;
use super::proto::atoll::v1alpha1 as pb;
use crate::error::RenderError;
use crate::registry::Entry;
use crate::render::Renderer;

/// A uid for dry-run renders, so owner references are complete (as in
/// `atoll render`).
const DRY_RUN_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Serves PluginService from the renderer's registry.
pub struct PluginApi {
    renderer: Arc<Renderer>,
}

impl PluginApi {
    pub fn new(renderer: Arc<Renderer>) -> Self {
        PluginApi { renderer }
    }

    fn entry(&self, name: &str) -> Option<Entry> {
        self.renderer
            .registry
            .entries()
            .into_iter()
            .find(|e| e.plugin.metadata().name == name)
    }
}

#[tonic::async_trait]
impl pb::plugin_service_server::PluginService for PluginApi {
    async fn list_plugins(
        &self,
        _: Request<pb::ListPluginsRequest>,
    ) -> Result<Response<pb::ListPluginsResponse>, Status> {
        let plugins = self
            .renderer
            .registry
            .entries()
            .iter()
            .map(plugin)
            .collect();
        Ok(Response::new(pb::ListPluginsResponse { plugins }))
    }

    async fn get_plugin(
        &self,
        request: Request<pb::GetPluginRequest>,
    ) -> Result<Response<pb::GetPluginResponse>, Status> {
        let name = request.into_inner().name;
        if name.is_empty() {
            return Err(GrpcError::Invalid("name is required".into()).into());
        }
        let entry = self.entry(&name).ok_or_else(|| {
            GrpcError::NotFound(format!(
                "no plugin named {name:?} is loaded; loaded: {}",
                self.renderer.registry.names().join(", ")
            ))
        })?;
        Ok(Response::new(pb::GetPluginResponse {
            plugin: Some(plugin(&entry)),
        }))
    }

    async fn render_database(
        &self,
        request: Request<pb::RenderDatabaseRequest>,
    ) -> Result<Response<pb::RenderDatabaseResponse>, Status> {
        let manifest = request.into_inner().manifest;
        if manifest.trim().is_empty() {
            return Err(GrpcError::Invalid("manifest is required".into()).into());
        }
        let renderer = Arc::clone(&self.renderer);
        // Plugin calls are CPU-bound wasm: keep them off the async workers.
        let rendered = tokio::task::spawn_blocking(move || dry_run(&renderer, &manifest))
            .await
            .map_err(|e| GrpcError::Internal(format!("render task failed: {e}")))??;
        let entry = self.entry(&rendered.plugin_name);
        Ok(Response::new(pb::RenderDatabaseResponse {
            plugin: Some(match entry {
                Some(entry) if entry.plugin.digest().to_string() == rendered.digest => {
                    plugin(&entry)
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

/// Parse one Database from `manifest` and render it as the operator would.
fn dry_run(renderer: &Renderer, manifest: &str) -> Result<DryRun, GrpcError> {
    let mut dbs = crate::manifest::parse_databases("manifest", manifest)
        .map_err(|e| GrpcError::Invalid(e.to_string()))?;
    if dbs.len() != 1 {
        return Err(GrpcError::Invalid(format!(
            "manifest holds {} Databases; send one per request",
            dbs.len()
        )));
    }
    let mut db = dbs.remove(0);
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
    match e {
        RenderError::Invalid(_) => GrpcError::Invalid(e.to_string()),
        RenderError::UnknownPlugin { .. } => GrpcError::NotFound(e.to_string()),
        RenderError::VersionMismatch { .. }
        | RenderError::Failed { .. }
        | RenderError::Plugin(_)
        | RenderError::Policy { .. } => GrpcError::FailedPrecondition(e.to_string()),
    }
}

fn plugin(entry: &Entry) -> pb::Plugin {
    let m = entry.plugin.metadata();
    pb::Plugin {
        name: m.name.clone(),
        version: m.version.clone(),
        digest: entry.plugin.digest().to_string(),
        source: entry.source.to_string(),
        // The registry holds only plugins that loaded.
        state: pb::PluginState::Loaded as i32,
        description: m.description.clone(),
        config_schema: m.config_schema.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Violation;

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
}
