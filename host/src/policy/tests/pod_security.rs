//! The pod rules of the output policy: one pod breaking one control at a
//! time, judged at each level, and the refusal's field path and flag.

use serde_json::{Value, json};

use crate::error::PolicyError;
use crate::policy::{AllowedKind, OutputPolicy, PodPolicy, PodSecurityLevel};

use super::{owner, rendered, service};

/// A StatefulSet whose pod meets `restricted`.
fn workload() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "orders"},
        "spec": {"template": {
            "metadata": {"labels": {"app": "orders"}},
            "spec": {
                "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                "volumes": [{"name": "config", "configMap": {"name": "orders"}}],
                "containers": [{
                    "name": "node", "image": "x",
                    "ports": [{"containerPort": 5678}],
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"]}
                    }
                }]
            }
        }}
    })
}

fn policy(level: PodSecurityLevel) -> OutputPolicy {
    OutputPolicy {
        pods: PodPolicy {
            level,
            ..PodPolicy::default()
        },
        ..OutputPolicy::default()
    }
}

fn judge(policy: &OutputPolicy, objects: Vec<Value>) -> Result<(), PolicyError> {
    let mut all = vec![service("orders-p1")];
    all.extend(objects);
    policy.enforce(&owner(), &rendered(all)).map(|_| ())
}

/// `Ok` or the refused field and the flag that would allow it.
fn verdict(level: PodSecurityLevel, object: Value) -> Result<(), (String, String)> {
    match judge(&policy(level), vec![object]) {
        Ok(()) => Ok(()),
        Err(PolicyError::PodSecurity { field, allow, .. }) => Err((field, allow)),
        Err(other) => panic!("not a pod security refusal: {other}"),
    }
}

fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let mut at = &mut object;
    for part in parent.split('/').skip(1) {
        at = match part.parse::<usize>() {
            Ok(i) => &mut at[i],
            Err(_) => &mut at[part],
        };
    }
    at[key] = value;
    object
}

const POD: &str = "/spec/template/spec";
const C0: &str = "/spec/template/spec/containers/0";

#[test]
fn a_restricted_pod_passes_every_level() {
    for level in [
        PodSecurityLevel::Privileged,
        PodSecurityLevel::Baseline,
        PodSecurityLevel::Restricted,
    ] {
        assert_eq!(verdict(level, workload()), Ok(()), "{level:?}");
    }
}

#[test]
fn baseline_refuses_each_known_escalation_with_its_field() {
    let cases = [
        (
            format!("{POD}/hostNetwork"),
            json!(true),
            "spec.template.spec.hostNetwork",
        ),
        (
            format!("{POD}/hostPID"),
            json!(true),
            "spec.template.spec.hostPID",
        ),
        (
            format!("{POD}/hostIPC"),
            json!(true),
            "spec.template.spec.hostIPC",
        ),
        (
            format!("{POD}/volumes"),
            json!([{"name": "root", "hostPath": {"path": "/"}}]),
            "spec.template.spec.volumes[0].hostPath",
        ),
        (
            format!("{C0}/securityContext/privileged"),
            json!(true),
            "spec.template.spec.containers[0].securityContext.privileged",
        ),
        (
            format!("{C0}/ports/0/hostPort"),
            json!(80),
            "spec.template.spec.containers[0].ports[0].hostPort",
        ),
        (
            format!("{POD}/securityContext/seccompProfile"),
            json!({"type": "Unconfined"}),
            "spec.template.spec.securityContext.seccompProfile.type",
        ),
        (
            format!("{C0}/securityContext/seccompProfile"),
            json!({"type": "Unconfined"}),
            "spec.template.spec.containers[0].securityContext.seccompProfile.type",
        ),
        (
            format!("{C0}/securityContext/procMount"),
            json!("Unmasked"),
            "spec.template.spec.containers[0].securityContext.procMount",
        ),
        (
            format!("{POD}/securityContext/seLinuxOptions"),
            json!({"type": "spc_t"}),
            "spec.template.spec.securityContext.seLinuxOptions.type",
        ),
        (
            format!("{POD}/securityContext/sysctls"),
            json!([{"name": "kernel.msgmax", "value": "1"}]),
            "spec.template.spec.securityContext.sysctls[0].name",
        ),
        (
            format!("{POD}/securityContext/windowsOptions"),
            json!({"hostProcess": true}),
            "spec.template.spec.securityContext.windowsOptions.hostProcess",
        ),
        (
            "/spec/template/metadata/annotations".to_string(),
            json!({"container.apparmor.security.beta.kubernetes.io/node": "unconfined"}),
            "spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/node]",
        ),
    ];
    for (pointer, value, field) in cases {
        let object = with(workload(), &pointer, value);
        for level in [PodSecurityLevel::Baseline, PodSecurityLevel::Restricted] {
            assert_eq!(
                verdict(level, object.clone()),
                Err((field.to_string(), "--pod-security=privileged".to_string())),
                "{pointer} at {level:?}"
            );
        }
        assert_eq!(
            verdict(PodSecurityLevel::Privileged, object),
            Ok(()),
            "{pointer}"
        );
    }
}

#[test]
fn init_and_ephemeral_containers_are_judged_too() {
    let bad = json!([{"name": "init", "image": "x", "securityContext": {"privileged": true}}]);
    for field in ["initContainers", "ephemeralContainers"] {
        let object = with(workload(), &format!("{POD}/{field}"), bad.clone());
        let (path, _) = verdict(PodSecurityLevel::Baseline, object).unwrap_err();
        assert_eq!(
            path,
            format!("spec.template.spec.{field}[0].securityContext.privileged")
        );
    }
}

#[test]
fn capabilities_beyond_the_safe_set_need_a_flag() {
    let adding = |cap: &str| {
        with(
            workload(),
            &format!("{C0}/securityContext/capabilities/add"),
            json!([cap]),
        )
    };
    assert_eq!(verdict(PodSecurityLevel::Baseline, adding("CHOWN")), Ok(()));
    assert_eq!(
        verdict(PodSecurityLevel::Baseline, adding("SYS_ADMIN")),
        Err((
            "spec.template.spec.containers[0].securityContext.capabilities.add[0]".into(),
            "--allow-capability=SYS_ADMIN".into()
        ))
    );
    // restricted allows NET_BIND_SERVICE only
    assert_eq!(
        verdict(PodSecurityLevel::Restricted, adding("NET_BIND_SERVICE")),
        Ok(())
    );
    assert!(verdict(PodSecurityLevel::Restricted, adding("CHOWN")).is_err());
    let mut allowing = policy(PodSecurityLevel::Restricted);
    allowing.pods.extra_capabilities = vec!["SYS_ADMIN".into()];
    assert!(judge(&allowing, vec![adding("CAP_SYS_ADMIN")]).is_ok());
}

#[test]
fn restricted_refuses_what_baseline_allows() {
    let cases = [
        (
            format!("{C0}/securityContext/allowPrivilegeEscalation"),
            Value::Null,
            "spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation",
        ),
        (
            format!("{POD}/securityContext/runAsNonRoot"),
            json!(false),
            "spec.template.spec.containers[0].securityContext.runAsNonRoot",
        ),
        (
            format!("{C0}/securityContext/runAsUser"),
            json!(0),
            "spec.template.spec.containers[0].securityContext.runAsUser",
        ),
        (
            format!("{POD}/securityContext/seccompProfile"),
            Value::Null,
            "spec.template.spec.containers[0].securityContext.seccompProfile.type",
        ),
        (
            format!("{C0}/securityContext/capabilities/drop"),
            json!(["NET_RAW"]),
            "spec.template.spec.containers[0].securityContext.capabilities.drop",
        ),
        (
            format!("{POD}/volumes"),
            json!([{"name": "nfs", "nfs": {"server": "x", "path": "/"}}]),
            "spec.template.spec.volumes[0].nfs",
        ),
    ];
    for (pointer, value, field) in cases {
        let object = with(workload(), &pointer, value);
        assert_eq!(
            verdict(PodSecurityLevel::Baseline, object.clone()),
            Ok(()),
            "{pointer}"
        );
        assert_eq!(
            verdict(PodSecurityLevel::Restricted, object),
            Err((field.to_string(), "--pod-security=baseline".to_string())),
            "{pointer}"
        );
    }
    // Container-level settings satisfy restricted without pod-level ones.
    let object = with(workload(), &format!("{POD}/securityContext"), json!({}));
    let object = with(
        object,
        &format!("{C0}/securityContext"),
        json!({"allowPrivilegeEscalation": false, "runAsNonRoot": true, "runAsUser": 999,
               "seccompProfile": {"type": "RuntimeDefault"}, "capabilities": {"drop": ["ALL"]}}),
    );
    assert_eq!(verdict(PodSecurityLevel::Restricted, object), Ok(()));
}

#[test]
fn service_accounts_are_default_rendered_or_named_by_a_flag() {
    let running_as = |account: &str| {
        with(
            workload(),
            &format!("{POD}/serviceAccountName"),
            json!(account),
        )
    };
    // Even with no pod controls at all.
    let open = policy(PodSecurityLevel::Privileged);
    assert!(judge(&open, vec![running_as("default")]).is_ok());
    let err = judge(&open, vec![running_as("orders-admin")]).unwrap_err();
    assert!(
        matches!(&err, PolicyError::PodSecurity { field, allow, .. }
            if field == "spec.template.spec.serviceAccountName"
                && allow == "--allow-service-account=orders-admin"),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("StatefulSet orders") && text.contains("--allow-service-account"),
        "{text}"
    );
    // The deprecated field is judged the same way.
    let legacy = with(
        workload(),
        &format!("{POD}/serviceAccount"),
        json!("builder"),
    );
    assert!(judge(&open, vec![legacy]).is_err());
    // One the render creates (an opt-in kind) may be used.
    let account =
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "orders-sa"}});
    let allowing = open
        .clone()
        .allowing([AllowedKind::new("v1", "ServiceAccount")]);
    assert!(judge(&allowing, vec![account, running_as("orders-sa")]).is_ok());
    let mut named = open;
    named.pods.service_accounts = vec!["orders-admin".into()];
    assert!(judge(&named, vec![running_as("orders-admin")]).is_ok());
}

#[test]
fn services_stay_inside_the_cluster_unless_a_type_is_allowed() {
    let typed = |t: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orders-ext"},
               "spec": {"type": t}})
    };
    let headless = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orders-hs"},
                          "spec": {"clusterIP": "None"}});
    let open = policy(PodSecurityLevel::Privileged);
    assert!(judge(&open, vec![headless, typed("ClusterIP")]).is_ok());
    for t in ["NodePort", "LoadBalancer", "ExternalName"] {
        let err = judge(&open, vec![typed(t)]).unwrap_err();
        assert!(
            matches!(&err, PolicyError::PodSecurity { field, allow, .. }
                if field == "spec.type" && *allow == format!("--allow-service-type={t}")),
            "{err}"
        );
        let mut allowing = open.clone();
        allowing.pods.service_types = vec![t.into()];
        assert!(judge(&allowing, vec![typed(t)]).is_ok(), "{t}");
    }
}

#[test]
fn token_secrets_are_never_allowed() {
    let allowing =
        policy(PodSecurityLevel::Privileged).allowing([AllowedKind::new("v1", "Secret")]);
    let secret = |t: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "orders-token",
               "annotations": {"kubernetes.io/service-account.name": "atoll"}}, "type": t})
    };
    assert!(judge(&allowing, vec![secret("Opaque")]).is_ok());
    let err = judge(
        &allowing,
        vec![secret("kubernetes.io/service-account-token")],
    )
    .unwrap_err();
    assert!(
        matches!(&err, PolicyError::PodSecurity { field, .. } if field == "type"),
        "{err}"
    );
}

#[test]
fn secrets_service_accounts_and_claims_are_opt_in_kinds() {
    for (kind, object) in [
        (
            "Secret",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "orders-pw"}}),
        ),
        (
            "ServiceAccount",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "orders"}}),
        ),
        (
            "PersistentVolumeClaim",
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "orders-data"}, "spec": {}}),
        ),
    ] {
        assert!(
            matches!(
                judge(&OutputPolicy::default(), vec![object.clone()]),
                Err(PolicyError::KindNotAllowed { .. })
            ),
            "{kind}"
        );
        let allowing = OutputPolicy::default().allowing([AllowedKind::new("v1", kind)]);
        assert!(judge(&allowing, vec![object]).is_ok(), "{kind}");
    }
}

#[test]
fn pods_of_jobs_cron_jobs_and_bare_pods_are_found() {
    let bad_spec = json!({"hostNetwork": true, "containers": [{"name": "c", "image": "x"}]});
    let open_kinds = OutputPolicy::default().allowing([
        AllowedKind::new("v1", "Pod"),
        AllowedKind::new("batch/v1", "CronJob"),
        AllowedKind::new("batch/v1", "Job"),
    ]);
    for (object, field) in [
        (
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orders-x"}, "spec": bad_spec}),
            "spec.hostNetwork",
        ),
        (
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "orders-x"},
                "spec": {"template": {"spec": bad_spec}}}),
            "spec.template.spec.hostNetwork",
        ),
        (
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "orders-x"},
                "spec": {"jobTemplate": {"spec": {"template": {"spec": bad_spec}}}}}),
            "spec.jobTemplate.spec.template.spec.hostNetwork",
        ),
    ] {
        let err = judge(&open_kinds, vec![object]).unwrap_err();
        assert!(
            matches!(&err, PolicyError::PodSecurity { field: f, .. } if f == field),
            "{err}"
        );
    }
}

#[test]
fn levels_parse_from_flags() {
    assert_eq!("restricted".parse(), Ok(PodSecurityLevel::Restricted));
    assert_eq!("baseline".parse(), Ok(PodSecurityLevel::Baseline));
    assert_eq!("privileged".parse(), Ok(PodSecurityLevel::Privileged));
    assert!("strict".parse::<PodSecurityLevel>().is_err());
    assert_eq!(PodSecurityLevel::default(), PodSecurityLevel::Baseline);
}
