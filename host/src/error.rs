//! atoll's error types: one per concern, each variant something a user can act on.

use std::time::Duration;

use crate::api::Reason;
use crate::contract::Violation;

/// Loading or calling a plugin failed. The host keeps serving; the error is
/// reported on the Database (or plugin) concerned.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read {origin}: {reason}")]
    Read { origin: String, reason: String },

    #[error("{origin} is not a WebAssembly component: {reason}")]
    NotAComponent { origin: String, reason: String },

    #[error(
        "{origin} does not implement the atoll:storage/plugin world at a version atoll loads (0.3.x, or 0.2.x and 0.1.x through their adapters): {reason}"
    )]
    WrongWorld { origin: String, reason: String },

    #[error("{origin} returned unusable metadata: {reason}")]
    BadMetadata { origin: String, reason: String },

    #[error(
        "plugin {plugin}: {function}() did not finish within its {limit:?} deadline and was stopped"
    )]
    Timeout {
        plugin: String,
        function: &'static str,
        limit: Duration,
    },

    #[error(
        "plugin {plugin}: {function}() tried to grow its memory to {requested} bytes, over its limit of {limit} bytes, and was stopped"
    )]
    MemoryLimit {
        plugin: String,
        function: &'static str,
        limit: usize,
        requested: usize,
    },

    #[error(
        "plugin {plugin}: {function}() went over a limit of its sandbox: {reason}, and was stopped"
    )]
    StoreLimit {
        plugin: String,
        function: &'static str,
        reason: String,
    },

    #[error("plugin {plugin}: {function}() returned too much: {reason}")]
    Oversized {
        plugin: String,
        function: &'static str,
        reason: String,
    },

    #[error("plugin {plugin}: {function}() trapped: {message}")]
    Trap {
        plugin: String,
        function: &'static str,
        message: String,
    },

    #[error("the WebAssembly engine failed: {0}")]
    Engine(String),

    #[error(transparent)]
    Budget(#[from] crate::plugin::budget::BudgetError),

    #[error(transparent)]
    SealKey(#[from] crate::plugin::SealKeyError),
}

impl PluginError {
    pub(crate) fn engine(e: wasmtime::Error) -> Self {
        PluginError::Engine(format!("{e:#}"))
    }
}

/// Rendered output broke the output policy. Nothing of the render is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("plugin rendered {count} objects; at most {max} are allowed")]
    TooManyObjects { count: usize, max: usize },

    #[error("plugin rendered {bytes} bytes of objects; at most {max} are allowed")]
    TooLarge { bytes: usize, max: usize },

    #[error(
        "object #{index} is not a JSON object with apiVersion, kind and metadata.name: {reason}"
    )]
    Malformed { index: usize, reason: String },

    #[error(
        "{kind} {name} ({api_version}) is not an allowed kind; plugins may render only: {allowed}"
    )]
    KindNotAllowed {
        api_version: String,
        kind: String,
        name: String,
        allowed: String,
    },

    #[error(
        "{kind} {name} is in namespace {namespace}; objects must be in the Database's namespace {expected}"
    )]
    WrongNamespace {
        kind: String,
        name: String,
        namespace: String,
        expected: String,
    },

    #[error(
        "{kind} {name} does not start with the Database name; names must be {prefix} or start with {prefix}-"
    )]
    NamePrefix {
        kind: String,
        name: String,
        prefix: String,
    },

    #[error("{kind} {name} is rendered twice")]
    Duplicate { kind: String, name: String },

    #[error(
        "{kind} {name} is reserved: atoll keeps it as the Database's partition-group Service (DNS SRV discovery of every partition); render the plugin's Services under other names, e.g. {name}-hs"
    )]
    Reserved { kind: String, name: String },

    #[error("partition bindings are wrong: {0}")]
    Bindings(String),

    #[error("{kind} {name}: {field} {problem}; to allow it: {allow}")]
    PodSecurity {
        kind: String,
        name: String,
        /// Path of the offending field inside the object, e.g.
        /// `spec.template.spec.containers[0].securityContext.privileged`.
        field: String,
        problem: String,
        /// The `atoll run`/`atoll render` flag (and Helm value) relaxing it.
        allow: String,
    },
}

/// Rendering a Database failed; says whose fault and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{}", format_violations(.0))]
    Invalid(Vec<Violation>),

    #[error("no storage plugin named {name:?} is loaded{why}; available: {available}")]
    UnknownPlugin {
        name: String,
        /// Why, when atoll knows (a removed or failed plugin), as ` (...)`.
        why: String,
        available: String,
    },

    #[error(
        "spec.storage.version requires {plugin} {required}, but no loaded {plugin} satisfies it (loaded: {loaded}); change the requirement or load a matching version (a StoragePlugin spec version or a labelled ConfigMap)"
    )]
    VersionMismatch {
        plugin: String,
        required: String,
        loaded: String,
    },

    #[error(
        "spec.storage.digest pins {plugin} {digest}, which is not loaded (loaded: {loaded}); list it in StoragePlugin {plugin}'s spec.versions or pin a loaded digest"
    )]
    DigestNotLoaded {
        plugin: String,
        digest: String,
        loaded: String,
    },

    #[error("plugin {plugin} could not render: {message}")]
    Failed { plugin: String, message: String },

    #[error(transparent)]
    Plugin(#[from] PluginError),

    #[error("plugin {plugin} broke the output policy: {error}")]
    Policy {
        plugin: String,
        error: Box<PolicyError>,
    },
}

impl RenderError {
    /// The condition reason this error reports.
    pub fn reason(&self) -> Reason {
        match self {
            RenderError::Invalid(_) => Reason::InvalidSpec,
            RenderError::UnknownPlugin { .. } => Reason::UnknownPlugin,
            RenderError::VersionMismatch { .. } | RenderError::DigestNotLoaded { .. } => {
                Reason::PluginVersionMismatch
            }
            RenderError::Failed { .. } => Reason::RenderFailed,
            RenderError::Plugin(_) => Reason::PluginError,
            RenderError::Policy { .. } => Reason::PolicyViolation,
        }
    }

    /// Whether the error may pass without a spec change (a plugin trapped,
    /// or is not loaded yet), so a retry soon is worth it; invalid specs wait
    /// for the user.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RenderError::Plugin(_)
                | RenderError::UnknownPlugin { .. }
                | RenderError::DigestNotLoaded { .. }
        )
    }

    /// The output-policy violation, if that is why the render failed.
    pub fn policy(&self) -> Option<&PolicyError> {
        match self {
            RenderError::Policy { error, .. } => Some(error),
            _ => None,
        }
    }
}

fn format_violations(v: &[Violation]) -> String {
    v.iter()
        .map(|v| format!("{}: {}", v.field, v.message))
        .collect::<Vec<_>>()
        .join("; ")
}
