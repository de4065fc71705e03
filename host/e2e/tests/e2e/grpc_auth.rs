//! Who may call the gRPC API: real ServiceAccount tokens from the
//! TokenRequest API (`kubectl create token --audience atoll`), verified by
//! the API server's TokenReview and authorized by SubjectAccessReview
//! against RBAC the test grants; anonymous callers only in the namespaces
//! of compatibility mode; client certificates over mutual TLS.

use std::net::SocketAddr;
use std::time::Duration;

use atoll::grpc::proto::atomix::membership::{
    GroupId, JoinGroupRequest, Member, MemberId, membership_service_client::MembershipServiceClient,
};
use atoll_e2e::k;
use atoll_testenv::{TestNamespace, kubectl, wait_for};
use serde_json::json;
use tonic::Code;

use crate::grpc::{call, fail, present_token, start_grpc};

/// A bearer token and the cluster-scoped RBAC objects granting it, which
/// [`Token::revoke`] deletes (a namespace's deletion takes the rest).
pub(crate) struct Token {
    pub(crate) token: String,
    /// Also the subject's user name.
    pub(crate) user: String,
    cluster_object: Option<String>,
}

impl Token {
    pub(crate) async fn revoke(self) {
        if let Some(name) = self.cluster_object {
            for kind in ["clusterrolebinding", "clusterrole"] {
                let out = kubectl(&["delete", kind, &name, "--ignore-not-found"], None).await;
                assert!(out.success, "{}", out.stderr);
            }
        }
    }
}

async fn apply(yaml: &str) {
    let out = kubectl(&["apply", "-f", "-"], Some(yaml)).await;
    assert!(out.success, "{}\n{yaml}", out.stderr);
}

/// ServiceAccount `sa` in `ns` and a token for it with `audience`.
async fn service_account_token(ns: &str, sa: &str, audience: Option<&str>) -> String {
    apply(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {sa}, namespace: {ns}}}\n"
    ))
    .await;
    let mut args = vec!["create", "token", sa, "-n", ns, "--duration", "10m"];
    if let Some(audience) = audience {
        args.extend(["--audience", audience]);
    }
    let out = kubectl(&args, None).await;
    assert!(out.success, "{}", out.stderr);
    out.stdout.trim().to_string()
}

/// A token (audience `atoll`) of ServiceAccount `sa` in `ns`, granted
/// `rules` (JSON) cluster-wide.
pub(crate) async fn cluster_token(ns: &str, sa: &str, rules: &str) -> Token {
    let token = service_account_token(ns, sa, Some("atoll")).await;
    let name = format!("{ns}-{sa}");
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name}, "rules": serde_json::from_str::<serde_json::Value>(rules).unwrap()});
    apply(&role.to_string()).await;
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]});
    apply(&binding.to_string()).await;
    Token {
        token,
        user: format!("system:serviceaccount:{ns}:{sa}"),
        cluster_object: Some(name),
    }
}

/// Grant `subject` (RBAC subject JSON) `rules` in namespace `ns`.
async fn grant_in(ns: &str, name: &str, subject: serde_json::Value, rules: serde_json::Value) {
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name, "namespace": ns}, "rules": rules});
    apply(&role.to_string()).await;
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [subject]});
    apply(&binding.to_string()).await;
}

fn join_request(ns: &str, member: &str) -> JoinGroupRequest {
    JoinGroupRequest {
        member: Some(Member {
            id: Some(MemberId {
                name: member.into(),
                namespace: ns.into(),
            }),
            host: "10.1.2.3".into(),
            port: 5000,
        }),
        group_id: Some(GroupId {
            name: "workers".into(),
            namespace: ns.into(),
        }),
    }
}

/// JoinGroup in `ns` presenting `token`: the members of the first list, or
/// the status. The stream stays open until `hold` ends.
async fn join(
    addr: SocketAddr,
    ns: &str,
    member: &str,
    token: Option<&str>,
) -> Result<
    (
        Vec<String>,
        tonic::Streaming<atoll::grpc::proto::atomix::membership::JoinGroupResponse>,
    ),
    tonic::Status,
> {
    let mut client = MembershipServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(join_request(ns, member));
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut stream = client.join_group(request).await?.into_inner();
    let first = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("a first member list within 30 s")?
        .expect("a first member list");
    let names = first
        .members
        .iter()
        .map(|m| m.id.clone().unwrap_or_default().name)
        .collect();
    Ok((names, stream))
}

/// Wait until `check` stops failing (RBAC caches take a moment to see new
/// bindings; atoll remembers a denial for 5 s).
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    wait_for(what, Duration::from_secs(30), check).await
}

#[tokio::test]
async fn a_service_account_acts_where_rbac_allows_it_and_nowhere_else() {
    let client = atoll_testenv::client().await;
    let a = TestNamespace::new(&client, "auth-a").await;
    let b = TestNamespace::new(&client, "auth-b").await;
    let grpc = start_grpc(&client, true, &[]).await;
    let token = service_account_token(a.name(), "joiner", Some("atoll")).await;
    let user = format!("system:serviceaccount:{}:joiner", a.name());
    grant_in(
        a.name(),
        "joiner",
        json!({"kind": "ServiceAccount", "name": "joiner", "namespace": a.name()}),
        json!([{"apiGroups": ["atoll.dev"], "resources": ["members"], "verbs": ["create"]}]),
    )
    .await;

    let (members, stream) = eventually("joiner may join in its namespace", || async {
        join(grpc.addr, a.name(), "one", Some(&token))
            .await
            .map_err(|s| format!("{s:?}"))
    })
    .await;
    assert_eq!(members, ["one"]);
    let record = k(
        a.name(),
        &["get", "member", "one", "-o", "jsonpath={.spec.host}"],
        None,
    )
    .await;
    assert_eq!(record, "10.1.2.3");

    // The same token in B: denied, in the words RBAC uses.
    let denied = join(grpc.addr, b.name(), "one", Some(&token))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let want = format!(
        "User \"{user}\" cannot create resource \"members\" in API group \"atoll.dev\" in the namespace \"{}\"",
        b.name()
    );
    assert!(denied.message().starts_with(&want), "{}", denied.message());
    let records = k(b.name(), &["get", "members", "-o", "name"], None).await;
    assert!(records.is_empty(), "nothing written in B: {records}");

    // No credentials, a token for another audience, garbage: unauthenticated.
    let anonymous = join(grpc.addr, a.name(), "two", None).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert!(
        anonymous.message().contains("--grpc-anonymous-namespaces"),
        "{}",
        anonymous.message()
    );
    let other_audience = service_account_token(a.name(), "joiner", None).await;
    let refused = join(grpc.addr, a.name(), "two", Some(&other_audience))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("audience atoll"),
        "{}",
        refused.message()
    );
    let garbage = join(grpc.addr, a.name(), "two", Some("not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::Unauthenticated);

    drop(stream);
    drop(grpc);
    a.cleanup().await;
    b.cleanup().await;
}

#[tokio::test]
async fn anonymous_callers_act_only_in_the_listed_namespaces() {
    let client = atoll_testenv::client().await;
    let legacy = TestNamespace::new(&client, "auth-legacy").await;
    let other = TestNamespace::new(&client, "auth-other").await;
    let grpc = start_grpc(&client, true, &[legacy.name()]).await;
    let (members, stream) = join(grpc.addr, legacy.name(), "old-client", None)
        .await
        .unwrap();
    assert_eq!(members, ["old-client"]);
    let refused = join(grpc.addr, other.name(), "old-client", None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains(&format!(
            "only {} (--grpc-anonymous-namespaces)",
            legacy.name()
        )),
        "{}",
        refused.message()
    );
    // Anonymous lists across namespaces see the listed ones only.
    for ns in [legacy.name(), other.name()] {
        let primitive = format!(
            "apiVersion: atoll.dev/v1alpha1\nkind: Primitive\nmetadata: {{name: hits}}\nspec: {{database: {{name: sessions, namespace: {ns}}}, type: COUNTER}}\n"
        );
        k(ns, &["apply", "-f", "-"], Some(&primitive)).await;
    }
    let listed = call(
        grpc.addr,
        "atomix.primitive.PrimitiveService/GetPrimitives",
        json!({}),
    )
    .await;
    let namespaces: Vec<&str> = listed["primitives"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["primitive"]["namespace"].as_str())
        .collect();
    assert_eq!(namespaces, [legacy.name()], "{listed}");
    drop(stream);
    drop(grpc);
    legacy.cleanup().await;
    other.cleanup().await;
}

#[tokio::test]
async fn grpcurl_with_a_bearer_token_calls_every_service() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "auth-grpcurl").await;
    let n = ns.name();
    let op = atoll_e2e::Operator::start(&client, n).await;
    k(n, &["apply", "-f", "-"], Some(&atoll_e2e::example("cache"))).await;
    atoll_e2e::wait_ready(&client, n, "sessions").await;
    let grpc = start_grpc(&client, true, &[]).await;
    let token = cluster_token(
        n,
        "app",
        r#"[{"apiGroups":["atoll.dev"],"resources":["databases"],"verbs":["get","list","create"]},
            {"apiGroups":["atoll.dev"],"resources":["primitives"],"verbs":["create","get","list","delete"]},
            {"apiGroups":["atoll.dev"],"resources":["storageplugins"],"verbs":["list"]}]"#,
    )
    .await;

    // Anonymous first: refused everywhere but reflection and health.
    let (code, _) = fail(
        grpc.addr,
        "atomix.database.DatabaseService/GetDatabases",
        json!({"namespace": n}),
    )
    .await;
    assert_eq!(code, "Unauthenticated");
    present_token(grpc.addr, &token.token);
    let db = json!({"name": "sessions", "namespace": n});
    let prim = json!({"name": "hits", "namespace": n});
    let listed = eventually("GetDatabases with the token", || async {
        let (code, message) = match crate::grpc::try_call(
            grpc.addr,
            "atomix.database.DatabaseService/GetDatabases",
            json!({"namespace": n}),
        )
        .await
        {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        Err(format!("{code}: {message}"))
    })
    .await;
    assert_eq!(listed["databases"][0]["id"]["name"], "sessions", "{listed}");
    let got = call(
        grpc.addr,
        "atomix.database.DatabaseService/GetDatabase",
        json!({"id": db}),
    )
    .await;
    assert_eq!(
        got["database"]["partitions"].as_array().unwrap().len(),
        4,
        "{got}"
    );
    call(
        grpc.addr,
        "atomix.primitive.PrimitiveService/CreatePrimitive",
        json!({"database": db, "primitive": prim, "type": "MAP"}),
    )
    .await;
    call(
        grpc.addr,
        "atomix.primitive.PrimitiveService/GetPrimitive",
        json!({"database": db, "primitive": prim}),
    )
    .await;
    let all = call(
        grpc.addr,
        "atomix.primitive.PrimitiveService/GetPrimitives",
        json!({}),
    )
    .await;
    assert_eq!(
        all["primitives"].as_array().unwrap().len(),
        1,
        "cluster-wide list: {all}"
    );
    call(
        grpc.addr,
        "atomix.primitive.PrimitiveService/DeletePrimitive",
        json!({"database": db, "primitive": prim}),
    )
    .await;
    let plugins = call(
        grpc.addr,
        "atoll.v1alpha1.PluginService/ListPlugins",
        json!({}),
    )
    .await;
    assert_eq!(plugins["plugins"].as_array().unwrap().len(), 5);
    let rendered = call(
        grpc.addr,
        "atoll.v1alpha1.PluginService/RenderDatabase",
        json!({"manifest": atoll_e2e::example("cache")}),
    )
    .await;
    assert_eq!(rendered["plugin"]["name"], "cache");
    // Members are not granted: JoinGroup is denied naming what is missing.
    let denied = join(grpc.addr, n, "m", Some(&token.token))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains(&format!(
            "User \"{}\" cannot create resource \"members\"",
            token.user
        )),
        "{}",
        denied.message()
    );

    token.revoke().await;
    op.stop().await;
    ns.cleanup().await;
}
