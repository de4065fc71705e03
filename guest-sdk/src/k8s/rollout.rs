//! How workloads change and how many of their pods may be down: the update
//! strategies every builder sets and the PodDisruptionBudgets plugins render.
//!
//! A storage group keeps serving through a rollout only if no more of its
//! pods are down at once than its quorum allows. The builders therefore state
//! their strategy explicitly rather than inherit the API server's defaults
//! (which a cluster-wide feature gate such as `MaxUnavailableStatefulSet` can
//! change): a StatefulSet replaces one pod at a time, a Deployment starts a
//! new pod before stopping an old one.

use k8s_openapi::api::apps::v1::{
    DeploymentStrategy, RollingUpdateDeployment, RollingUpdateStatefulSetStrategy,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Labels, meta, selector};

/// `RollingUpdate` over every ordinal (`partition: 0`), one pod at a time:
/// the StatefulSet waits for each replaced pod to be Ready before the next,
/// so a majority of a quorum group stays up. No `maxUnavailable` is set: it
/// means 1 and is only honoured behind a feature gate.
pub fn statefulset_strategy() -> StatefulSetUpdateStrategy {
    StatefulSetUpdateStrategy {
        type_: Some("RollingUpdate".to_string()),
        rolling_update: Some(RollingUpdateStatefulSetStrategy {
            partition: Some(0),
            max_unavailable: None,
        }),
    }
}

/// `RollingUpdate` with `maxUnavailable: 0` and `maxSurge: 1`: a new pod is
/// started and Ready before an old one stops, so capacity never drops.
pub fn deployment_strategy() -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".to_string()),
        rolling_update: Some(RollingUpdateDeployment {
            max_unavailable: Some(IntOrString::Int(0)),
            max_surge: Some(IntOrString::Int(1)),
        }),
    }
}

/// A [`PodDisruptionBudget`] keeping at least `min_available` pods matching
/// `selector` up during voluntary disruptions (node drains).
pub fn pod_disruption_budget(
    name: &str,
    selector_labels: &Labels,
    min_available: i32,
) -> PodDisruptionBudget {
    budget(
        name,
        selector_labels,
        PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(min_available)),
            ..Default::default()
        },
    )
}

/// A [`PodDisruptionBudget`] letting at most `max_unavailable` pods matching
/// `selector` be down at once for voluntary disruptions. It scales with the
/// replica count, and with a single replica it still lets a drain evict it
/// (a `minAvailable` equal to the replicas would block every drain).
pub fn pod_disruption_budget_max_unavailable(
    name: &str,
    selector_labels: &Labels,
    max_unavailable: i32,
) -> PodDisruptionBudget {
    budget(
        name,
        selector_labels,
        PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            ..Default::default()
        },
    )
}

fn budget(
    name: &str,
    selector_labels: &Labels,
    spec: PodDisruptionBudgetSpec,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(name, selector_labels),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(selector(selector_labels)),
            ..spec
        }),
        status: None,
    }
}
