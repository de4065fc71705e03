//! The install manifests in `deploy/` and the Helm chart in `deploy/helm/atoll`
//! against the real control plane: they render, apply cleanly, run (kwok
//! fakes the pods, under the "restricted" Pod Security Standard), agree with
//! each other, and grant atoll what it needs and nothing more.
//!
//! Helm comes from `deploy/helm/install-helm.sh` (built once from the Go
//! module proxy, then cached). Needs `cargo xtask cluster up`; fails (never
//! skips) without it.
//!
//! `deploy/` is applied for real (namespace `atoll-system`, the ClusterRole
//! and ClusterRoleBinding `atoll`) and left in place: applying it again is a
//! no-op, and nothing else uses those names. The CRDs are only dry-run
//! applied, so that an edited-but-not-regenerated `deploy/crds/` never
//! replaces the CRDs other tests install from the code. Chart releases go to
//! a namespace of their own, with unique names for their cluster-scoped
//! objects, which the tests delete again.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use atoll_testenv::{TestNamespace, client, kubectl, wait_for};
use serde_json::Value;

mod grpc;
use grpc::{create_tls_secret_as_documented, grpc_values, serves_tls_from, tls_volume};

const NAMESPACE: &str = "atoll-system";
const SERVICE_ACCOUNT: &str = "system:serviceaccount:atoll-system:atoll";

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testenv/ is inside the workspace")
}

fn chart() -> PathBuf {
    workspace().join("deploy/helm/atoll")
}

/// The pinned helm, installed by `deploy/helm/install-helm.sh` on first use.
async fn helm() -> PathBuf {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    tokio::task::spawn_blocking(|| {
        HELM.get_or_init(|| {
            let script = workspace().join("deploy/helm/install-helm.sh");
            let out = std::process::Command::new(&script)
                .stderr(std::process::Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            assert!(out.status.success(), "{} failed", script.display());
            let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            assert!(path.is_file(), "install-helm.sh printed {path:?}");
            path
        })
        .clone()
    })
    .await
    .expect("installing helm")
}

/// `helm <args>` as (success, stdout, stderr).
async fn run_helm(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(helm().await)
        .args(args)
        .current_dir(workspace())
        .output()
        .await
        .expect("running helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template <release> deploy/helm/atoll -n <namespace> <extra>`; panics on failure.
async fn helm_template(release: &str, namespace: &str, extra: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = run_helm(&args).await;
    assert!(ok, "helm {} failed: {stderr}", args.join(" "));
    stdout
}

/// Objects of a (multi-document) YAML text, as JSON, through kubectl's own
/// decoder (client-side dry run: nothing is sent to the server).
async fn objects(yaml: &str) -> Vec<Value> {
    let out = kubectl(
        &["create", "--dry-run=client", "-o", "json", "-f", "-"],
        Some(yaml),
    )
    .await;
    assert!(out.success, "kubectl could not decode:\n{}", out.stderr);
    // One JSON document per object, back to back.
    serde_json::Deserializer::from_str(&out.stdout)
        .into_iter::<Value>()
        .map(|v| v.expect("kubectl prints JSON"))
        .collect()
}

/// The one object of `kind` named `name` in `objects`.
fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "no {kind} {name} among {:?}",
                objects
                    .iter()
                    .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
                    .collect::<Vec<_>>()
            )
        })
}

fn kinds_and_names(objects: &[Value]) -> Vec<String> {
    let mut all: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["namespace"].as_str().unwrap_or("-"),
                o["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    all.sort();
    all
}

fn args_of(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().unwrap_or_default().to_owned())
        .collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The plain manifests: the namespace, then the rest of `deploy/`, as
/// `deploy/namespace.yaml` documents.
fn plain_manifests() -> String {
    [
        "namespace",
        "deployment",
        "networkpolicy",
        "rbac",
        "service",
    ]
    .iter()
    .map(|f| read(&format!("deploy/{f}.yaml")))
    .collect::<Vec<_>>()
    .join("\n---\n")
}

/// `kubectl apply --server-side` of `yaml`; panics with kubectl's output on failure.
async fn apply(yaml: &str, extra: &[&str]) {
    let mut args = vec![
        "apply",
        "--server-side",
        // kubectl's default field manager, as a user (and host/tests/least_privilege.rs)
        // applies deploy/; forced, so a hand edit (say, `kubectl set image`) does
        // not fail the test.
        "--force-conflicts",
        "-f",
        "-",
    ];
    args.extend_from_slice(extra);
    let out = kubectl(&args, Some(yaml)).await;
    assert!(
        out.success,
        "kubectl {} failed:\n{}{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    assert!(
        !out.stderr.contains("Warning"),
        "kubectl {} warned:\n{}",
        args.join(" "),
        out.stderr
    );
}

/// What `kubectl auth can-i` should answer for one request.
struct Can {
    allowed: bool,
    /// `kubectl auth can-i` arguments: verb, resource and scope flags.
    args: &'static [&'static str],
    why: &'static str,
}

const fn yes(args: &'static [&'static str], why: &'static str) -> Can {
    Can {
        allowed: true,
        args,
        why,
    }
}

const fn no(args: &'static [&'static str], why: &'static str) -> Can {
    Can {
        allowed: false,
        args,
        why,
    }
}

/// Whose permissions [`check_access`] checks, and the names its questions use.
struct Subject<'a> {
    /// The user, e.g. `system:serviceaccount:atoll-system:atoll`.
    user: &'a str,
    /// atoll's own namespace: `NS` in the questions.
    namespace: &'a str,
    /// A namespace holding Databases: `WATCHED` in the questions.
    watched: &'a str,
    /// The leader election Lease: `LEASE` in the questions.
    lease: &'a str,
}

/// Asks `kubectl auth can-i` each question as `subject`. Collects every
/// wrong answer, then panics with all of them.
async fn check_access(subject: &Subject<'_>, groups: &[&[Can]]) {
    let user = subject.user;
    let expectations: Vec<&Can> = groups.iter().flat_map(|g| g.iter()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, can) in expectations.iter().enumerate() {
        let mut args: Vec<String> = vec!["auth".into(), "can-i".into()];
        args.extend(can.args.iter().map(|a| match *a {
            "NS" => subject.namespace.to_owned(),
            "WATCHED" => subject.watched.to_owned(),
            "leases.coordination.k8s.io/LEASE" => {
                format!("leases.coordination.k8s.io/{}", subject.lease)
            }
            other => other.to_owned(),
        }));
        args.push(format!("--as={user}"));
        tasks.spawn(async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = kubectl(&refs, None).await;
            (i, args.join(" "), out)
        });
    }
    let mut wrong = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, command, out) = joined.expect("kubectl task");
        let can = expectations[i];
        let answer = out.stdout.trim();
        // `can-i` prints yes/no and exits 0/1; anything else is an error.
        if answer != "yes" && answer != "no" {
            wrong.push(format!(
                "kubectl {command}: unexpected answer {answer:?}: {}",
                out.stderr.trim()
            ));
        } else if (answer == "yes") != can.allowed {
            wrong.push(format!(
                "kubectl {command} -> {answer}, expected {} ({})",
                if can.allowed { "yes" } else { "no" },
                can.why
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{user} has the wrong permissions:\n  {}",
        wrong.join("\n  ")
    );
}

/// What atoll must be able to do when it watches every namespace.
const NEEDED: &[Can] = &[
    // A merge patch of one annotation (atoll.dev/plugin-digest); `update`
    // stays refused, and atoll never writes the spec (RBAC cannot split a
    // patch by field: the rule's comment in deploy/rbac.yaml says so).
    yes(
        &["patch", "databases.atoll.dev", "-n", "WATCHED"],
        "rollouts assign a Database to a plugin version by annotation",
    ),
    yes(
        &["list", "databases.atoll.dev", "-A"],
        "watch Databases everywhere",
    ),
    yes(
        &["watch", "databases.atoll.dev", "-A"],
        "watch Databases everywhere",
    ),
    yes(
        &[
            "patch",
            "databases.atoll.dev",
            "--subresource=status",
            "-n",
            "WATCHED",
        ],
        "write Database status",
    ),
    yes(
        &[
            "update",
            "databases.atoll.dev",
            "--subresource=finalizers",
            "-n",
            "WATCHED",
        ],
        "blockOwnerDeletion on children",
    ),
    yes(
        &["create", "partitions.atoll.dev", "-n", "WATCHED"],
        "apply Partitions",
    ),
    yes(
        &["delete", "partitions.atoll.dev", "-n", "WATCHED"],
        "prune Partitions",
    ),
    yes(
        &[
            "patch",
            "partitions.atoll.dev",
            "--subresource=status",
            "-n",
            "WATCHED",
        ],
        "write Partition status",
    ),
    yes(
        &["watch", "partitions.atoll.dev", "-A"],
        "observe Partitions",
    ),
    yes(
        &["create", "members.atoll.dev", "-n", "WATCHED"],
        "gRPC membership",
    ),
    yes(
        &["delete", "primitives.atoll.dev", "-n", "WATCHED"],
        "gRPC primitives",
    ),
    yes(
        &["create", "storageplugins.atoll.dev"],
        "publish StoragePlugins",
    ),
    yes(
        &["patch", "storageplugins.atoll.dev", "--subresource=status"],
        "StoragePlugin status",
    ),
    yes(
        &["create", "statefulsets.apps", "-n", "WATCHED"],
        "apply rendered StatefulSets",
    ),
    yes(
        &["patch", "deployments.apps", "-n", "WATCHED"],
        "apply rendered Deployments",
    ),
    yes(
        &["watch", "statefulsets.apps", "-A"],
        "observe StatefulSets",
    ),
    yes(
        &["delete", "services", "-n", "WATCHED"],
        "prune rendered Services",
    ),
    yes(
        &["get", "secrets", "-n", "WATCHED"],
        "read Secrets pod templates refer to, by name, for config checksums",
    ),
    yes(
        &["list", "configmaps", "-A"],
        "rendered ConfigMaps, plugin ConfigMaps",
    ),
    yes(
        &["patch", "poddisruptionbudgets.policy", "-n", "WATCHED"],
        "rendered PDBs",
    ),
    yes(
        &["patch", "endpointslices.discovery.k8s.io", "-n", "WATCHED"],
        "the partition-group Service's EndpointSlice",
    ),
    yes(
        &["watch", "endpointslices.discovery.k8s.io", "-A"],
        "observe EndpointSlices",
    ),
    yes(
        &["create", "events.events.k8s.io", "-n", "WATCHED"],
        "Events on Databases",
    ),
    yes(
        &["patch", "events", "-n", "WATCHED"],
        "core Events on Databases",
    ),
    yes(
        &["create", "leases.coordination.k8s.io", "-n", "NS"],
        "create the leader Lease",
    ),
    yes(
        &["update", "leases.coordination.k8s.io/LEASE", "-n", "NS"],
        "renew the leader Lease",
    ),
    yes(
        &["get", "leases.coordination.k8s.io/LEASE", "-n", "NS"],
        "read the leader Lease",
    ),
    yes(
        &["create", "tokenreviews.authentication.k8s.io"],
        "authenticate gRPC callers' bearer tokens",
    ),
    yes(
        &["create", "subjectaccessreviews.authorization.k8s.io"],
        "authorize each gRPC call",
    ),
    yes(
        &["list", "leases.coordination.k8s.io", "-n", "NS"],
        "sweep the instance Leases of replicas that are gone",
    ),
    yes(
        &[
            "patch",
            "leases.coordination.k8s.io/atoll-instance-0123456789abcdef",
            "-n",
            "NS",
        ],
        "renew its own instance Lease (random name)",
    ),
    yes(
        &[
            "delete",
            "leases.coordination.k8s.io/atoll-instance-0123456789abcdef",
            "-n",
            "NS",
        ],
        "delete expired instance Leases, and its own on shutdown",
    ),
];

/// What atoll must not be able to do, whatever it watches.
const FORBIDDEN: &[Can] = &[
    no(&["create", "clusterrolebindings"], "RBAC escalation"),
    no(&["create", "clusterroles"], "RBAC escalation"),
    no(
        &["create", "rolebindings", "-n", "WATCHED"],
        "RBAC escalation",
    ),
    no(&["create", "namespaces"], "cluster-scoped"),
    no(&["delete", "namespaces"], "cluster-scoped"),
    no(&["delete", "nodes"], "cluster-scoped"),
    no(&["get", "nodes"], "not needed"),
    no(&["create", "customresourcedefinitions"], "cluster-scoped"),
    no(&["create", "persistentvolumes"], "cluster-scoped"),
    no(
        &["create", "mutatingwebhookconfigurations"],
        "cluster-scoped",
    ),
    no(
        &["delete", "storageplugins.atoll.dev"],
        "StoragePlugins are created and patched only",
    ),
    no(
        &["update", "databases.atoll.dev", "-n", "WATCHED"],
        "the spec is the user's",
    ),
    no(
        &["delete", "databases.atoll.dev", "-n", "WATCHED"],
        "the user's object",
    ),
    no(
        &["create", "pods", "-n", "WATCHED"],
        "pods come from StatefulSets",
    ),
    no(
        &["create", "pods", "--subresource=exec", "-n", "WATCHED"],
        "no exec",
    ),
    no(
        &[
            "create",
            "serviceaccounts",
            "--subresource=token",
            "-n",
            "WATCHED",
        ],
        "no token minting",
    ),
    no(
        &["update", "statefulsets.apps", "-n", "WATCHED"],
        "server-side apply patches",
    ),
    no(
        &["create", "daemonsets.apps", "-n", "WATCHED"],
        "not an allowed kind",
    ),
    no(
        &["create", "jobs.batch", "-n", "WATCHED"],
        "not an allowed kind",
    ),
    no(
        &["create", "leases.coordination.k8s.io", "-n", "WATCHED"],
        "Leases only in its namespace",
    ),
    no(
        &["delete", "leases.coordination.k8s.io", "-n", "WATCHED"],
        "Leases only in its namespace",
    ),
    no(&["impersonate", "users"], "no impersonation"),
    no(&["*", "*"], "no wildcard"),
    no(&["list", "secrets", "-A"], "Secrets are read by name only"),
    no(&["watch", "secrets", "-A"], "Secrets are read by name only"),
    no(
        &["list", "secrets", "-n", "WATCHED"],
        "Secrets are read by name only",
    ),
    no(
        &["create", "secrets", "-n", "WATCHED"],
        "Secrets are an opt-in kind (policy.allowSecrets)",
    ),
    no(
        &["delete", "secrets", "-n", "WATCHED"],
        "Secrets are an opt-in kind (policy.allowSecrets)",
    ),
    no(
        &["create", "serviceaccounts", "-n", "WATCHED"],
        "ServiceAccounts are an opt-in kind (policy.allowServiceAccounts)",
    ),
    no(
        &["create", "persistentvolumeclaims", "-n", "WATCHED"],
        "claims are an opt-in kind (policy.allowPersistentVolumeClaims)",
    ),
    no(
        &["list", "persistentvolumeclaims", "-A"],
        "claims are an opt-in kind; the host never reads them itself",
    ),
];

/// What atoll must not do in kube-system when it watches one other
/// namespace (watching all, RBAC cannot except any namespace).
const NOT_IN_KUBE_SYSTEM: &[Can] = &[
    no(
        &["create", "configmaps", "-n", "kube-system"],
        "not watched",
    ),
    no(&["patch", "configmaps", "-n", "kube-system"], "not watched"),
    no(&["delete", "services", "-n", "kube-system"], "not watched"),
    no(
        &["patch", "statefulsets.apps", "-n", "kube-system"],
        "not watched",
    ),
    no(
        &["patch", "deployments.apps", "-n", "kube-system"],
        "not watched",
    ),
    no(
        &["create", "events.events.k8s.io", "-n", "kube-system"],
        "not watched",
    ),
    no(
        &["patch", "leases.coordination.k8s.io", "-n", "kube-system"],
        "not watched",
    ),
    no(&["get", "secrets", "-n", "kube-system"], "not watched"),
];

#[tokio::test]
async fn chart_crds_are_a_copy_of_deploy_crds() {
    assert!(
        read("deploy/helm/atoll/crds/atoll.dev.yaml") == read("deploy/crds/atoll.dev.yaml"),
        "deploy/helm/atoll/crds/atoll.dev.yaml differs from deploy/crds/atoll.dev.yaml; \
         copy it: cp deploy/crds/atoll.dev.yaml deploy/helm/atoll/crds/"
    );
}

#[tokio::test]
async fn chart_lints_and_renders_the_plain_manifests_objects() {
    let _client = client().await;
    let chart = chart();
    let (ok, stdout, stderr) = run_helm(&["lint", "--strict", chart.to_str().unwrap()]).await;
    assert!(ok, "helm lint --strict failed:\n{stdout}{stderr}");

    // Release `atoll` in atoll-system with default values: the same objects
    // as deploy/, plus Helm's labels.
    let rendered = objects(&helm_template("atoll", NAMESPACE, &[]).await).await;
    let plain: Vec<Value> = objects(&plain_manifests())
        .await
        .into_iter()
        .filter(|o| o["kind"] != "Namespace") // Helm leaves namespaces to --create-namespace
        .collect();
    assert_eq!(kinds_and_names(&rendered), kinds_and_names(&plain));

    for kind in ["ClusterRole", "Role"] {
        let name = if kind == "Role" {
            "atoll-leader-election"
        } else {
            "atoll"
        };
        assert_eq!(
            find(&rendered, kind, name)["rules"],
            find(&plain, kind, name)["rules"],
            "{kind} {name}: chart and deploy/rbac.yaml disagree"
        );
    }
    for (kind, name) in [
        ("ClusterRoleBinding", "atoll"),
        ("RoleBinding", "atoll-leader-election"),
    ] {
        for field in ["roleRef", "subjects"] {
            assert_eq!(
                find(&rendered, kind, name)[field],
                find(&plain, kind, name)[field],
                "{kind} {name} .{field}"
            );
        }
    }
    let (chart_deploy, plain_deploy) = (
        find(&rendered, "Deployment", "atoll"),
        find(&plain, "Deployment", "atoll"),
    );
    assert_eq!(chart_deploy["spec"]["replicas"], 2);
    for field in ["replicas", "selector"] {
        assert_eq!(
            chart_deploy["spec"][field], plain_deploy["spec"][field],
            "Deployment .spec.{field}"
        );
    }
    let (chart_pod, plain_pod) = (
        &chart_deploy["spec"]["template"]["spec"],
        &plain_deploy["spec"]["template"]["spec"],
    );
    for field in [
        "serviceAccountName",
        "securityContext",
        "terminationGracePeriodSeconds",
        "affinity",
        "containers",
        "volumes",
    ] {
        assert_eq!(chart_pod[field], plain_pod[field], "pod spec .{field}");
    }
    let container = &plain_pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/atoll-dev/atoll:0.1.0");
    assert_eq!(
        args_of(plain_deploy),
        [
            "run",
            "--log-json",
            "--leader-elect",
            "--grpc-tls-cert=/etc/atoll/grpc-tls/tls.crt",
            "--grpc-tls-key=/etc/atoll/grpc-tls/tls.key"
        ]
    );
    assert_eq!(
        tls_volume(plain_deploy),
        Some((
            "atoll-grpc-tls".to_owned(),
            "/etc/atoll/grpc-tls".to_owned()
        )),
        "the gRPC certificate comes from the Secret atoll-grpc-tls, read-only"
    );
    assert_eq!(
        find(&rendered, "NetworkPolicy", "atoll")["spec"],
        find(&plain, "NetworkPolicy", "atoll")["spec"],
        "NetworkPolicy atoll: chart and deploy/networkpolicy.yaml disagree"
    );
    assert_eq!(
        find(&plain, "NetworkPolicy", "atoll")["spec"],
        serde_json::json!({
            "podSelector": {"matchLabels": {
                "app.kubernetes.io/name": "atoll",
                "app.kubernetes.io/instance": "atoll",
                "app.kubernetes.io/component": "operator",
            }},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"atoll.dev/grpc-client": "true"}}}],
                    "ports": [{"port": "grpc", "protocol": "TCP"}],
                },
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"atoll.dev/metrics-scraper": "true"}}}],
                    "ports": [{"port": "metrics", "protocol": "TCP"}],
                },
            ],
        }),
        "only labelled namespaces reach the gRPC and metrics ports, nothing else"
    );
    assert_eq!(
        find(&plain, "NetworkPolicy", "atoll")["spec"]["podSelector"]["matchLabels"],
        plain_deploy["spec"]["selector"]["matchLabels"],
        "the NetworkPolicy selects atoll's pods"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(plain_pod["securityContext"]["runAsUser"], 65532);
    for name in ["atoll-grpc", "atoll-metrics"] {
        for field in ["ports", "selector"] {
            assert_eq!(
                find(&rendered, "Service", name)["spec"][field],
                find(&plain, "Service", name)["spec"][field],
                "Service {name} .spec.{field}"
            );
        }
    }

    // Values: image, replicas, resources, log format, watched namespace.
    let custom = objects(
        &helm_template(
            "my",
            "ops",
            &[
                "--set",
                "image.repository=registry.example/atoll,image.tag=9.9.9,replicas=3",
                "--set",
                "resources.limits.memory=1Gi,logFormat=text,watchNamespace=shop",
                "--set",
                "clusterDomain=corp.local,extraArgs={--plugin-timeout=2s}",
            ],
        )
        .await,
    )
    .await;
    let deployment = find(&custom, "Deployment", "my-atoll");
    assert_eq!(deployment["metadata"]["namespace"], "ops");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/atoll:9.9.9");
    assert_eq!(container["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(
        args_of(deployment),
        [
            "run",
            "--leader-elect",
            "--leader-election-lease=my-atoll",
            "--namespace=shop",
            "--cluster-domain=corp.local",
            "--grpc-tls-cert=/etc/atoll/grpc-tls/tls.crt",
            "--grpc-tls-key=/etc/atoll/grpc-tls/tls.key",
            "--plugin-timeout=2s"
        ]
    );
    assert_eq!(
        tls_volume(deployment),
        Some((
            "my-atoll-grpc-tls".to_owned(),
            "/etc/atoll/grpc-tls".to_owned()
        )),
        "the Secret is named like the release by default"
    );
    // Watching one namespace: its rules move to a Role there; the ClusterRole
    // keeps only the cluster-scoped StoragePlugins and the reviews of gRPC
    // callers.
    let role = find(&custom, "Role", "my-atoll");
    assert_eq!(role["metadata"]["namespace"], "shop");
    let cluster_rules = find(&custom, "ClusterRole", "my-atoll")["rules"]
        .as_array()
        .unwrap()
        .clone();
    let resources: Vec<&str> = cluster_rules
        .iter()
        .flat_map(|r| r["resources"].as_array().unwrap())
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        resources,
        [
            "storageplugins",
            "storageplugins/status",
            "tokenreviews",
            "subjectaccessreviews"
        ],
        "{cluster_rules:?}"
    );
    let binding = find(&custom, "RoleBinding", "my-atoll");
    assert_eq!(binding["metadata"]["namespace"], "shop");
    assert_eq!(binding["subjects"][0]["namespace"], "ops");

    grpc_values().await;

    // A digest pins the image; a bad log format is refused.
    let pinned = objects(
        &helm_template(
            "atoll",
            NAMESPACE,
            &["--set", "image.digest=sha256:0123456789abcdef"],
        )
        .await,
    )
    .await;
    assert_eq!(
        find(&pinned, "Deployment", "atoll")["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/atoll-dev/atoll@sha256:0123456789abcdef"
    );
    let (ok, _, stderr) = run_helm(&[
        "template",
        "atoll",
        chart.to_str().unwrap(),
        "--set",
        "logFormat=xml",
    ])
    .await;
    assert!(
        !ok && stderr.contains("logFormat must be json or text"),
        "{stderr}"
    );

    // --include-crds carries the five CRDs.
    let with_crds = helm_template("atoll", NAMESPACE, &["--include-crds"]).await;
    let crds = objects(&with_crds)
        .await
        .into_iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .count();
    assert_eq!(crds, 5);
}

#[tokio::test]
async fn plain_manifests_apply_run_and_grant_least_privilege() {
    let client = client().await;
    // CRDs: validated by the server, not persisted (see the module comment).
    let crds = workspace().join("deploy/crds");
    let out = kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-f",
            crds.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(out.success, "applying deploy/crds/ failed: {}", out.stderr);

    // The namespace, the gRPC TLS Secret as a user makes it (kwok would run
    // the pods without it, a kubelet would not), then the rest.
    apply(&read("deploy/namespace.yaml"), &[]).await;
    let secret = create_tls_secret_as_documented(NAMESPACE, "atoll-grpc").await;
    apply(&plain_manifests(), &[]).await;
    serves_tls_from(NAMESPACE, "atoll", &secret).await;

    // kwok plays the kubelet; the namespace enforces the restricted Pod
    // Security Standard, so pods exist only if the pod spec meets it.
    let pods = wait_for(
        "the atoll Deployment to have 2 ready replicas",
        Duration::from_secs(90),
        || deployment_ready(NAMESPACE, "atoll", 2),
    )
    .await;
    let mut nodes: Vec<&str> = pods.iter().map(|(_, node)| node.as_str()).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(
        nodes.len(),
        2,
        "the anti-affinity should spread the replicas over nodes: {pods:?}"
    );

    let subject = Subject {
        user: SERVICE_ACCOUNT,
        namespace: NAMESPACE,
        watched: "default",
        lease: "atoll",
    };
    check_access(&subject, &[NEEDED, FORBIDDEN]).await;
    drop(client);
}

/// `Ok((pod, node) for each ready pod)` once Deployment `name` in `namespace`
/// is rolled out with `replicas` ready pods; else what it saw.
async fn deployment_ready(
    namespace: &str,
    name: &str,
    replicas: u64,
) -> Result<Vec<(String, String)>, String> {
    let out = kubectl(
        &["get", "deployment", name, "-n", namespace, "-o", "json"],
        None,
    )
    .await;
    if !out.success {
        return Err(out.stderr);
    }
    let deployment: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
    let status = &deployment["status"];
    let generation = &deployment["metadata"]["generation"];
    let rolled_out = status["observedGeneration"] == *generation
        && status["updatedReplicas"].as_u64() == Some(replicas)
        && status["readyReplicas"].as_u64() == Some(replicas)
        && status["replicas"].as_u64() == Some(replicas);
    if !rolled_out {
        return Err(format!("status {status}"));
    }
    let selector = deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",");
    let out = kubectl(
        &[
            "get", "pods", "-n", namespace, "-l", &selector, "-o", "json",
        ],
        None,
    )
    .await;
    let pods: Value =
        serde_json::from_str(&out.stdout).map_err(|e| format!("{e}: {}", out.stderr))?;
    let pods: Vec<(String, String)> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    if pods.len() as u64 != replicas {
        return Err(format!("pods {pods:?}"));
    }
    Ok(pods)
}

/// Deletes a release's cluster-scoped objects when dropped (also when the test fails).
struct ClusterScoped(String);

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kubectl")
            .env("KUBECONFIG", atoll_testenv::kubeconfig_env())
            .args([
                "delete",
                "clusterrole,clusterrolebinding",
                &self.0,
                "--ignore-not-found",
                "--wait=false",
            ])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// A release name that is unique per test run: `atoll-<the namespace's random suffix>`.
fn release_for(ns: &TestNamespace) -> String {
    let suffix = ns.name().rsplit('-').next().unwrap();
    format!("atoll-{suffix}")
}

#[tokio::test]
async fn chart_applies_runs_and_grants_least_privilege() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "chart_applies").await;
    let release = release_for(&ns);
    let _cleanup = ClusterScoped(release.clone());
    let out = kubectl(
        &[
            "label",
            "namespace",
            ns.name(),
            "pod-security.kubernetes.io/enforce=restricted",
        ],
        None,
    )
    .await;
    assert!(out.success, "{}", out.stderr);

    let secret = create_tls_secret_as_documented(ns.name(), &format!("{release}-grpc")).await;
    let rendered = helm_template(&release, ns.name(), &[]).await;
    apply(&rendered, &[]).await;
    serves_tls_from(ns.name(), &release, &secret).await;
    wait_for(
        "the chart's Deployment to have 2 ready replicas",
        Duration::from_secs(90),
        || deployment_ready(ns.name(), &release, 2),
    )
    .await;

    let user = format!("system:serviceaccount:{}:{release}", ns.name());
    // The Lease is named like the release.
    let subject = Subject {
        user: &user,
        namespace: ns.name(),
        watched: "default",
        lease: &release,
    };
    check_access(&subject, &[NEEDED, FORBIDDEN]).await;
    // Another service account gets nothing from this release.
    let other = format!("system:serviceaccount:{}:other", ns.name());
    check_access(
        &Subject {
            user: &other,
            ..subject
        },
        &[&[
            no(&["list", "databases.atoll.dev", "-A"], "not bound"),
            no(
                &["update", "leases.coordination.k8s.io/LEASE", "-n", "NS"],
                "not bound",
            ),
        ]],
    )
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn chart_watching_one_namespace_is_confined_to_it() {
    let client = client().await;
    let home = TestNamespace::new(&client, "chart_confined").await;
    let watched = TestNamespace::new(&client, "chart_confined_watched").await;
    let release = release_for(&home);
    let _cleanup = ClusterScoped(release.clone());

    let rendered = helm_template(
        &release,
        home.name(),
        &["--set", &format!("watchNamespace={}", watched.name())],
    )
    .await;
    apply(&rendered, &[]).await;

    let user = format!("system:serviceaccount:{}:{release}", home.name());
    let subject = Subject {
        user: &user,
        namespace: home.name(),
        watched: watched.name(),
        lease: &release,
    };
    check_access(
        &subject,
        &[
            FORBIDDEN,
            NOT_IN_KUBE_SYSTEM,
            &[
                yes(
                    &["watch", "databases.atoll.dev", "-n", "WATCHED"],
                    "its namespace",
                ),
                yes(
                    &[
                        "patch",
                        "databases.atoll.dev",
                        "--subresource=status",
                        "-n",
                        "WATCHED",
                    ],
                    "its namespace",
                ),
                yes(
                    &["create", "statefulsets.apps", "-n", "WATCHED"],
                    "its namespace",
                ),
                yes(
                    &["get", "secrets", "-n", "WATCHED"],
                    "config checksums, its namespace",
                ),
                yes(
                    &["watch", "configmaps", "-n", "NS"],
                    "plugin ConfigMaps in its own namespace",
                ),
                no(
                    &["create", "configmaps", "-n", "NS"],
                    "plugin ConfigMaps are only read",
                ),
                yes(
                    &["create", "events.events.k8s.io", "-n", "WATCHED"],
                    "its namespace",
                ),
                yes(
                    &["create", "storageplugins.atoll.dev"],
                    "cluster-scoped, always",
                ),
                yes(
                    &["create", "tokenreviews.authentication.k8s.io"],
                    "gRPC callers, cluster-scoped, always",
                ),
                yes(
                    &["create", "subjectaccessreviews.authorization.k8s.io"],
                    "gRPC calls, cluster-scoped, always",
                ),
                yes(
                    &["update", "leases.coordination.k8s.io/LEASE", "-n", "NS"],
                    "leader election",
                ),
                no(
                    &["list", "databases.atoll.dev", "-A"],
                    "only the watched namespace",
                ),
                no(
                    &["watch", "databases.atoll.dev", "-n", "default"],
                    "only the watched namespace",
                ),
                no(&["list", "secrets", "-A"], "only the watched namespace"),
                no(
                    &["get", "secrets", "-n", "kube-system"],
                    "only the watched namespace",
                ),
                no(
                    &["create", "statefulsets.apps", "-n", "NS"],
                    "its own namespace is not watched",
                ),
            ],
        ],
    )
    .await;
    watched.cleanup().await;
    home.cleanup().await;
}

/// Each opt-in kind's value passes `--allow-kind` and adds the RBAC rule to
/// write it, where the other rules are (a Role when watching one namespace).
#[tokio::test]
async fn chart_policy_values_add_both_the_flag_and_the_rule() {
    let rendered = objects(
        &helm_template(
            "atoll",
            NAMESPACE,
            &[
                "--set",
                "policy.allowSecrets=true,policy.allowPersistentVolumeClaims=true",
                "--set",
                "policy.podSecurity=restricted,policy.allowServiceTypes={LoadBalancer}",
                "--set",
                "policy.allowServiceAccountNames={builder},policy.allowCapabilities={SYS_NICE}",
            ],
        )
        .await,
    )
    .await;
    let args = args_of(find(&rendered, "Deployment", "atoll"));
    for flag in [
        "--pod-security=restricted",
        "--allow-kind=v1/Secret",
        "--allow-kind=v1/PersistentVolumeClaim",
        "--allow-service-type=LoadBalancer",
        "--allow-service-account=builder",
        "--allow-capability=SYS_NICE",
    ] {
        assert!(args.iter().any(|a| a == flag), "{flag} in {args:?}");
    }
    assert!(!args.iter().any(|a| a == "--allow-kind=v1/ServiceAccount"));
    let writable = |objects: &[Value], kind: &str, name: &str| -> Vec<String> {
        find(objects, kind, name)["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["verbs"].as_array().unwrap().iter().any(|v| v == "create"))
            .flat_map(|r| r["resources"].as_array().unwrap().clone())
            .map(|r| r.as_str().unwrap().to_owned())
            .collect()
    };
    let granted = writable(&rendered, "ClusterRole", "atoll");
    for resource in ["secrets", "persistentvolumeclaims"] {
        assert!(
            granted.iter().any(|r| r == resource),
            "{resource} in {granted:?}"
        );
    }
    assert!(
        !granted.iter().any(|r| r == "serviceaccounts"),
        "{granted:?}"
    );
    // By default none of the three is writable.
    let default = objects(&helm_template("atoll", NAMESPACE, &[]).await).await;
    let granted = writable(&default, "ClusterRole", "atoll");
    for resource in ["secrets", "serviceaccounts", "persistentvolumeclaims"] {
        assert!(
            !granted.iter().any(|r| r == resource),
            "{resource} in {granted:?}"
        );
    }
    // Watching one namespace, the rule goes to the Role there.
    let confined = objects(
        &helm_template(
            "atoll",
            NAMESPACE,
            &[
                "--set",
                "watchNamespace=shop,policy.allowServiceAccounts=true",
            ],
        )
        .await,
    )
    .await;
    assert!(
        writable(&confined, "Role", "atoll")
            .iter()
            .any(|r| r == "serviceaccounts")
    );
    let plugins = find(&confined, "Role", "atoll-plugins");
    assert_eq!(plugins["metadata"]["namespace"], NAMESPACE);
}
