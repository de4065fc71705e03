//! The pod half of the output policy: what the pods a render would run may
//! do, in the spirit of the Kubernetes Pod Security Standards, plus the
//! objects around pods that hand out the cluster's power (ServiceAccount
//! tokens, Services reachable from outside the cluster).
//!
//! atoll applies objects with its own rights, so without this a plugin (or a
//! Database author, through `spec.pod`) could run what the namespace's own
//! Pod Security admission would refuse them: atoll is the one writing the
//! StatefulSet, and admission judges the pods only when the StatefulSet
//! controller creates them, far from the Database that asked.
//!
//! Rules, each with the flag that relaxes it (the refusal names both):
//! - [`PodSecurityLevel::Baseline`] (the default): the `baseline` controls of
//!   the Pod Security Standards on every pod template: no `hostNetwork`,
//!   `hostPID`, `hostIPC`, HostProcess, privileged containers, `hostPath`
//!   volumes, `hostPort`s, capabilities added beyond baseline's list (plus
//!   `--allow-capability`), seccomp `Unconfined`, AppArmor `Unconfined`,
//!   custom SELinux user/role/type, `procMount` other than `Default`, or
//!   sysctls outside the safe set. `--pod-security=privileged` turns the pod
//!   controls off.
//! - [`PodSecurityLevel::Restricted`] (`--pod-security=restricted`): also the
//!   `restricted` controls: only ephemeral-safe volume types,
//!   `allowPrivilegeEscalation: false`, `runAsNonRoot: true`, no
//!   `runAsUser: 0`, seccomp `RuntimeDefault` or `Localhost`, capabilities
//!   dropping `ALL` and adding at most `NET_BIND_SERVICE`.
//! - At every level: a pod's ServiceAccount is unset, `default`, one the
//!   same render creates (so named after the Database, and opted in with
//!   `--allow-kind=v1/ServiceAccount`) or one named by
//!   `--allow-service-account`; a Service's `type` is `ClusterIP` (headless
//!   included) unless `--allow-service-type` names it; Secrets of type
//!   `kubernetes.io/service-account-token` are never allowed (they mint a
//!   long-lived token for any ServiceAccount of the namespace).
//!
//! Pod templates are found at `spec.template.spec` (StatefulSet, Deployment,
//! DaemonSet, ReplicaSet, Job and any kind shaped like them),
//! `spec.jobTemplate.spec.template.spec` (CronJob) and `spec` (Pod).
//!
//! Caveat: `automountServiceAccountToken` is not required to be false; the
//! token mounted is the pod's ServiceAccount's, which the rule above
//! confines to `default` (no rights unless someone grants them) or one the
//! operator named. The built-in plugins set it to false anyway.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::error::PolicyError;

/// How much of the Pod Security Standards rendered pods must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum PodSecurityLevel {
    /// No pod controls (ServiceAccounts, Service types and token Secrets
    /// are still checked).
    Privileged,
    /// Pod Security `baseline`: no known privilege escalation.
    #[default]
    Baseline,
    /// Pod Security `restricted`: baseline plus current hardening practice.
    Restricted,
}

impl PodSecurityLevel {
    /// The name as `--pod-security` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurityLevel::Privileged => "privileged",
            PodSecurityLevel::Baseline => "baseline",
            PodSecurityLevel::Restricted => "restricted",
        }
    }
}

impl std::str::FromStr for PodSecurityLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "privileged" => Ok(PodSecurityLevel::Privileged),
            "baseline" => Ok(PodSecurityLevel::Baseline),
            "restricted" => Ok(PodSecurityLevel::Restricted),
            _ => Err(format!(
                "{s:?} is not a pod security level; use privileged, baseline or restricted"
            )),
        }
    }
}

/// Capabilities `baseline` lets a container add.
pub const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls `baseline` allows (namespaced, isolated from other pods).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Volume sources `restricted` allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// SELinux types `baseline` allows.
const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// The flag that relaxes a control, for the refusal.
const PRIVILEGED: &str = "--pod-security=privileged";
const BASELINE: &str = "--pod-security=baseline";

/// What rendered pods, Services and Secrets may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPolicy {
    pub level: PodSecurityLevel,
    /// Capabilities containers may add beyond the level's own list.
    pub extra_capabilities: Vec<String>,
    /// Service types allowed besides `ClusterIP` (e.g. `LoadBalancer`).
    pub service_types: Vec<String>,
    /// ServiceAccounts pods may run as besides `default` and those the same
    /// render creates.
    pub service_accounts: Vec<String>,
}

impl Default for PodPolicy {
    fn default() -> Self {
        PodPolicy {
            level: PodSecurityLevel::Baseline,
            extra_capabilities: Vec::new(),
            service_types: Vec::new(),
            service_accounts: Vec::new(),
        }
    }
}

/// One object under judgement, for the refusal.
struct Subject<'a> {
    kind: &'a str,
    name: &'a str,
}

impl Subject<'_> {
    fn refuse(&self, field: String, problem: impl Into<String>, allow: &str) -> PolicyError {
        PolicyError::PodSecurity {
            kind: self.kind.to_string(),
            name: self.name.to_string(),
            field,
            problem: problem.into(),
            allow: allow.to_string(),
        }
    }
}

impl PodPolicy {
    /// Check every object of a render (after the kind, name and namespace
    /// rules): ServiceAccounts the render creates may be used by its pods.
    ///
    /// # Errors
    /// The first rule an object breaks, naming the object, the field path
    /// and the flag that would allow it.
    pub fn check(&self, objects: &[Value]) -> Result<(), PolicyError> {
        let accounts: BTreeSet<&str> = objects
            .iter()
            .filter(|o| o["kind"] == "ServiceAccount" && o["apiVersion"] == "v1")
            .filter_map(|o| o["metadata"]["name"].as_str())
            .collect();
        objects
            .iter()
            .try_for_each(|object| self.check_object(object, &accounts))
    }

    fn check_object(&self, object: &Value, accounts: &BTreeSet<&str>) -> Result<(), PolicyError> {
        let subject = Subject {
            kind: object["kind"].as_str().unwrap_or_default(),
            name: object["metadata"]["name"].as_str().unwrap_or_default(),
        };
        match (object["apiVersion"].as_str(), subject.kind) {
            (Some("v1"), "Secret") if object["type"] == "kubernetes.io/service-account-token" => {
                return Err(subject.refuse(
                    "type".into(),
                    "is kubernetes.io/service-account-token, which mints a token for a ServiceAccount of the namespace",
                    "nothing: plugins may never render token Secrets (pods get short-lived tokens through projected volumes)",
                ));
            }
            (Some("v1"), "Service") => return self.check_service(&subject, object),
            _ => {}
        }
        for (path, spec, metadata) in pod_specs(subject.kind, object) {
            self.check_pod(&subject, &path, spec, metadata, accounts)?;
        }
        Ok(())
    }

    fn check_service(&self, subject: &Subject, service: &Value) -> Result<(), PolicyError> {
        let kind = service["spec"]["type"].as_str().unwrap_or("ClusterIP");
        if kind == "ClusterIP" || self.service_types.iter().any(|t| t == kind) {
            return Ok(());
        }
        Err(subject.refuse(
            "spec.type".into(),
            format!(
                "is {kind}; only ClusterIP (headless included) Services stay inside the cluster"
            ),
            &format!("--allow-service-type={kind}"),
        ))
    }

    fn check_pod(
        &self,
        subject: &Subject,
        path: &str,
        spec: &Value,
        metadata: &Value,
        accounts: &BTreeSet<&str>,
    ) -> Result<(), PolicyError> {
        for field in ["serviceAccountName", "serviceAccount"] {
            let Some(account) = spec[field].as_str().filter(|a| !a.is_empty()) else {
                continue;
            };
            let allowed = account == "default"
                || accounts.contains(account)
                || self.service_accounts.iter().any(|a| a == account);
            if !allowed {
                return Err(subject.refuse(
                    format!("{path}.{field}"),
                    format!(
                        "is {account}; pods run as `default` or a ServiceAccount the same render creates"
                    ),
                    &format!("--allow-service-account={account}"),
                ));
            }
        }
        if self.level >= PodSecurityLevel::Baseline {
            self.baseline(subject, path, spec, metadata)?;
        }
        if self.level >= PodSecurityLevel::Restricted {
            self.restricted(subject, path, spec)?;
        }
        Ok(())
    }

    fn baseline(
        &self,
        subject: &Subject,
        path: &str,
        spec: &Value,
        metadata: &Value,
    ) -> Result<(), PolicyError> {
        let refuse = |field: String, problem: &str| Err(subject.refuse(field, problem, PRIVILEGED));
        for field in ["hostNetwork", "hostPID", "hostIPC"] {
            if spec[field] == true {
                return refuse(
                    format!("{path}.{field}"),
                    "is true: the pod would share the node's namespaces",
                );
            }
        }
        let pod_context = &spec["securityContext"];
        check_context(subject, &format!("{path}.securityContext"), pod_context)?;
        for (i, volume) in array(&spec["volumes"]).iter().enumerate() {
            if !volume["hostPath"].is_null() {
                return refuse(
                    format!("{path}.volumes[{i}].hostPath"),
                    "is set: the pod would mount the node's file system",
                );
            }
        }
        for (i, sysctl) in array(&pod_context["sysctls"]).iter().enumerate() {
            let name = sysctl["name"].as_str().unwrap_or_default();
            if !SAFE_SYSCTLS.contains(&name) {
                return refuse(
                    format!("{path}.securityContext.sysctls[{i}].name"),
                    &format!("is {name}, which is not one of the safe, namespaced sysctls"),
                );
            }
        }
        for (key, value) in metadata["annotations"].as_object().into_iter().flatten() {
            if key.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && let Some(value) = value.as_str()
                && value != "runtime/default"
                && !value.starts_with("localhost/")
            {
                let metadata_path =
                    format!("{}metadata", path.strip_suffix("spec").unwrap_or(path));
                return Err(subject.refuse(
                    format!("{metadata_path}.annotations[{key}]"),
                    format!("is {value}; AppArmor must be runtime/default or localhost/*"),
                    PRIVILEGED,
                ));
            }
        }
        for (field, i, container) in containers(spec) {
            let at = format!("{path}.{field}[{i}]");
            let context = &container["securityContext"];
            check_context(subject, &format!("{at}.securityContext"), context)?;
            if context["privileged"] == true {
                return refuse(
                    format!("{at}.securityContext.privileged"),
                    "is true: the container would hold every power of the node",
                );
            }
            if let Some(proc_mount) = context["procMount"].as_str()
                && proc_mount != "Default"
            {
                return refuse(
                    format!("{at}.securityContext.procMount"),
                    "unmasks /proc; only Default is allowed",
                );
            }
            for (j, cap) in array(&context["capabilities"]["add"]).iter().enumerate() {
                let cap = cap.as_str().unwrap_or_default();
                let cap = cap.strip_prefix("CAP_").unwrap_or(cap);
                if !BASELINE_CAPABILITIES.contains(&cap) && !self.extra(cap) {
                    return Err(subject.refuse(
                        format!("{at}.securityContext.capabilities.add[{j}]"),
                        format!(
                            "is {cap}, which is not in baseline's list ({})",
                            BASELINE_CAPABILITIES.join(", ")
                        ),
                        &format!("--allow-capability={cap}"),
                    ));
                }
            }
            for (j, port) in array(&container["ports"]).iter().enumerate() {
                if port["hostPort"].as_i64().is_some_and(|p| p != 0) {
                    return refuse(
                        format!("{at}.ports[{j}].hostPort"),
                        "is set: the pod would listen on the node's address",
                    );
                }
            }
        }
        Ok(())
    }

    fn restricted(&self, subject: &Subject, path: &str, spec: &Value) -> Result<(), PolicyError> {
        let refuse = |field: String, problem: &str| Err(subject.refuse(field, problem, BASELINE));
        for (i, volume) in array(&spec["volumes"]).iter().enumerate() {
            let sources = volume.as_object().into_iter().flat_map(|m| m.keys());
            for source in sources.filter(|k| *k != "name") {
                if !RESTRICTED_VOLUMES.contains(&source.as_str()) {
                    return refuse(
                        format!("{path}.volumes[{i}].{source}"),
                        &format!(
                            "is a volume type restricted does not allow ({})",
                            RESTRICTED_VOLUMES.join(", ")
                        ),
                    );
                }
            }
        }
        let pod = &spec["securityContext"];
        if pod["runAsUser"] == 0 {
            return refuse(format!("{path}.securityContext.runAsUser"), "is 0 (root)");
        }
        for (field, i, container) in containers(spec) {
            let at = format!("{path}.{field}[{i}].securityContext");
            let context = &container["securityContext"];
            if context["allowPrivilegeEscalation"] != false {
                return refuse(format!("{at}.allowPrivilegeEscalation"), "must be false");
            }
            let non_root = match &context["runAsNonRoot"] {
                Value::Bool(b) => *b,
                _ => pod["runAsNonRoot"] == true,
            };
            if !non_root {
                return refuse(
                    format!("{at}.runAsNonRoot"),
                    "must be true (here or in the pod's securityContext)",
                );
            }
            if context["runAsUser"] == 0 {
                return refuse(format!("{at}.runAsUser"), "is 0 (root)");
            }
            let seccomp = match context["seccompProfile"]["type"].as_str() {
                Some(t) => Some(t),
                None => pod["seccompProfile"]["type"].as_str(),
            };
            if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
                return refuse(
                    format!("{at}.seccompProfile.type"),
                    "must be RuntimeDefault or Localhost (here or in the pod's securityContext)",
                );
            }
            let caps = &context["capabilities"];
            if !array(&caps["drop"]).iter().any(|c| c == "ALL") {
                return refuse(format!("{at}.capabilities.drop"), "must include ALL");
            }
            for (j, cap) in array(&caps["add"]).iter().enumerate() {
                let cap = cap.as_str().unwrap_or_default();
                let cap = cap.strip_prefix("CAP_").unwrap_or(cap);
                if cap != "NET_BIND_SERVICE" && !self.extra(cap) {
                    return Err(subject.refuse(
                        format!("{at}.capabilities.add[{j}]"),
                        format!("is {cap}; restricted allows only NET_BIND_SERVICE"),
                        &format!("--allow-capability={cap} or {BASELINE}"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn extra(&self, cap: &str) -> bool {
        self.extra_capabilities
            .iter()
            .any(|c| c.strip_prefix("CAP_").unwrap_or(c) == cap)
    }
}

/// The controls a pod and a container `securityContext` share: HostProcess,
/// seccomp, AppArmor and SELinux.
fn check_context(subject: &Subject, at: &str, context: &Value) -> Result<(), PolicyError> {
    let refuse = |field: &str, problem: String| {
        Err(subject.refuse(format!("{at}.{field}"), problem, PRIVILEGED))
    };
    if context["windowsOptions"]["hostProcess"] == true {
        return refuse(
            "windowsOptions.hostProcess",
            "is true: a HostProcess container runs on the Windows node itself".into(),
        );
    }
    for profile in ["seccompProfile", "appArmorProfile"] {
        if context[profile]["type"] == "Unconfined" {
            return refuse(&format!("{profile}.type"), "is Unconfined".into());
        }
    }
    let selinux = &context["seLinuxOptions"];
    if let Some(t) = selinux["type"].as_str()
        && !SELINUX_TYPES.contains(&t)
    {
        return refuse(
            "seLinuxOptions.type",
            format!("is {t}; allowed: {}", SELINUX_TYPES[1..].join(", ")),
        );
    }
    for field in ["user", "role"] {
        if selinux[field].as_str().is_some_and(|v| !v.is_empty()) {
            return refuse(&format!("seLinuxOptions.{field}"), "is set".into());
        }
    }
    Ok(())
}

/// Every pod spec of `object`: its path, the spec and the pod's metadata.
fn pod_specs<'a>(kind: &str, object: &'a Value) -> Vec<(String, &'a Value, &'a Value)> {
    let mut found = Vec::new();
    if kind == "Pod" && object["spec"].is_object() {
        found.push(("spec".to_string(), &object["spec"], &object["metadata"]));
    }
    let template = &object["spec"]["template"];
    if template["spec"].is_object() {
        found.push((
            "spec.template.spec".to_string(),
            &template["spec"],
            &template["metadata"],
        ));
    }
    let job = &object["spec"]["jobTemplate"]["spec"]["template"];
    if job["spec"].is_object() {
        found.push((
            "spec.jobTemplate.spec.template.spec".to_string(),
            &job["spec"],
            &job["metadata"],
        ));
    }
    found
}

/// Every container of a pod spec, init and ephemeral ones included.
fn containers(spec: &Value) -> impl Iterator<Item = (&'static str, usize, &Value)> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |field| {
            array(&spec[field])
                .iter()
                .enumerate()
                .map(move |(i, c)| (field, i, c))
        })
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}
