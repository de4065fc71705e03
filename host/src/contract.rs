//! The plugin contract's data types, generated from `wit/storage.wit`
//! (`atoll:storage@0.3.0`, world `plugin`), plus the 0.2.0 and 0.1.0 worlds
//! that older plugins were built against (`host/wit-0.2/`, `host/wit-0.1/`),
//! adapted to 0.3 by `plugin::compat`.
//!
//! A leaf: render, policy, errors and the runtime all speak these types, and
//! this module imports none of them. Objects cross the boundary as JSON text.

use sha2::{Digest as _, Sha256};

/// Generated from `wit/storage.wit` (`atoll:storage@0.3.0`).
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
    });
}

/// Generated from `host/wit-0.2/storage.wit` (`atoll:storage@0.2.0`): only
/// for loading plugins built against it.
pub mod bindings_v0_2 {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "wit-0.2",
    });
}

/// Generated from `host/wit-0.1/storage.wit` (`atoll:storage@0.1.0`): only
/// for loading plugins built against it.
pub mod bindings_v0_1 {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "wit-0.1",
    });
}

pub use bindings::atoll::storage::types::{
    Database as PluginDatabase, Level, Metadata, PartitionBinding, Placement,
    RenderError as PluginRenderError, Rendered, StatusReport, Violation, WorkloadRef,
};

/// A sha256 digest of a component's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}
