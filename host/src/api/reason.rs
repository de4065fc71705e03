//! Every reason atoll writes on a Database condition, in one place.

use std::fmt;

/// The `reason` of a Database condition (and of the Warning Event a problem
/// also produces). Each is CamelCase, stable, and documented in
/// docs/architecture.md; the same string labels `atoll_reconcile_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Every replica of every partition is ready and no rollout is under
    /// way (`Ready=True`).
    AllPartitionsReady,
    /// Children match the render but some partitions are not ready yet.
    PartitionsNotReady,
    /// Every partition serves but some miss replicas (`Ready=False` while
    /// `Available=True`).
    ReplicasNotReady,
    /// A workload's pods are being replaced with its new template
    /// (`Progressing=True`, `Ready=False`).
    RollingOut,
    /// Every partition can serve now (`Available=True`).
    AllPartitionsAvailable,
    /// Some partition cannot serve now (`Available=False`).
    PartitionsUnavailable,
    /// Nothing left to do (`Progressing=False`).
    Converged,
    /// Waiting for partitions to become ready (`Progressing=True`).
    WaitingForPartitions,
    /// Nothing is wrong (`Degraded=False`).
    Healthy,
    /// The Database spec breaks a rule of atoll or of its plugin.
    InvalidSpec,
    /// No plugin of the requested name is loaded.
    UnknownPlugin,
    /// The loaded plugin does not satisfy `spec.storage.version`.
    PluginVersionMismatch,
    /// The plugin could not render this Database.
    RenderFailed,
    /// A plugin call trapped, timed out or ran out of memory.
    PluginError,
    /// The render broke the output policy.
    PolicyViolation,
    /// The change would delete children that hold data; nothing was done.
    DataLossRefused,
    /// A new plugin version stopped rendering children; they are kept
    /// until the Database approves.
    PruneRefused,
    /// The API server refused a write of a child.
    ApplyFailed,
    /// A rendered name is taken by an object that is not this Database's.
    NameConflict,
    /// A Kubernetes API request failed; the reconcile is retried.
    ApiError,
}

impl Reason {
    /// The CamelCase string written to conditions, Events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AllPartitionsReady => "AllPartitionsReady",
            Reason::PartitionsNotReady => "PartitionsNotReady",
            Reason::ReplicasNotReady => "ReplicasNotReady",
            Reason::RollingOut => "RollingOut",
            Reason::AllPartitionsAvailable => "AllPartitionsAvailable",
            Reason::PartitionsUnavailable => "PartitionsUnavailable",
            Reason::Converged => "Converged",
            Reason::WaitingForPartitions => "WaitingForPartitions",
            Reason::Healthy => "Healthy",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::UnknownPlugin => "UnknownPlugin",
            Reason::PluginVersionMismatch => "PluginVersionMismatch",
            Reason::RenderFailed => "RenderFailed",
            Reason::PluginError => "PluginError",
            Reason::PolicyViolation => "PolicyViolation",
            Reason::DataLossRefused => "DataLossRefused",
            Reason::PruneRefused => "PruneRefused",
            Reason::ApplyFailed => "ApplyFailed",
            Reason::NameConflict => "NameConflict",
            Reason::ApiError => "ApiError",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    /// Conditions need CamelCase reasons (the API server validates
    /// `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`), distinct per variant.
    #[test]
    fn reasons_are_camel_case_and_distinct() {
        let all = [
            Reason::AllPartitionsReady,
            Reason::PartitionsNotReady,
            Reason::ReplicasNotReady,
            Reason::RollingOut,
            Reason::AllPartitionsAvailable,
            Reason::PartitionsUnavailable,
            Reason::Converged,
            Reason::WaitingForPartitions,
            Reason::Healthy,
            Reason::InvalidSpec,
            Reason::UnknownPlugin,
            Reason::PluginVersionMismatch,
            Reason::RenderFailed,
            Reason::PluginError,
            Reason::PolicyViolation,
            Reason::DataLossRefused,
            Reason::PruneRefused,
            Reason::ApplyFailed,
            Reason::NameConflict,
            Reason::ApiError,
        ];
        let mut seen = std::collections::BTreeSet::new();
        for r in all {
            let s = r.as_str();
            assert!(
                s.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
                "{s}"
            );
            assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
            assert_eq!(s, format!("{r:?}"), "the string is the variant's name");
            assert!(seen.insert(s), "{s} twice");
        }
    }
}
