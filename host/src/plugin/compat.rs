//! The worlds a plugin component may implement, and the adapter that lets
//! `atoll:storage@0.1.0` plugins keep working under the 0.2 contract.
//!
//! A 0.1 component's calls are converted to and from the 0.2 types; its
//! partition bindings get [`Placement::Unknown`], so the host guards its
//! partitions the conservative way (by what their Services select).

use wasmtime::Store;
use wasmtime::component::{Component, Linker};

use super::sandbox::CallState;
use crate::contract::bindings::{Plugin, PluginPre};
use crate::contract::bindings_v0_1::atoll::storage::types as v1;
use crate::contract::bindings_v0_1::{Plugin as PluginV1, PluginPre as PluginPreV1};
use crate::contract::{
    Metadata, PartitionBinding, Placement, PluginDatabase, PluginRenderError, Rendered,
    StatusReport, Violation,
};

/// A component linked against the world it implements.
pub(super) enum Pre {
    /// `atoll:storage/plugin@0.2.x`.
    V2(PluginPre<CallState>),
    /// `atoll:storage/plugin@0.1.x`, through the adapter.
    V1(PluginPreV1<CallState>),
}

impl Pre {
    /// Link `component`, as 0.2 if it implements that world, else as 0.1.
    ///
    /// # Errors
    /// Its imports cannot be satisfied, or its exports match neither world
    /// (both reasons are given).
    pub(super) fn new(
        linker: &Linker<CallState>,
        component: &Component,
    ) -> Result<Self, wasmtime::Error> {
        let pre = linker.instantiate_pre(component)?;
        match PluginPre::new(pre.clone()) {
            Ok(pre) => Ok(Pre::V2(pre)),
            Err(v2) => match PluginPreV1::new(pre) {
                Ok(pre) => Ok(Pre::V1(pre)),
                Err(v1) => Err(wasmtime::Error::msg(format!(
                    "as 0.2.x: {v2:#}; as 0.1.x: {v1:#}"
                ))),
            },
        }
    }

    /// The contract version the component implements, e.g. `0.2`.
    pub(super) fn contract(&self) -> &'static str {
        match self {
            Pre::V2(_) => "0.2",
            Pre::V1(_) => "0.1",
        }
    }

    /// A fresh instance in `store`.
    pub(super) fn instantiate(&self, store: &mut Store<CallState>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Pre::V2(pre) => Instance::V2(pre.instantiate(store)?),
            Pre::V1(pre) => Instance::V1(pre.instantiate(store)?),
        })
    }
}

/// One instance of a plugin, whichever world it implements; every call
/// speaks the 0.2 types.
pub(super) enum Instance {
    V2(Plugin),
    V1(PluginV1),
}

impl Instance {
    pub(super) fn metadata(&self, s: &mut Store<CallState>) -> wasmtime::Result<Metadata> {
        Ok(match self {
            Instance::V2(p) => p.call_metadata(s)?,
            Instance::V1(p) => {
                let m = p.call_metadata(s)?;
                Metadata {
                    name: m.name,
                    version: m.version,
                    description: m.description,
                    config_schema: m.config_schema,
                }
            }
        })
    }

    pub(super) fn validate(
        &self,
        s: &mut Store<CallState>,
        db: &PluginDatabase,
    ) -> wasmtime::Result<Result<(), Vec<Violation>>> {
        Ok(match self {
            Instance::V2(p) => p.call_validate(s, db)?,
            Instance::V1(p) => p.call_validate(s, &database(db))?.map_err(violations),
        })
    }

    pub(super) fn render(
        &self,
        s: &mut Store<CallState>,
        db: &PluginDatabase,
    ) -> wasmtime::Result<Result<Rendered, PluginRenderError>> {
        Ok(match self {
            Instance::V2(p) => p.call_render(s, db)?,
            Instance::V1(p) => match p.call_render(s, &database(db))? {
                Ok(r) => Ok(Rendered {
                    objects: r.objects,
                    partitions: r
                        .partitions
                        .into_iter()
                        .map(|b| PartitionBinding {
                            partition: b.partition,
                            service: b.service,
                            port: b.port,
                            placement: Placement::Unknown,
                        })
                        .collect(),
                }),
                Err(v1::RenderError::Invalid(v)) => Err(PluginRenderError::Invalid(violations(v))),
                Err(v1::RenderError::Failed(m)) => Err(PluginRenderError::Failed(m)),
            },
        })
    }

    pub(super) fn status(
        &self,
        s: &mut Store<CallState>,
        db: &PluginDatabase,
        observed: &[String],
    ) -> wasmtime::Result<StatusReport> {
        Ok(match self {
            Instance::V2(p) => p.call_status(s, db, observed)?,
            Instance::V1(p) => {
                let r = p.call_status(s, &database(db), observed)?;
                StatusReport {
                    ready_partitions: r.ready_partitions,
                    message: r.message,
                }
            }
        })
    }
}

fn database(db: &PluginDatabase) -> v1::Database {
    v1::Database {
        name: db.name.clone(),
        namespace: db.namespace.clone(),
        uid: db.uid.clone(),
        generation: db.generation,
        labels: db.labels.clone(),
        partitions: db.partitions,
        config: db.config.clone(),
        cluster_domain: db.cluster_domain.clone(),
    }
}

fn violations(v: Vec<v1::Violation>) -> Vec<Violation> {
    v.into_iter()
        .map(|v| Violation {
            field: v.field,
            message: v.message,
        })
        .collect()
}
