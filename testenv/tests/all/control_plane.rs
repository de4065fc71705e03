//! The local control plane behaves like a real cluster in the ways atoll relies
//! on: it answers /readyz, runs StatefulSet Pods (with volumes) to Running and Ready,
//! garbage-collects dependents, issues ServiceAccount tokens and enforces RBAC
//! on them. Needs `cargo xtask cluster up`; fails (never skips) without it.

use std::time::Duration;

use atoll_testenv::{
    TestNamespace, client, client_with_token, install_crds, kubectl, readyz, wait_for,
};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

fn from_json<T: k8s_openapi::serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("valid object literal")
}

#[tokio::test]
async fn readyz_answers_ok_and_the_server_is_kubernetes_1_35() {
    let client = client().await;
    assert_eq!(readyz(&client).await.expect("GET /readyz").trim(), "ok");

    let out = kubectl(&["get", "--raw", "/readyz"], None).await;
    assert!(
        out.success,
        "kubectl get --raw /readyz failed: {}",
        out.stderr
    );
    assert_eq!(out.stdout.trim(), "ok");

    // The Rust side is built against k8s-openapi's v1_35 API.
    let version = client.apiserver_version().await.expect("GET /version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "35"),
        "{version:?}"
    );
    assert!(version.git_version.starts_with("v1.35."), "{version:?}");
}

const STATEFULSET: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 3
  podManagementPolicy: Parallel
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.k8s.io/pause:3.10
        resources:
          requests: {cpu: 100m, memory: 64Mi}
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#;

/// `name:phase:ready` for each Pod, and how many are Running and Ready.
fn pod_summary(pods: &[Pod]) -> (usize, String) {
    let mut ready = 0;
    let summary: Vec<String> = pods
        .iter()
        .map(|p| {
            let status = p.status.clone().unwrap_or_default();
            let phase = status.phase.unwrap_or_default();
            let is_ready = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if phase == "Running" && is_ready {
                ready += 1;
            }
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            format!(
                "{}:{phase}:ready={is_ready}:node={node}",
                p.metadata.name.clone().unwrap_or_default()
            )
        })
        .collect();
    (ready, format!("[{}]", summary.join(", ")))
}

#[tokio::test]
async fn statefulset_applied_with_kubectl_runs_three_ready_pods_within_60s() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "statefulset_applied_with_kubectl").await;

    let out = kubectl(&["apply", "-n", ns.name(), "-f", "-"], Some(STATEFULSET)).await;
    assert!(out.success, "kubectl apply failed: {}", out.stderr);

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let by_label = ListParams::default().labels("app=web");
    let running = wait_for(
        "3 StatefulSet Pods Running and Ready",
        Duration::from_secs(60),
        || async {
            let list = pods.list(&by_label).await.map_err(|e| e.to_string())?;
            let (ready, summary) = pod_summary(&list.items);
            if ready == 3 && list.items.len() == 3 {
                Ok(list.items)
            } else {
                Err(summary)
            }
        },
    )
    .await;
    let mut names: Vec<_> = running
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["web-0", "web-1", "web-2"]);
    // Scheduled by kube-scheduler onto the kwok Nodes `cluster up` registers.
    for pod in &running {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default();
        assert!(
            node.starts_with("atoll-node-"),
            "{:?} on node {node:?}",
            pod.metadata.name
        );
    }
    // The StatefulSet controller reports the Pods' readiness in its status
    // a moment after the Pods turn Ready; under load that takes a while.
    wait_for(
        "the StatefulSet's status to count 3 ready replicas",
        Duration::from_secs(30),
        || async {
            let out = kubectl(
                &[
                    "get",
                    "statefulset",
                    "web",
                    "-n",
                    ns.name(),
                    "-o",
                    "jsonpath={.status.readyReplicas}",
                ],
                None,
            )
            .await;
            (out.stdout.trim() == "3")
                .then_some(())
                .ok_or(format!("readyReplicas {:?}; {}", out.stdout, out.stderr))
        },
    )
    .await;
    // Each Pod's claim from volumeClaimTemplates, provisioned and bound through
    // the default StorageClass that `cluster up` installs.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns.name());
    for pod in ["web-0", "web-1", "web-2"] {
        let claim = claims
            .get(&format!("data-{pod}"))
            .await
            .expect("the Pod's claim");
        let phase = claim.status.and_then(|s| s.phase);
        assert_eq!(phase.as_deref(), Some("Bound"), "claim data-{pod}");
    }

    // The StatefulSet owns its Pods: deleting it lets the garbage collector remove them.
    let out = kubectl(
        &[
            "delete",
            "statefulset",
            "web",
            "-n",
            ns.name(),
            "--wait=false",
        ],
        None,
    )
    .await;
    assert!(out.success, "kubectl delete failed: {}", out.stderr);
    wait_for(
        "the StatefulSet's Pods to be garbage-collected",
        Duration::from_secs(60),
        || async {
            let list = pods.list(&by_label).await.map_err(|e| e.to_string())?;
            if list.items.is_empty() {
                Ok(())
            } else {
                Err(pod_summary(&list.items).1)
            }
        },
    )
    .await;

    ns.cleanup().await;
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_exactly_its_dependents() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "deleting_an_owner_garbage_collects").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let create = |value| {
        let cms = cms.clone();
        async move {
            cms.create(&PostParams::default(), &from_json(value))
                .await
                .expect("creating ConfigMap")
        }
    };

    let owner = create(json!({"metadata": {"name": "owner"}})).await;
    let owner_ref = json!([{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
        "uid": owner.metadata.uid.clone().expect("uid"),
    }]);
    for name in ["dependent-a", "dependent-b"] {
        create(json!({"metadata": {"name": name, "ownerReferences": owner_ref}})).await;
    }
    // A control: same namespace, no owner; it must survive.
    create(json!({"metadata": {"name": "bystander"}})).await;

    cms.delete("owner", &DeleteParams::background())
        .await
        .expect("deleting owner");
    wait_for(
        "the dependents to be garbage-collected",
        Duration::from_secs(60),
        || async {
            let mut left = Vec::new();
            for name in ["owner", "dependent-a", "dependent-b"] {
                if cms
                    .get_opt(name)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    left.push(name);
                }
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still present: {left:?}"))
            }
        },
    )
    .await;
    assert!(
        cms.get_opt("bystander")
            .await
            .expect("get bystander")
            .is_some(),
        "GC removed an unowned object"
    );

    ns.cleanup().await;
}

#[tokio::test]
async fn service_account_tokens_are_authorized_exactly_as_rbac_says() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "service_account_rbac").await;
    let n = ns.name();
    let rbac = format!(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: {n}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: configmap-reader, namespace: {n}}}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader-reads-configmaps, namespace: {n}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}}
subjects:
- {{kind: ServiceAccount, name: reader, namespace: {n}}}
"#
    );
    let out = kubectl(&["apply", "-f", "-"], Some(&rbac)).await;
    assert!(out.success, "kubectl apply failed: {}", out.stderr);

    let user = format!("system:serviceaccount:{n}:reader");
    let can_i = |verb: &'static str, resource: &'static str, namespace: String| {
        let user = user.clone();
        async move {
            let out = kubectl(
                &[
                    "auth", "can-i", verb, resource, "-n", &namespace, "--as", &user,
                ],
                None,
            )
            .await;
            out.stdout.trim().to_owned()
        }
    };
    // The RBAC authorizer learns about new bindings through a watch: allow it a moment.
    wait_for(
        "RBAC to allow the reader to list configmaps",
        Duration::from_secs(20),
        || async {
            let answer = can_i("list", "configmaps", n.to_owned()).await;
            if answer == "yes" { Ok(()) } else { Err(answer) }
        },
    )
    .await;
    assert_eq!(can_i("get", "configmaps", n.to_owned()).await, "yes");
    assert_eq!(can_i("delete", "configmaps", n.to_owned()).await, "no");
    assert_eq!(can_i("list", "secrets", n.to_owned()).await, "no");
    assert_eq!(
        can_i("list", "configmaps", "default".to_owned()).await,
        "no"
    );

    // A real token from the TokenRequest API, used by a real client.
    let out = kubectl(
        &["create", "token", "reader", "-n", n, "--duration=10m"],
        None,
    )
    .await;
    assert!(out.success, "kubectl create token failed: {}", out.stderr);
    let token = out.stdout.trim().to_owned();
    let reader = client_with_token(&token).await;
    let cms: Api<ConfigMap> = Api::namespaced(reader.clone(), n);
    let listed = cms
        .list(&ListParams::default())
        .await
        .expect("the reader may list configmaps");
    // kube-root-ca.crt, published into every namespace by kube-controller-manager.
    assert!(
        listed
            .items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("kube-root-ca.crt")),
        "{listed:?}"
    );

    let rejected = |result: Result<(), kube::Error>, code: u16, what: &str| match result {
        Err(kube::Error::Api(e)) if e.code == code => {}
        other => panic!("{what}: expected HTTP {code}, got {other:?}"),
    };
    rejected(
        cms.delete("kube-root-ca.crt", &DeleteParams::default())
            .await
            .map(drop),
        403,
        "delete configmap",
    );
    let secrets = Api::<Secret>::namespaced(reader.clone(), n)
        .list(&ListParams::default())
        .await;
    rejected(secrets.map(drop), 403, "list secrets");
    let elsewhere = Api::<ConfigMap>::namespaced(reader, "default")
        .list(&ListParams::default())
        .await;
    rejected(
        elsewhere.map(drop),
        403,
        "list configmaps in another namespace",
    );

    ns.cleanup().await;
}

#[tokio::test]
async fn installed_crds_are_served() {
    let client = client().await;
    let crd: CustomResourceDefinition = from_json(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.testenv.atoll.dev"},
        "spec": {
            "group": "testenv.atoll.dev",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}
                }}
            }]
        }
    }));
    install_crds(&client, [crd]).await;

    let ns = TestNamespace::new(&client, "installed_crds_are_served").await;
    let gvk = GroupVersionKind::gvk("testenv.atoll.dev", "v1", "Widget");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns.name(), &ApiResource::from_gvk(&gvk));
    let widget: DynamicObject = from_json(json!({
        "apiVersion": "testenv.atoll.dev/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": 3}
    }));
    widgets
        .create(&PostParams::default(), &widget)
        .await
        .expect("creating a Widget");
    let got = widgets.get("w").await.expect("reading the Widget back");
    assert_eq!(got.data["spec"]["size"], 3);
    ns.cleanup().await;
}
