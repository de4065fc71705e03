//! The worlds a plugin component may implement, and the adapters that let
//! plugins built against older contracts keep working under 0.3.
//!
//! - `atoll:storage@0.2.0` differs only in `status-report`: it has no
//!   `available-partitions`, so a 0.2 plugin's ready partitions count as its
//!   available ones (it cannot say that a partition missing a replica still
//!   serves, so it is reported unavailable until every replica is back).
//! - `atoll:storage@0.1.0` also has no placement: its partition bindings get
//!   [`Placement::Unknown`], so the host guards its partitions the
//!   conservative way (by what their Services select). Its calls are
//!   converted to the 0.2 types, then to 0.3.

use wasmtime::Store;
use wasmtime::component::{Component, Linker};

use super::sandbox::CallState;
use crate::contract::bindings::{Plugin, PluginPre};
use crate::contract::bindings_v0_1::atoll::storage::types as v1;
use crate::contract::bindings_v0_1::{Plugin as PluginV1, PluginPre as PluginPreV1};
use crate::contract::bindings_v0_2::atoll::storage::types as v2;
use crate::contract::bindings_v0_2::{Plugin as PluginV2, PluginPre as PluginPreV2};
use crate::contract::{
    Metadata, PartitionBinding, Placement, PluginDatabase, PluginRenderError, Rendered,
    StatusReport, Violation, WorkloadRef,
};

/// A component linked against the world it implements.
pub(super) enum Pre {
    /// `atoll:storage/plugin@0.3.x`.
    V3(PluginPre<CallState>),
    /// `atoll:storage/plugin@0.2.x`, through the adapter.
    V2(PluginPreV2<CallState>),
    /// `atoll:storage/plugin@0.1.x`, through both adapters.
    V1(PluginPreV1<CallState>),
}

impl Pre {
    /// Link `component` as the newest world it implements.
    ///
    /// # Errors
    /// Its imports cannot be satisfied, or its exports match no world (every
    /// reason is given).
    pub(super) fn new(
        linker: &Linker<CallState>,
        component: &Component,
    ) -> Result<Self, wasmtime::Error> {
        let pre = linker.instantiate_pre(component)?;
        let v3 = match PluginPre::new(pre.clone()) {
            Ok(pre) => return Ok(Pre::V3(pre)),
            Err(e) => e,
        };
        let v2 = match PluginPreV2::new(pre.clone()) {
            Ok(pre) => return Ok(Pre::V2(pre)),
            Err(e) => e,
        };
        match PluginPreV1::new(pre) {
            Ok(pre) => Ok(Pre::V1(pre)),
            Err(v1) => Err(wasmtime::Error::msg(format!(
                "as 0.3.x: {v3:#}; as 0.2.x: {v2:#}; as 0.1.x: {v1:#}"
            ))),
        }
    }

    /// The contract version the component implements, e.g. `0.3`.
    pub(super) fn contract(&self) -> &'static str {
        match self {
            Pre::V3(_) => "0.3",
            Pre::V2(_) => "0.2",
            Pre::V1(_) => "0.1",
        }
    }

    /// The engine whose stores instantiate it.
    pub(super) fn engine(&self) -> &wasmtime::Engine {
        match self {
            Pre::V3(pre) => pre.engine(),
            Pre::V2(pre) => pre.engine(),
            Pre::V1(pre) => pre.engine(),
        }
    }

    /// A fresh instance in `store`.
    pub(super) fn instantiate(&self, store: &mut Store<CallState>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Pre::V3(pre) => Instance::V3(pre.instantiate(store)?),
            Pre::V2(pre) => Instance::V2(pre.instantiate(store)?),
            Pre::V1(pre) => Instance::V1(pre.instantiate(store)?),
        })
    }
}

/// One instance of a plugin, whichever world it implements; every call
/// speaks the 0.3 types.
pub(super) enum Instance {
    V3(Plugin),
    V2(PluginV2),
    V1(PluginV1),
}

impl Instance {
    pub(super) fn metadata(&self, s: &mut Store<CallState>) -> wasmtime::Result<Metadata> {
        Ok(match self {
            Instance::V3(p) => p.call_metadata(s)?,
            Instance::V2(p) => {
                let m = p.call_metadata(s)?;
                metadata(m.name, m.version, m.description, m.config_schema)
            }
            Instance::V1(p) => {
                let m = p.call_metadata(s)?;
                metadata(m.name, m.version, m.description, m.config_schema)
            }
        })
    }

    pub(super) fn validate(
        &self,
        s: &mut Store<CallState>,
        db: &PluginDatabase,
    ) -> wasmtime::Result<Result<(), Vec<Violation>>> {
        Ok(match self {
            Instance::V3(p) => p.call_validate(s, db)?,
            Instance::V2(p) => p.call_validate(s, &database_v2(db))?.map_err(violations_v2),
            Instance::V1(p) => p.call_validate(s, &database_v1(db))?.map_err(violations_v1),
        })
    }

    pub(super) fn render(
        &self,
        s: &mut Store<CallState>,
        db: &PluginDatabase,
    ) -> wasmtime::Result<Result<Rendered, PluginRenderError>> {
        Ok(match self {
            Instance::V3(p) => p.call_render(s, db)?,
            Instance::V2(p) => match p.call_render(s, &database_v2(db))? {
                Ok(r) => Ok(Rendered {
                    objects: r.objects,
                    partitions: r.partitions.into_iter().map(binding_v2).collect(),
                }),
                Err(v2::RenderError::Invalid(v)) => {
                    Err(PluginRenderError::Invalid(violations_v2(v)))
                }
                Err(v2::RenderError::Failed(m)) => Err(PluginRenderError::Failed(m)),
            },
            Instance::V1(p) => match p.call_render(s, &database_v1(db))? {
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
                Err(v1::RenderError::Invalid(v)) => {
                    Err(PluginRenderError::Invalid(violations_v1(v)))
                }
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
            Instance::V3(p) => p.call_status(s, db, observed)?,
            Instance::V2(p) => {
                let r = p.call_status(s, &database_v2(db), observed)?;
                ready_is_available(r.ready_partitions, r.message)
            }
            Instance::V1(p) => {
                let r = p.call_status(s, &database_v1(db), observed)?;
                ready_is_available(r.ready_partitions, r.message)
            }
        })
    }
}

fn metadata(name: String, version: String, description: String, schema: String) -> Metadata {
    Metadata {
        name,
        version,
        description,
        config_schema: schema,
    }
}

/// A report from a world without availability: what is ready is all that is
/// known to serve.
fn ready_is_available(ready: Vec<u32>, message: String) -> StatusReport {
    StatusReport {
        available_partitions: ready.clone(),
        ready_partitions: ready,
        message,
    }
}

fn binding_v2(b: v2::PartitionBinding) -> PartitionBinding {
    PartitionBinding {
        partition: b.partition,
        service: b.service,
        port: b.port,
        placement: match b.placement {
            v2::Placement::Workload(w) => Placement::Workload(WorkloadRef {
                kind: w.kind,
                name: w.name,
            }),
            v2::Placement::Nowhere => Placement::Nowhere,
            v2::Placement::Unknown => Placement::Unknown,
        },
    }
}

// The database record is the same in every world; only its Rust type differs.
macro_rules! database_as {
    ($name:ident, $module:ident) => {
        fn $name(db: &PluginDatabase) -> $module::Database {
            $module::Database {
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
    };
}
database_as!(database_v2, v2);
database_as!(database_v1, v1);

macro_rules! violations_from {
    ($name:ident, $module:ident) => {
        fn $name(v: Vec<$module::Violation>) -> Vec<Violation> {
            v.into_iter()
                .map(|v| Violation {
                    field: v.field,
                    message: v.message,
                })
                .collect()
        }
    };
}
violations_from!(violations_v2, v2);
violations_from!(violations_v1, v1);
