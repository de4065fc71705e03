//! The atoll guest SDK: write a storage plugin as plain Rust, export it as a
//! WebAssembly component with one macro, and unit-test it natively.
//!
//! A plugin is a type implementing [`Plugin`]. It declares a config type (parsed
//! from `spec.storage.config` with serde, and published as a JSON schema derived
//! with schemars), renders typed Kubernetes objects with the [`k8s`] builders,
//! and judges readiness from observed objects.
//!
//! ```
//! use atoll_guest::k8s::{ServiceBuilder, labels};
//! use atoll_guest::{Database, Observed, Output, Placement, Plugin, StatusReport};
//!
//! /// One Service per partition, in front of pods some other tool runs.
//! struct Echo;
//!
//! impl Plugin for Echo {
//!     type Config = atoll_guest::serde_json::Value;
//!     const NAME: &'static str = "echo";
//!     const VERSION: &'static str = "0.1.0";
//!     const DESCRIPTION: &'static str = "A Service per partition.";
//!
//!     fn render(db: &Database, _: &Self::Config, out: &mut Output) -> Result<(), String> {
//!         let selector = labels([("app", db.name.as_str())]);
//!         for p in 1..=db.partitions {
//!             let name = format!("{}-p{p}", db.name);
//!             out.push(ServiceBuilder::new(&name, &selector).port("api", 5678).build());
//!             // The echo servers keep nothing: moving them loses no data.
//!             out.bind(p, name, 5678, Placement::Nowhere);
//!         }
//!         Ok(())
//!     }
//!
//!     fn status(db: &Database, _: &Self::Config, _: &Observed) -> StatusReport {
//!         let ready_partitions = (1..=db.partitions).collect();
//!         StatusReport { ready_partitions, message: "always ready".into(), ..Default::default() }
//!     }
//! }
//!
//! atoll_guest::export!(Echo);
//! ```
//!
//! Guarantees the SDK gives a plugin:
//! - `render` and `status` only see a config that parsed, with unknown fields
//!   rejected; `render` only runs when [`Plugin::check`] found no violation.
//! - Every violation's field path is rooted at the Database (`spec.storage.config.…`).
//!
//! What the SDK cannot do for a plugin: the host enforces the output policy
//! (allowed kinds, namespace, name prefix, size) and adds labels and owner
//! references, so a plugin need not set them, and cannot escape them.

pub mod atomix;
#[cfg(any(test, all(target_arch = "wasm32", feature = "bump-allocator")))]
mod bump;
mod config;
pub mod dispatch;
pub mod k8s;
pub mod log;
mod output;
pub mod quantity;
pub mod testing;
mod types;

#[cfg(target_arch = "wasm32")]
mod wasm;

/// Every call runs in a fresh instance, so allocation is a pointer bump
/// (see `bump.rs`; default feature `bump-allocator`).
#[cfg(all(target_arch = "wasm32", feature = "bump-allocator"))]
#[global_allocator]
static ALLOCATOR: bump::Bump = bump::Bump::new();

pub use config::{config_schema, parse_config};
pub use output::{Observed, Output};
pub use types::{
    Database, Level, Metadata, PartitionBinding, Placement, RenderError, Rendered, StatusReport,
    Violation,
};

// Re-exported so plugins need no direct dependency to name these.
pub use k8s_openapi;
pub use schemars;
pub use serde;
pub use serde_json;

// Lets the generated bindings refer to this crate by name from inside it.
extern crate self as atoll_guest;

/// A storage plugin: domain logic only. The SDK does config parsing, JSON
/// encoding and the component ABI.
pub trait Plugin {
    /// `spec.storage.config`. Derive `Deserialize` (with
    /// `#[serde(deny_unknown_fields, rename_all = "camelCase")]`), `JsonSchema`
    /// and `Default`; defaults belong on the fields.
    type Config: serde::de::DeserializeOwned + schemars::JsonSchema;

    /// The name Databases use in `spec.storage.plugin`.
    const NAME: &'static str;
    /// Semantic version of the plugin, usually `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;
    /// One line for humans.
    const DESCRIPTION: &'static str;

    /// Checks beyond what the config type's serde rules express (ranges,
    /// relations between fields). Return every violation, not just the first.
    fn check(db: &Database, config: &Self::Config) -> Vec<Violation> {
        let _ = (db, config);
        Vec::new()
    }

    /// Push the desired objects and one partition binding per partition,
    /// each saying where the partition's data lives ([`Placement`]).
    /// Only called when [`Plugin::check`] returned nothing.
    ///
    /// # Errors
    /// Why this Database cannot be rendered (reported as `RenderFailed`).
    fn render(db: &Database, config: &Self::Config, out: &mut Output) -> Result<(), String>;

    /// Which partitions are ready, judged from the observed objects.
    /// Only called when [`Plugin::check`] returned nothing.
    fn status(db: &Database, config: &Self::Config, observed: &Observed) -> StatusReport;
}

/// Export a [`Plugin`] as the `atoll:storage/plugin` component world.
///
/// On `wasm32` this emits the component exports; on other targets it emits
/// nothing, so the same crate builds natively for unit tests.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        // The component ABI glue wit-bindgen generates (exported symbols,
        // raw pointers across the boundary) is the guest's only unsafe code.
        #[allow(unsafe_code)]
        const _: () = {
            type AtollComponent = $crate::__private::Component<$plugin>;
            $crate::__private::bindings::__export_plugin!(
                AtollComponent with_types_in $crate::__private::bindings
            );
        };
    };
}

#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::wasm::{Component, bindings};
    #[cfg(target_arch = "wasm32")]
    pub use wit_bindgen;
}
