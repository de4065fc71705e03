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
    // Cluster-wide (the token's ClusterRole lists every namespace): tests
    // running beside this one may have primitives of their own.
    let ours = all["primitives"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["primitive"] == prim)
        .count();
    assert_eq!(ours, 1, "cluster-wide list: {all}");
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

/// The server with `limits`, compatibility mode in `ns`.
async fn serve_with(
    client: &kube::Client,
    ns: &str,
    limits: atoll::grpc::GrpcLimits,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    atoll_testenv::install_crds(client, atoll::api::crds()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_ready, ready) = tokio::sync::watch::channel(true);
    let server = atoll::grpc::Server {
        client: client.clone(),
        renderer: atoll_e2e::renderer(),
        ready,
        tls: None,
        auth: atoll::grpc::AuthConfig::kubernetes([ns]),
        limits,
        liveness: atoll::grpc::Liveness::new(ns),
        namespace: None,
        metrics: Default::default(),
    };
    let task = tokio::spawn(async move {
        let _ready = _ready;
        let _ = server.serve(listener, std::future::pending()).await;
    });
    (addr, task)
}

#[tokio::test]
async fn connections_streams_and_call_rates_are_bounded() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "grpc-limits").await;
    let n = ns.name();
    let limits = atoll::grpc::GrpcLimits {
        max_connections: 1,
        max_streams_per_connection: 2,
        requests_per_second: 1,
        burst: 4,
    };
    let (addr, server) = serve_with(&client, n, limits).await;

    // Two streams fill the connection: a third call on it waits.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut members = MembershipServiceClient::new(channel.clone());
    let mut open = Vec::new();
    for member in ["s1", "s2"] {
        let stream = members
            .join_group(join_request(n, member))
            .await
            .unwrap()
            .into_inner();
        open.push(stream);
    }
    let mut third = MembershipServiceClient::new(channel.clone());
    let waiting = tokio::spawn(async move { third.join_group(join_request("x", "s3")).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a third stream on a connection allowing two must wait"
    );

    // A second connection is not served while the first is open: its call
    // gets no answer at all (refused or not) within 2 s.
    let second = tokio::time::timeout(Duration::from_secs(2), async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await;
        match channel {
            Ok(channel) => {
                let reply = MembershipServiceClient::new(channel)
                    .join_group(join_request(n, "elsewhere"))
                    .await;
                format!("answered: {:?}", reply.map(|_| ()))
            }
            Err(e) => format!("connect failed: {e}"),
        }
    })
    .await;
    assert!(
        second.is_err(),
        "a second connection was served: {second:?}"
    );

    // Closing the first connection's streams lets the waiting call in (it
    // is refused for its namespace, which proves it was heard). Then the
    // per-peer rate: a burst of 4, refilled at 1 call/s, runs out within
    // a few more calls.
    drop(open);
    let third = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting call runs once streams close")
        .unwrap();
    assert_eq!(
        third.unwrap_err().code(),
        Code::Unauthenticated,
        "namespace x is not anonymous"
    );
    let mut refused = None;
    for i in 0..10 {
        let member = format!("r{i}");
        match members.join_group(join_request(n, &member)).await {
            Ok(stream) => drop(stream),
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("a burst of 4 and 1 call/s refuses within 10 quick calls");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("over its rate"),
        "{}",
        refused.message()
    );
    server.abort();
    ns.cleanup().await;
}

/// `openssl` with `args` in `dir`; panics with its stderr on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and client certificates for
/// `alice` (group `atoll-testers`) and `mallory`, all signed by the CA:
/// the commands docs/grpc.md gives.
fn certificates(dir: &std::path::Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=atoll-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    let sign = |name: &str, subject: &str, ext: &str| {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                subject,
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        let (csr, crt, extfile) = (
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        // Extensions make it an X.509 v3 certificate, which rustls requires.
        std::fs::write(dir.join(&extfile), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "1",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-extfile",
                &extfile,
            ],
        );
    };
    sign(
        "server",
        "/CN=atoll-grpc",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    let client = "extendedKeyUsage=clientAuth\n";
    sign("alice", "/CN=alice/O=atoll-testers", client);
    sign("mallory", "/CN=mallory", client);
}

#[tokio::test]
async fn client_certificates_identify_callers_over_mutual_tls() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "grpc-mtls").await;
    let n = ns.name();
    let dir = std::env::temp_dir().join(format!("atoll-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    // The group of alice's certificate may list Databases in the namespace.
    grant_in(
        n,
        "testers",
        json!({"kind": "Group", "name": "atoll-testers", "apiGroup": "rbac.authorization.k8s.io"}),
        json!([{"apiGroups": ["atoll.dev"], "resources": ["databases"], "verbs": ["list"]}]),
    )
    .await;
    atoll_testenv::install_crds(&client, atoll::api::crds()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_ready, ready) = tokio::sync::watch::channel(true);
    let server = atoll::grpc::Server {
        client: client.clone(),
        renderer: atoll_e2e::renderer(),
        ready,
        tls: Some(atoll::grpc::TlsFiles {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            client_ca: Some(dir.join("ca.crt")),
        }),
        auth: atoll::grpc::AuthConfig::kubernetes(Vec::<String>::new()),
        limits: Default::default(),
        liveness: atoll::grpc::Liveness::new(n),
        namespace: None,
        metrics: Default::default(),
    };
    let task = tokio::spawn(server.serve(listener, std::future::pending()));
    let grpcurl = tokio::task::spawn_blocking(atoll_testenv::grpcurl)
        .await
        .unwrap();
    let list = |who: Option<&'static str>| {
        let mut cmd = tokio::process::Command::new(&grpcurl);
        cmd.arg("-cacert").arg(dir.join("ca.crt"));
        if let Some(who) = who {
            cmd.arg("-cert").arg(dir.join(format!("{who}.crt")));
            cmd.arg("-key").arg(dir.join(format!("{who}.key")));
        }
        cmd.args([
            "-d",
            &json!({"namespace": n}).to_string(),
            &addr.to_string(),
            "atomix.database.DatabaseService/GetDatabases",
        ]);
        async move {
            let out = cmd.output().await.expect("running grpcurl");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        }
    };
    let (ok, out) = eventually("alice lists Databases with her certificate", || async {
        match list(Some("alice")).await {
            (true, out) => Ok((true, out)),
            (false, out) => Err(out),
        }
    })
    .await;
    assert!(ok, "{out}");
    let (ok, out) = list(Some("mallory")).await;
    assert!(
        !ok && out.contains("PermissionDenied")
            && out.contains("User \"mallory\" cannot list resource \"databases\""),
        "{out}"
    );
    let (ok, out) = list(None).await;
    assert!(
        !ok && out.contains("Unauthenticated"),
        "TLS without a client certificate or token: {out}"
    );
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
    ns.cleanup().await;
}
