//! Typed builders for the objects storage plugins emit, over k8s-openapi.
//!
//! Plugins never write Kubernetes JSON by hand: they compose these builders and
//! push the results into an [`Output`](crate::Output). Builders set only what a
//! plugin asked for plus safe defaults; the host adds namespace, owner
//! references and atoll's labels.
//!
//! Pods meet the Pod Security Standards' `restricted` level by default, so
//! they pass the host's output policy at any `--pod-security` level: every
//! container runs as a non-root user ([`DEFAULT_USER`] unless
//! [`PodBuilder::run_as`] names the image's own), without privilege
//! escalation, with every capability dropped and the runtime's default
//! seccomp profile; the pod mounts no ServiceAccount token (storage nodes do
//! not call the Kubernetes API) and its volumes belong to the user's group
//! (`fsGroup`). The user and the container-level settings are set on each
//! container too, so they hold when a Database's `spec.pod.securityContext`
//! replaces the pod's.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Violation, quantity};

mod rollout;
pub use rollout::{
    deployment_strategy, pod_disruption_budget, pod_disruption_budget_max_unavailable,
    statefulset_strategy,
};

/// Label map, ordered so rendered output is deterministic.
pub type Labels = BTreeMap<String, String>;

/// Build a label map from pairs.
pub fn labels<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

/// `metadata` with a name and labels; namespace and owner are the host's job.
pub fn meta(name: &str, labels: &Labels) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(labels.clone()),
        ..Default::default()
    }
}

pub(crate) fn selector(labels: &Labels) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.clone()),
        ..Default::default()
    }
}

/// `imagePullPolicy`, as users write it in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Container `resources` as users write them in config: quantities by
/// resource name, e.g. `requests: {cpu: 500m, memory: 1Gi}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
}

impl Resources {
    /// Violations for quantities that are not Kubernetes quantities; `path` is
    /// the config path of this field, e.g. `resources`.
    pub fn check(&self, path: &str) -> Vec<Violation> {
        [("requests", &self.requests), ("limits", &self.limits)]
            .into_iter()
            .flat_map(|(kind, map)| {
                map.iter().filter_map(move |(name, q)| {
                    quantity::check(q)
                        .err()
                        .map(|e| Violation::config(&format!("{path}.{kind}.{name}"), e))
                })
            })
            .collect()
    }

    fn to_k8s(&self) -> Option<ResourceRequirements> {
        if self.requests.is_empty() && self.limits.is_empty() {
            return None;
        }
        let q = |m: &BTreeMap<String, String>| {
            (!m.is_empty()).then(|| {
                m.iter()
                    .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                    .collect()
            })
        };
        Some(ResourceRequirements {
            requests: q(&self.requests),
            limits: q(&self.limits),
            ..Default::default()
        })
    }
}

/// The user (and group) pods run as unless [`PodBuilder::run_as`] says
/// otherwise: any non-root id works for images that need no particular
/// user, and a numeric one lets the kubelet verify `runAsNonRoot`.
pub const DEFAULT_USER: i64 = 1000;

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_string(),
        ..Default::default()
    }
}

/// A container's `restricted` security context: non-root, no privilege
/// escalation, no capabilities, the runtime's seccomp profile.
fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Default::default()
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..Default::default()
    }
}

/// Builds a [`Container`], `restricted` by default (see the module docs).
#[derive(Debug, Clone)]
pub struct ContainerBuilder(Container);

impl ContainerBuilder {
    /// A container running `image`.
    pub fn new(name: &str, image: &str) -> Self {
        ContainerBuilder(Container {
            name: name.to_string(),
            image: Some(image.to_string()),
            security_context: Some(restricted_container()),
            ..Default::default()
        })
    }

    pub fn pull_policy(mut self, policy: PullPolicy) -> Self {
        self.0.image_pull_policy = Some(policy.as_str().to_string());
        self
    }

    pub fn command<S: Into<String>>(mut self, command: impl IntoIterator<Item = S>) -> Self {
        self.0.command = Some(command.into_iter().map(Into::into).collect());
        self
    }

    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.0.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// A named TCP port.
    pub fn port(mut self, name: &str, port: u16) -> Self {
        self.0
            .ports
            .get_or_insert_with(Vec::new)
            .push(ContainerPort {
                name: Some(name.to_string()),
                container_port: port.into(),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            });
        self
    }

    /// An environment variable with a literal value.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.0.env.get_or_insert_with(Vec::new).push(EnvVar {
            name: name.to_string(),
            value: Some(value.to_string()),
            ..Default::default()
        });
        self
    }

    /// An environment variable from the pod's own fields, e.g. `metadata.name`.
    pub fn env_from_field(mut self, name: &str, field_path: &str) -> Self {
        self.0.env.get_or_insert_with(Vec::new).push(EnvVar {
            name: name.to_string(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: field_path.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        self
    }

    /// Mount volume `volume` at `path`.
    pub fn mount(mut self, volume: &str, path: &str, read_only: bool) -> Self {
        self.0
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: volume.to_string(),
                mount_path: path.to_string(),
                read_only: read_only.then_some(true),
                ..Default::default()
            });
        self
    }

    pub fn readiness(mut self, probe: Probe) -> Self {
        self.0.readiness_probe = Some(probe);
        self
    }

    pub fn liveness(mut self, probe: Probe) -> Self {
        self.0.liveness_probe = Some(probe);
        self
    }

    pub fn resources(mut self, resources: &Resources) -> Self {
        self.0.resources = resources.to_k8s();
        self
    }

    pub fn build(self) -> Container {
        self.0
    }
}

/// A probe that succeeds when the named port accepts TCP connections.
pub fn tcp_probe(port: &str, initial_delay_seconds: i32, period_seconds: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(port.to_string()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial_delay_seconds),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// A probe that runs `command` in the container.
pub fn exec_probe<S: Into<String>>(
    command: impl IntoIterator<Item = S>,
    initial_delay_seconds: i32,
    period_seconds: i32,
) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(command.into_iter().map(Into::into).collect()),
        }),
        initial_delay_seconds: Some(initial_delay_seconds),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// Spread pods matching `selector` across `topology_key` domains (e.g.
/// `kubernetes.io/hostname`). `required` makes it a scheduling constraint
/// rather than a preference: pods stay Pending if domains run out.
pub fn anti_affinity(selector_labels: &Labels, topology_key: &str, required: bool) -> Affinity {
    let term = PodAffinityTerm {
        label_selector: Some(selector(selector_labels)),
        topology_key: topology_key.to_string(),
        ..Default::default()
    };
    let anti = if required {
        PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..Default::default()
        }
    } else {
        PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term,
                },
            ]),
            ..Default::default()
        }
    };
    Affinity {
        pod_anti_affinity: Some(anti),
        ..Default::default()
    }
}

/// Builds the pod template shared by StatefulSets and Deployments,
/// `restricted` by default (see the module docs).
#[derive(Debug, Clone)]
pub struct PodBuilder {
    labels: Labels,
    spec: PodSpec,
    /// User and group every container runs as, and the volumes' group.
    user: (i64, i64),
}

impl PodBuilder {
    /// Pods carrying `labels` (which must include the workload's selector).
    pub fn new(labels: &Labels) -> Self {
        PodBuilder {
            labels: labels.clone(),
            spec: PodSpec {
                automount_service_account_token: Some(false),
                ..Default::default()
            },
            user: (DEFAULT_USER, DEFAULT_USER),
        }
    }

    /// Run as `uid`:`gid` (non-zero), the user an image's files belong to,
    /// e.g. 999:999 for the official redis image; volumes get group `gid`.
    pub fn run_as(mut self, uid: i64, gid: i64) -> Self {
        self.user = (uid, gid);
        self
    }

    pub fn container(mut self, container: Container) -> Self {
        self.spec.containers.push(container);
        self
    }

    /// Volume `name` holding ConfigMap `config_map`'s keys as files.
    pub fn config_map_volume(mut self, name: &str, config_map: &str) -> Self {
        self.volume(Volume {
            name: name.to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        });
        self
    }

    /// Volume `name` that lives as long as the pod.
    pub fn empty_dir_volume(mut self, name: &str) -> Self {
        self.volume(Volume {
            name: name.to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        self
    }

    pub fn affinity(mut self, affinity: Affinity) -> Self {
        self.spec.affinity = Some(affinity);
        self
    }

    /// Grace period for shutdown, so replicas can leave a quorum cleanly.
    pub fn termination_grace_period(mut self, seconds: i64) -> Self {
        self.spec.termination_grace_period_seconds = Some(seconds);
        self
    }

    fn volume(&mut self, volume: Volume) {
        self.spec.volumes.get_or_insert_with(Vec::new).push(volume);
    }

    pub fn build(mut self) -> PodTemplateSpec {
        let (uid, gid) = self.user;
        // On each container too, so a Database's `spec.pod.securityContext`
        // (which replaces the pod's) leaves the user in place.
        for container in self.spec.containers.iter_mut() {
            let context = container
                .security_context
                .get_or_insert_with(SecurityContext::default);
            context.run_as_user.get_or_insert(uid);
            context.run_as_group.get_or_insert(gid);
        }
        self.spec.security_context = Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(gid),
            fs_group: Some(gid),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..Default::default()
        });
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(self.labels),
                ..Default::default()
            }),
            spec: Some(self.spec),
        }
    }
}

/// Builds a [`StatefulSet`] with parallel pod management (replicas of a
/// storage group do not need ordered start-up), rolling updates one pod at a
/// time ([`statefulset_strategy`]) and PVCs retained on deletion
/// and scale-down, so data outlives its pods unless a human removes it.
#[derive(Debug, Clone)]
pub struct StatefulSetBuilder {
    name: String,
    selector: Labels,
    replicas: i32,
    service_name: String,
    pod: PodTemplateSpec,
    claims: Vec<PersistentVolumeClaim>,
}

impl StatefulSetBuilder {
    /// `name` selecting pods by `selector`, governed by headless Service
    /// `service_name`.
    pub fn new(name: &str, selector: &Labels, service_name: &str, pod: PodTemplateSpec) -> Self {
        StatefulSetBuilder {
            name: name.to_string(),
            selector: selector.clone(),
            replicas: 1,
            service_name: service_name.to_string(),
            pod,
            claims: Vec::new(),
        }
    }

    pub fn replicas(mut self, replicas: i32) -> Self {
        self.replicas = replicas;
        self
    }

    /// A PersistentVolumeClaim template, one claim per replica.
    pub fn volume_claim(mut self, claim: PersistentVolumeClaim) -> Self {
        self.claims.push(claim);
        self
    }

    pub fn build(self) -> StatefulSet {
        StatefulSet {
            metadata: meta(&self.name, &self.selector),
            spec: Some(StatefulSetSpec {
                replicas: Some(self.replicas),
                selector: selector(&self.selector),
                service_name: Some(self.service_name),
                pod_management_policy: Some("Parallel".to_string()),
                update_strategy: Some(statefulset_strategy()),
                template: self.pod,
                persistent_volume_claim_retention_policy: (!self.claims.is_empty()).then(|| {
                    StatefulSetPersistentVolumeClaimRetentionPolicy {
                        when_deleted: Some("Retain".to_string()),
                        when_scaled: Some("Retain".to_string()),
                    }
                }),
                volume_claim_templates: (!self.claims.is_empty()).then_some(self.claims),
                ..Default::default()
            }),
            status: None,
        }
    }
}

/// A [`Deployment`] of `replicas` stateless pods selected by `selector`,
/// rolled out surge-first ([`deployment_strategy`]).
pub fn deployment(
    name: &str,
    selector_labels: &Labels,
    replicas: i32,
    pod: PodTemplateSpec,
) -> Deployment {
    Deployment {
        metadata: meta(name, selector_labels),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: selector(selector_labels),
            template: pod,
            strategy: Some(deployment_strategy()),
            ..Default::default()
        }),
        status: None,
    }
}

/// Builds a [`Service`].
#[derive(Debug, Clone)]
pub struct ServiceBuilder {
    name: String,
    labels: Labels,
    selector: Labels,
    ports: Vec<ServicePort>,
    headless: bool,
}

impl ServiceBuilder {
    /// Service `name` routing to pods matching `selector`; the Service carries
    /// the selector labels too, so `kubectl get -l` finds it with its pods.
    pub fn new(name: &str, selector: &Labels) -> Self {
        ServiceBuilder {
            name: name.to_string(),
            labels: selector.clone(),
            selector: selector.clone(),
            ports: Vec::new(),
            headless: false,
        }
    }

    /// An extra label on the Service itself (not part of the selector).
    pub fn label(mut self, key: &str, value: impl Into<String>) -> Self {
        self.labels.insert(key.to_string(), value.into());
        self
    }

    /// A TCP port forwarding to the pods' port of the same name.
    pub fn port(mut self, name: &str, port: u16) -> Self {
        self.ports.push(ServicePort {
            name: Some(name.to_string()),
            port: port.into(),
            target_port: Some(IntOrString::String(name.to_string())),
            protocol: Some("TCP".to_string()),
            ..Default::default()
        });
        self
    }

    /// Headless (`clusterIP: None`) and publishing not-ready addresses, so
    /// replicas can find each other by DNS before they are ready — which a
    /// consensus group needs in order to become ready at all.
    pub fn headless(mut self) -> Self {
        self.headless = true;
        self
    }

    pub fn build(self) -> Service {
        Service {
            metadata: meta(&self.name, &self.labels),
            spec: Some(ServiceSpec {
                selector: Some(self.selector),
                ports: Some(self.ports),
                cluster_ip: self.headless.then(|| "None".to_string()),
                publish_not_ready_addresses: self.headless.then_some(true),
                ..Default::default()
            }),
            status: None,
        }
    }
}

/// A [`ConfigMap`] holding `data` (file name → contents).
pub fn config_map<K: Into<String>, V: Into<String>>(
    name: &str,
    labels: &Labels,
    data: impl IntoIterator<Item = (K, V)>,
) -> ConfigMap {
    ConfigMap {
        metadata: meta(name, labels),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ),
        ..Default::default()
    }
}

/// A ReadWriteOnce PersistentVolumeClaim template named `name` requesting
/// `size`, in `storage_class` or the cluster default.
pub fn volume_claim(name: &str, size: &str, storage_class: Option<&str>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: storage_class.map(str::to_string),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(size.to_string()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// `volumeClaimTemplate` as users write it in config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeClaimConfig {
    /// Requested size, a Kubernetes quantity such as `10Gi`.
    pub size: String,
    /// StorageClass name; the cluster default when absent.
    #[serde(default)]
    pub storage_class_name: Option<String>,
}

impl VolumeClaimConfig {
    /// Violations of this field at config path `path`.
    pub fn check(&self, path: &str) -> Vec<Violation> {
        quantity::check(&self.size)
            .err()
            .map(|e| Violation::config(&format!("{path}.size"), e))
            .into_iter()
            .collect()
    }

    /// The claim template named `name`.
    pub fn claim(&self, name: &str) -> PersistentVolumeClaim {
        volume_claim(name, &self.size, self.storage_class_name.as_deref())
    }
}
