//! The gRPC API against the real control plane: an in-process controller per
//! test namespace and the gRPC server on an ephemeral port, called with
//! grpcurl (built from its own sources at a pinned tag, sharing no code with
//! atoll) and, for membership streams, a tonic client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use atoll::grpc::proto::atomix::membership::{
    GroupId, JoinGroupRequest, JoinGroupResponse, Member, MemberId,
    membership_service_client::MembershipServiceClient,
};
use atoll_e2e::{Operator, example, k, wait_ready};
use atoll_testenv::{TestNamespace, wait_for};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

/// The gRPC server on 127.0.0.1 (ephemeral port), stopped on drop.
pub(crate) struct Grpc {
    pub(crate) addr: SocketAddr,
    ready: watch::Sender<bool>,
    _stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), atoll::grpc::ServeError>>,
}

impl Drop for Grpc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The server with CRDs installed, its instance Lease in `default` (swept
/// there by the others should a test leave it behind); callers without
/// credentials may act in `anonymous` (compatibility mode, as legacy Atomix
/// clients need).
pub(crate) async fn start_grpc(client: &kube::Client, ready: bool, anonymous: &[&str]) -> Grpc {
    atoll_testenv::install_crds(client, atoll::api::crds()).await;
    serve_as(
        client,
        ready,
        atoll::grpc::Liveness::new("default"),
        anonymous,
    )
    .await
}

/// The server calling Kubernetes as `client` (CRDs already installed).
pub(crate) async fn serve_as(
    client: &kube::Client,
    ready: bool,
    liveness: atoll::grpc::Liveness,
    anonymous: &[&str],
) -> Grpc {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (ready_tx, ready_rx) = watch::channel(ready);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = atoll::grpc::Server {
        client: client.clone(),
        renderer: atoll_e2e::renderer(),
        ready: ready_rx,
        tls: None,
        auth: atoll::grpc::AuthConfig::kubernetes(anonymous.iter().copied()),
        limits: Default::default(),
        metrics: Default::default(),
        liveness,
        namespace: None,
    };
    let task = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    Grpc {
        addr,
        ready: ready_tx,
        _stop: stop,
        task,
    }
}

/// A grpcurl call: every JSON response, or the status code name and message.
type Reply = Result<Vec<Value>, (String, String)>;

/// The bearer token grpcurl presents to the server at an address (none:
/// it calls anonymously).
static TOKENS: std::sync::Mutex<BTreeMap<SocketAddr, String>> =
    std::sync::Mutex::new(BTreeMap::new());

/// From now on, grpcurl calls to `addr` present `token`.
pub(crate) fn present_token(addr: SocketAddr, token: &str) {
    TOKENS.lock().unwrap().insert(addr, token.to_string());
}

/// `grpcurl -plaintext [extra] [-d data] <addr> <args>`, with the bearer
/// token registered for `addr` if any.
async fn grpcurl(addr: SocketAddr, extra: &[&str], data: Option<&Value>, args: &[&str]) -> Reply {
    let bin = tokio::task::spawn_blocking(atoll_testenv::grpcurl)
        .await
        .expect("installing grpcurl");
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("-plaintext").args(extra);
    if let Some(token) = TOKENS.lock().unwrap().get(&addr) {
        cmd.args(["-H", &format!("authorization: Bearer {token}")]);
    }
    if data.is_some() {
        // From stdin: a request can be larger than one argument may be.
        cmd.args(["-d", "@"]);
    }
    let mut child = cmd
        .arg(addr.to_string())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("running grpcurl");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(data) = data {
        // grpcurl may stop reading early (e.g. on a refused request).
        let _ = stdin.write_all(data.to_string().as_bytes()).await;
    }
    drop(stdin);
    let out = child.wait_with_output().await.expect("waiting for grpcurl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        // `list` prints names, one a line; calls print JSON documents.
        if args.first() == Some(&"list") || args.first() == Some(&"describe") {
            return Ok(vec![Value::String(stdout)]);
        }
        let docs = serde_json::Deserializer::from_str(&stdout)
            .into_iter::<Value>()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("grpcurl printed non-JSON ({e}): {stdout}"));
        return Ok(docs);
    }
    let field = |name: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
    };
    match (field("Code:"), field("Message:")) {
        (Some(code), message) => Err((code, message.unwrap_or_default())),
        _ => panic!("grpcurl {args:?} failed without a gRPC status: {stderr}{stdout}"),
    }
}

/// One unary call: its response, or the status code name and message.
pub(crate) async fn try_call(
    addr: SocketAddr,
    method: &str,
    data: Value,
) -> Result<Value, (String, String)> {
    match grpcurl(addr, &[], Some(&data), &[method]).await {
        Ok(mut docs) if docs.len() == 1 => Ok(docs.remove(0)),
        Ok(docs) => panic!("{method} {data}: {} responses: {docs:?}", docs.len()),
        Err(status) => Err(status),
    }
}

/// One unary call that must succeed; its response.
pub(crate) async fn call(addr: SocketAddr, method: &str, data: Value) -> Value {
    match grpcurl(addr, &[], Some(&data), &[method]).await {
        Ok(mut docs) if docs.len() == 1 => docs.remove(0),
        other => panic!("{method} {data}: {other:?}"),
    }
}

/// One unary call that must fail; its code name and message.
pub(crate) async fn fail(addr: SocketAddr, method: &str, data: Value) -> (String, String) {
    match grpcurl(addr, &[], Some(&data), &[method]).await {
        Err(status) => status,
        Ok(docs) => panic!("{method} {data} succeeded: {docs:?}"),
    }
}

const DB: &str = "atomix.database.DatabaseService";
const MEMBERS: &str = "atomix.membership.MembershipService";
const PRIMS: &str = "atomix.primitive.PrimitiveService";
const PLUGINS: &str = "atoll.v1alpha1.PluginService";

#[tokio::test]
async fn reflection_lists_every_service_and_method() {
    let client = atoll_testenv::client().await;
    let grpc = start_grpc(&client, true, &[]).await;
    let Ok(list) = grpcurl(grpc.addr, &[], None, &["list"]).await else {
        panic!("grpcurl list failed");
    };
    let list = list[0].as_str().unwrap().to_string();
    for service in [
        DB,
        MEMBERS,
        PRIMS,
        PLUGINS,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(list.lines().any(|l| l == service), "{service} in {list}");
    }
    for (service, methods) in [
        (DB, &["GetDatabase", "GetDatabases"][..]),
        (MEMBERS, &["JoinGroup"][..]),
        (
            PRIMS,
            &[
                "CreatePrimitive",
                "GetPrimitive",
                "GetPrimitives",
                "DeletePrimitive",
            ][..],
        ),
        (PLUGINS, &["ListPlugins", "GetPlugin", "RenderDatabase"][..]),
    ] {
        let Ok(listed) = grpcurl(grpc.addr, &[], None, &["list", service]).await else {
            panic!("grpcurl list {service} failed");
        };
        let listed = listed[0].as_str().unwrap().to_string();
        for method in methods {
            assert!(
                listed.lines().any(|l| l == format!("{service}.{method}")),
                "{method} in {listed}"
            );
        }
    }
    // The wire contract: field numbers as in atomix/api v0.3.3.
    let Ok(described) = grpcurl(
        grpc.addr,
        &[],
        None,
        &["describe", "atomix.primitive.PrimitiveMetadata"],
    )
    .await
    else {
        panic!("describe failed");
    };
    let described = described[0].as_str().unwrap();
    for field in [
        ".atomix.database.DatabaseId database = 1;",
        ".atomix.primitive.PrimitiveId primitive = 2;",
        ".atomix.primitive.PrimitiveType type = 3;",
    ] {
        assert!(described.contains(field), "{field} in {described}");
    }
}

#[tokio::test]
async fn health_follows_readiness() {
    let client = atoll_testenv::client().await;
    let grpc = start_grpc(&client, false, &[]).await;
    let check = |service: &'static str| async move {
        call(
            grpc.addr,
            "grpc.health.v1.Health/Check",
            json!({ "service": service }),
        )
        .await["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(check("").await, "NOT_SERVING");
    assert_eq!(check(DB).await, "NOT_SERVING");
    grpc.ready.send(true).unwrap();
    for service in ["", DB, MEMBERS, PRIMS, PLUGINS] {
        wait_for(
            &format!("health of {service:?} to be SERVING"),
            Duration::from_secs(10),
            || async move {
                let s = check(service).await;
                if s == "SERVING" { Ok(()) } else { Err(s) }
            },
        )
        .await;
    }
    grpc.ready.send(false).unwrap();
    wait_for(
        "health NOT_SERVING again",
        Duration::from_secs(10),
        || async {
            let s = check("").await;
            if s == "NOT_SERVING" { Ok(()) } else { Err(s) }
        },
    )
    .await;
    let (code, _) = fail(
        grpc.addr,
        "grpc.health.v1.Health/Check",
        json!({ "service": "no.such.Service" }),
    )
    .await;
    assert_eq!(code, "NotFound");
}

/// `(partition id, serviceName, port)` of the Partition records of `db`.
async fn partition_records(ns: &str, db: &str) -> Vec<(i64, String, i64)> {
    let out = k(
        ns,
        &[
            "get",
            "partitions",
            "-l",
            &format!("atoll.dev/database={db}"),
            "-o",
            "json",
        ],
        None,
    )
    .await;
    let list: Value = serde_json::from_str(&out).unwrap();
    let mut records: Vec<(i64, String, i64)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["spec"]["partitionId"].as_i64().unwrap(),
                p["spec"]["serviceName"].as_str().unwrap().to_string(),
                p["spec"]["port"].as_i64().unwrap(),
            )
        })
        .collect();
    records.sort();
    records
}

/// Names of the Databases GetDatabases returns for `namespace`, as `ns/name`.
async fn listed_databases(addr: SocketAddr, namespace: &str) -> Vec<String> {
    let reply = call(
        addr,
        &format!("{DB}/GetDatabases"),
        json!({ "namespace": namespace }),
    )
    .await;
    let mut names: Vec<String> = reply["databases"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["id"]["namespace"].as_str().unwrap(),
                d["id"]["name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn databases_show_ready_partitions_with_dns_names_per_namespace() {
    let client = atoll_testenv::client().await;
    let a = TestNamespace::new(&client, "grpc-databases-a").await;
    let b = TestNamespace::new(&client, "grpc-databases-b").await;
    let op_a = Operator::start(&client, a.name()).await;
    let op_b = Operator::start(&client, b.name()).await;
    let grpc = start_grpc(&client, true, &[a.name(), b.name()]).await;
    k(a.name(), &["apply", "-f", "-"], Some(&example("raft"))).await;
    k(b.name(), &["apply", "-f", "-"], Some(&example("cache"))).await;
    let orders = wait_ready(&client, a.name(), "orders").await;
    wait_ready(&client, b.name(), "sessions").await;

    let reply = call(
        grpc.addr,
        &format!("{DB}/GetDatabase"),
        json!({ "id": { "name": "orders", "namespace": a.name() } }),
    )
    .await;
    let database = &reply["database"];
    assert_eq!(
        database["id"],
        json!({ "name": "orders", "namespace": a.name() })
    );
    let partitions = database["partitions"].as_array().unwrap();
    let records = partition_records(a.name(), "orders").await;
    assert_eq!(partitions.len(), 6, "{reply}");
    assert_eq!(records.len(), 6);
    let status = orders.status.unwrap();
    for (p, (id, service, port)) in partitions.iter().zip(&records) {
        assert_eq!(p["partitionId"]["partition"].as_i64(), Some(*id), "{p}");
        let host = format!("{service}.{}.svc.cluster.local", a.name());
        assert_eq!(
            p["endpoints"],
            json!([{ "host": host, "port": port }]),
            "{p}"
        );
        // The same endpoint the controller wrote into the Database's status.
        let written = status
            .partitions
            .iter()
            .find(|s| i64::from(s.id) == *id)
            .unwrap();
        assert_eq!(written.endpoint, format!("{host}:{port}"));
    }

    assert_eq!(
        listed_databases(grpc.addr, a.name()).await,
        [format!("{}/orders", a.name())]
    );
    assert_eq!(
        listed_databases(grpc.addr, b.name()).await,
        [format!("{}/sessions", b.name())]
    );
    let all = listed_databases(grpc.addr, "").await;
    for want in [
        format!("{}/orders", a.name()),
        format!("{}/sessions", b.name()),
    ] {
        assert!(all.contains(&want), "{want} in {all:?}");
    }

    let (code, message) = fail(
        grpc.addr,
        &format!("{DB}/GetDatabase"),
        json!({ "id": { "name": "nope", "namespace": a.name() } }),
    )
    .await;
    assert_eq!(code, "NotFound", "{message}");
    assert!(message.contains("nope"), "{message}");
    let (code, _) = fail(grpc.addr, &format!("{DB}/GetDatabase"), json!({})).await;
    assert_eq!(code, "InvalidArgument");

    // Discovery is all or nothing: a raft Database whose plugin config is
    // invalid never gets its partition Services, so it is UNAVAILABLE (the
    // code Atomix clients retry) and left out of the list.
    k(
        a.name(),
        &["apply", "-f", "-"],
        Some("apiVersion: atoll.dev/v1alpha1\nkind: Database\nmetadata: {name: broken}\nspec: {partitions: 1, storage: {plugin: raft, config: {clusters: 0}}}\n"),
    )
    .await;
    atoll_e2e::wait_condition(&client, a.name(), "broken", "Degraded", "InvalidSpec").await;
    let (code, message) = fail(
        grpc.addr,
        &format!("{DB}/GetDatabase"),
        json!({ "id": { "name": "broken", "namespace": a.name() } }),
    )
    .await;
    assert_eq!(code, "Unavailable", "{message}");
    assert!(
        message.contains("partition 1 has no Service yet"),
        "{message}"
    );
    assert_eq!(
        listed_databases(grpc.addr, a.name()).await,
        [format!("{}/orders", a.name())]
    );

    op_a.stop().await;
    op_b.stop().await;
    a.cleanup().await;
    b.cleanup().await;
}

/// A client to the control plane that counts the LISTs it sends of
/// Databases, Partitions and Primitives (collection GETs without `watch`).
fn counting_lists(config: kube::Config) -> (kube::Client, Arc<AtomicUsize>) {
    let lists = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&lists);
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        let uri = req.uri();
        let collection = uri
            .path()
            .rsplit('/')
            .next()
            .is_some_and(|last| ["databases", "partitions", "primitives"].contains(&last));
        let watch = uri.query().is_some_and(|q| q.contains("watch=true"));
        if req.method() == http::Method::GET && collection && !watch {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        req
    });
    let client = kube::client::ClientBuilder::try_from(config)
        .expect("a client builder")
        .with_layer(&layer)
        .build();
    (client, lists)
}

#[tokio::test]
async fn lists_are_answered_from_watch_caches_not_lists() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "grpc-cached-lists").await;
    let n = ns.name();
    let op = Operator::start(&client, n).await;
    let (counting, lists) = counting_lists(atoll_testenv::config().await);
    let grpc = start_grpc(&counting, true, &[n]).await;
    k(n, &["apply", "-f", "-"], Some(&example("cache"))).await;
    wait_ready(&client, n, "sessions").await;
    let sessions = format!("{n}/sessions");
    // Listed once the caches have it (a watch event after the status write).
    eventually_listed(grpc.addr, n, &sessions).await;
    call(
        grpc.addr,
        &format!("{PRIMS}/CreatePrimitive"),
        json!({ "database": { "name": "sessions", "namespace": n },
                "primitive": { "name": "carts", "namespace": n }, "type": "MAP" }),
    )
    .await;
    let primitives = || async {
        let reply = call(
            grpc.addr,
            &format!("{PRIMS}/GetPrimitives"),
            json!({ "primitive": { "namespace": n } }),
        )
        .await;
        names_of(&reply)
    };
    wait_for("the primitive listed", Duration::from_secs(30), || async {
        let got = primitives().await;
        (got == ["carts"]).then_some(()).ok_or(format!("{got:?}"))
    })
    .await;

    // The caches listed once each at start-up (and a watch may relist);
    // from now on calls send none.
    let before = lists.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(
            listed_databases(grpc.addr, n).await,
            std::slice::from_ref(&sessions)
        );
        assert!(listed_databases(grpc.addr, "").await.contains(&sessions));
        assert_eq!(primitives().await, ["carts"]);
        let reply = call(
            grpc.addr,
            &format!("{DB}/GetDatabase"),
            json!({ "id": { "name": "sessions", "namespace": n } }),
        )
        .await;
        assert_eq!(
            reply["database"]["partitions"].as_array().map(Vec::len),
            Some(4)
        );
    }
    assert_eq!(
        lists.load(Ordering::SeqCst),
        before,
        "80 list calls sent LISTs to the API server"
    );
    assert!(before >= 3, "the caches' own LISTs were counted: {before}");

    drop(grpc);
    op.stop().await;
    ns.cleanup().await;
}

async fn eventually_listed(addr: SocketAddr, namespace: &str, want: &str) {
    wait_for(
        "the Database listed by GetDatabases",
        Duration::from_secs(30),
        || async {
            let got = listed_databases(addr, namespace).await;
            got.iter()
                .any(|d| d == want)
                .then_some(())
                .ok_or(format!("{got:?}"))
        },
    )
    .await;
}

/// Member names of `group` recorded in `ns`, sorted.
async fn member_records(ns: &str, group: &str) -> Vec<String> {
    atoll_e2e::names(ns, "members", &format!("atoll.dev/group={group}")).await
}

/// Wait until the Member records of `group` are exactly `want`.
async fn wait_members(ns: &str, group: &str, want: &[&str], what: &str) {
    wait_for(what, Duration::from_secs(30), || async {
        let left = member_records(ns, group).await;
        if left == want {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
}

fn join(ns: &str, member: &str, port: i32) -> JoinGroupRequest {
    JoinGroupRequest {
        member: Some(Member {
            id: Some(MemberId {
                name: member.into(),
                namespace: ns.into(),
            }),
            host: format!("{member}.example"),
            port,
        }),
        group_id: Some(GroupId {
            name: "workers".into(),
            namespace: ns.into(),
        }),
    }
}

fn names(response: &JoinGroupResponse) -> Vec<String> {
    response
        .members
        .iter()
        .map(|m| m.id.as_ref().unwrap().name.clone())
        .collect()
}

/// The next list on a JoinGroup stream, within 30s.
async fn next(stream: &mut tonic::Streaming<JoinGroupResponse>) -> JoinGroupResponse {
    tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("a member list within 30s")
        .expect("a healthy stream")
        .expect("the stream stays open")
}

#[tokio::test]
async fn members_see_each_other_and_leave_when_their_stream_ends() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "grpc-membership").await;
    let n = ns.name();
    let grpc = start_grpc(&client, true, &[n]).await;
    let url = format!("http://{}", grpc.addr);
    let mut alice = MembershipServiceClient::connect(url.clone()).await.unwrap();
    let mut bob = MembershipServiceClient::connect(url).await.unwrap();

    let mut a = alice
        .join_group(join(n, "alice", 1001))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut a).await;
    assert_eq!(names(&first), ["alice"]);
    assert_eq!(first.group_id.as_ref().unwrap().name, "workers");
    assert_eq!(first.members[0].host, "alice.example");
    assert_eq!(first.members[0].port, 1001);
    assert_eq!(member_records(n, "workers").await, ["alice"]);

    let mut b = bob
        .join_group(join(n, "bob", 1002))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&next(&mut b).await), ["alice", "bob"]);
    assert_eq!(names(&next(&mut a).await), ["alice", "bob"]);
    assert_eq!(member_records(n, "workers").await, ["alice", "bob"]);

    // Bob goes away: his stream (and connection) is dropped.
    drop(b);
    drop(bob);
    assert_eq!(names(&next(&mut a).await), ["alice"]);
    wait_members(n, "workers", &["alice"], "bob's Member to be deleted").await;

    // grpcurl joins too (it prints the first list, then gives up after
    // -max-time, which ends its stream).
    let reply = grpcurl(
        grpc.addr,
        &["-max-time", "3"],
        Some(&json!({
            "member": { "id": { "name": "carol", "namespace": n }, "host": "carol.example", "port": 1003 },
            "groupId": { "name": "workers", "namespace": n },
        })),
        &[&format!("{MEMBERS}/JoinGroup")],
    )
    .await;
    let Err((code, _)) = &reply else {
        panic!("a JoinGroup stream does not end by itself: {reply:?}");
    };
    assert_eq!(code, "DeadlineExceeded");
    assert_eq!(names(&next(&mut a).await), ["alice", "carol"]);
    assert_eq!(names(&next(&mut a).await), ["alice"]);

    // Validation.
    let mut bad = alice.clone();
    let status = bad.join_group(join(n, "", 1)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let mut other_group = join(n, "alice", 1001);
    other_group.group_id.as_mut().unwrap().name = "others".into();
    let status = bad.join_group(other_group).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");

    drop(a);
    drop(alice);
    wait_members(n, "workers", &[], "every Member to be deleted").await;
    ns.cleanup().await;
}

/// `kubectl get primitives` as `name=type@database`, sorted.
async fn primitive_records(ns: &str) -> Vec<String> {
    let out = k(
        ns,
        &[
            "get",
            "primitives",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.spec.type}@{.spec.database.name}{\"\\n\"}{end}",
        ],
        None,
    )
    .await;
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

fn names_of(reply: &Value) -> Vec<String> {
    let mut names: Vec<String> = reply["primitives"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| p["primitive"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn primitives_round_trip_through_primitive_objects() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "grpc-primitives").await;
    let n = ns.name();
    let grpc = start_grpc(&client, true, &[n]).await;
    // Primitives need their Database to exist (not to be Ready).
    k(n, &["apply", "-f", "-"], Some(&example("raft"))).await;
    k(n, &["apply", "-f", "-"], Some(&example("cache"))).await;
    let db = |name: &str| json!({ "name": name, "namespace": n });
    let id = |name: &str| json!({ "name": name, "namespace": n });
    let create = |database: &str, name: &str, type_: &str| json!({ "database": db(database), "primitive": id(name), "type": type_ });

    let created = call(
        grpc.addr,
        &format!("{PRIMS}/CreatePrimitive"),
        create("orders", "hits", "COUNTER"),
    )
    .await;
    assert_eq!(
        created["primitive"],
        json!({ "database": db("orders"), "primitive": id("hits"), "type": "COUNTER" })
    );
    call(
        grpc.addr,
        &format!("{PRIMS}/CreatePrimitive"),
        create("orders", "carts", "MAP"),
    )
    .await;
    call(
        grpc.addr,
        &format!("{PRIMS}/CreatePrimitive"),
        create("sessions", "leader", "ELECTION"),
    )
    .await;
    assert_eq!(
        primitive_records(n).await,
        [
            "carts=MAP@orders",
            "hits=COUNTER@orders",
            "leader=ELECTION@sessions"
        ]
    );

    let got = call(
        grpc.addr,
        &format!("{PRIMS}/GetPrimitive"),
        json!({ "database": db("orders"), "primitive": id("carts") }),
    )
    .await;
    assert_eq!(got["primitive"]["type"], "MAP");

    let list = |filter: Value| {
        let addr = grpc.addr;
        async move { names_of(&call(addr, &format!("{PRIMS}/GetPrimitives"), filter).await) }
    };
    assert_eq!(
        list(json!({ "primitive": { "namespace": n } })).await,
        ["carts", "hits", "leader"]
    );
    assert_eq!(
        list(json!({ "database": db("orders") })).await,
        ["carts", "hits"]
    );
    assert_eq!(
        list(json!({ "database": db("sessions") })).await,
        ["leader"]
    );
    assert_eq!(list(json!({ "primitive": id("hits") })).await, ["hits"]);
    assert_eq!(
        list(json!({ "primitive": { "namespace": n }, "type": "MAP" })).await,
        ["carts"]
    );
    assert_eq!(
        list(json!({ "database": db("orders"), "type": "ELECTION" })).await,
        Vec::<String>::new()
    );
    // No filter at all: every namespace, ours included.
    let all = list(json!({})).await;
    assert!(all.contains(&"leader".to_string()), "{all:?}");

    // Errors a gRPC user expects.
    let (code, message) = fail(
        grpc.addr,
        &format!("{PRIMS}/CreatePrimitive"),
        create("orders", "hits", "MAP"),
    )
    .await;
    assert_eq!(code, "AlreadyExists", "{message}");
    let (code, message) = fail(
        grpc.addr,
        &format!("{PRIMS}/CreatePrimitive"),
        create("orders", "x", "UNKNOWN"),
    )
    .await;
    assert_eq!(code, "InvalidArgument", "{message}");
    assert!(message.contains("type"), "{message}");
    let (code, _) = fail(
        grpc.addr,
        &format!("{PRIMS}/CreatePrimitive"),
        create("orders", "x", "42"),
    )
    .await;
    assert_eq!(code, "InvalidArgument");
    let (code, message) = fail(
        grpc.addr,
        &format!("{PRIMS}/CreatePrimitive"),
        create("orders", "", "MAP"),
    )
    .await;
    assert_eq!(code, "InvalidArgument");
    assert!(message.contains("primitive.name is required"), "{message}");
    let (code, _) = fail(
        grpc.addr,
        &format!("{PRIMS}/CreatePrimitive"),
        create("orders", "Not_A_Name", "MAP"),
    )
    .await;
    assert_eq!(code, "InvalidArgument");
    let (code, message) = fail(
        grpc.addr,
        &format!("{PRIMS}/CreatePrimitive"),
        create("nodb", "x", "MAP"),
    )
    .await;
    assert_eq!(code, "NotFound", "{message}");
    let (code, _) = fail(
        grpc.addr,
        &format!("{PRIMS}/GetPrimitive"),
        json!({ "database": db("orders"), "primitive": id("nope") }),
    )
    .await;
    assert_eq!(code, "NotFound");
    // In another Database: not found there.
    let (code, _) = fail(
        grpc.addr,
        &format!("{PRIMS}/GetPrimitive"),
        json!({ "database": db("sessions"), "primitive": id("hits") }),
    )
    .await;
    assert_eq!(code, "NotFound");
    let (code, _) = fail(
        grpc.addr,
        &format!("{PRIMS}/GetPrimitives"),
        json!({ "type": 11 }),
    )
    .await;
    assert_eq!(code, "InvalidArgument");

    let deleted = call(
        grpc.addr,
        &format!("{PRIMS}/DeletePrimitive"),
        json!({ "database": db("orders"), "primitive": id("hits") }),
    )
    .await;
    assert_eq!(deleted["primitive"]["type"], "COUNTER");
    assert_eq!(
        primitive_records(n).await,
        ["carts=MAP@orders", "leader=ELECTION@sessions"]
    );
    let (code, _) = fail(
        grpc.addr,
        &format!("{PRIMS}/DeletePrimitive"),
        json!({ "database": db("orders"), "primitive": id("hits") }),
    )
    .await;
    assert_eq!(code, "NotFound");
    ns.cleanup().await;
}

#[tokio::test]
async fn plugins_are_listed_and_render_dry_runs() {
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "grpc-plugins").await;
    let grpc = start_grpc(&client, true, &[]).await;
    // PluginService is cluster-wide: no anonymous caller may use it. A
    // ServiceAccount allowed to list plugins and create Databases may.
    let token = crate::grpc_auth::cluster_token(
        ns.name(),
        "plugin-user",
        r#"[{"apiGroups":["atoll.dev"],"resources":["storageplugins"],"verbs":["list"]},
            {"apiGroups":["atoll.dev"],"resources":["databases"],"verbs":["create"]}]"#,
    )
    .await;
    present_token(grpc.addr, &token.token);
    let listed = call(grpc.addr, &format!("{PLUGINS}/ListPlugins"), json!({})).await;
    let plugins = listed["plugins"].as_array().unwrap();
    let mut names: Vec<&str> = plugins
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["cache", "log", "primary-backup", "raft", "redis"]);

    let raft = call(
        grpc.addr,
        &format!("{PLUGINS}/GetPlugin"),
        json!({ "name": "raft" }),
    )
    .await;
    let raft = &raft["plugin"];
    let loaded = atoll_e2e::renderer().registry.get("raft").unwrap();
    assert_eq!(raft["version"], loaded.metadata().version.as_str());
    assert_eq!(raft["digest"], loaded.digest().to_string());
    assert_eq!(raft["source"], "built-in");
    assert_eq!(raft["state"], "PLUGIN_STATE_LOADED");
    let (code, message) = fail(
        grpc.addr,
        &format!("{PLUGINS}/GetPlugin"),
        json!({ "name": "nope" }),
    )
    .await;
    assert_eq!(code, "NotFound");
    assert!(message.contains("raft"), "lists what is loaded: {message}");
    let (code, _) = fail(grpc.addr, &format!("{PLUGINS}/GetPlugin"), json!({})).await;
    assert_eq!(code, "InvalidArgument");

    let rendered = call(
        grpc.addr,
        &format!("{PLUGINS}/RenderDatabase"),
        json!({ "manifest": example("raft") }),
    )
    .await;
    assert_eq!(rendered["plugin"]["name"], "raft");
    let partitions = rendered["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 6);
    for p in partitions {
        let endpoint = p["endpoint"].as_str().unwrap();
        assert_eq!(
            endpoint,
            format!(
                "{}.default.svc.cluster.local:{}",
                p["service"].as_str().unwrap(),
                p["port"]
            ),
        );
    }
    let objects: Vec<Value> = rendered["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| serde_json::from_str(o.as_str().unwrap()).unwrap())
        .collect();
    let kinds = |kind: &str| objects.iter().filter(|o| o["kind"] == kind).count();
    assert_eq!(kinds("Partition"), 6);
    assert_eq!(kinds("StatefulSet"), 3);

    let (code, message) = fail(
        grpc.addr,
        &format!("{PLUGINS}/RenderDatabase"),
        json!({ "manifest": example("raft").replace("partitions: 6", "partitions: 0") }),
    )
    .await;
    assert_eq!(code, "InvalidArgument");
    assert!(message.contains("spec.partitions"), "{message}");
    let (code, _) = fail(
        grpc.addr,
        &format!("{PLUGINS}/RenderDatabase"),
        json!({ "manifest": example("raft").replace("plugin: raft", "plugin: nope") }),
    )
    .await;
    assert_eq!(code, "NotFound");
    let (code, _) = fail(
        grpc.addr,
        &format!("{PLUGINS}/RenderDatabase"),
        json!({ "manifest": "{" }),
    )
    .await;
    assert_eq!(code, "InvalidArgument");
    // Over the 4 MiB message limit: refused before decoding.
    let huge = format!("# {}\n{}", "x".repeat(5 << 20), example("raft"));
    let (code, _) = fail(
        grpc.addr,
        &format!("{PLUGINS}/RenderDatabase"),
        json!({ "manifest": huge }),
    )
    .await;
    assert_eq!(code, "ResourceExhausted");
    // The server is still answering.
    call(grpc.addr, &format!("{PLUGINS}/ListPlugins"), json!({})).await;
    token.revoke().await;
    ns.cleanup().await;
}

/// `atoll run` serves the API over TLS on `--grpc-addr`, health follows its
/// readiness, and SIGTERM stops it cleanly.
#[tokio::test]
async fn atoll_run_serves_grpc_over_tls_and_stops_on_sigterm() {
    let _records = atoll_e2e::plugin_records_shared().await; // atoll run writes them
    let client = atoll_testenv::client().await;
    atoll_testenv::install_crds(&client, atoll::api::crds()).await;
    let ns = TestNamespace::new(&client, "grpc-run-tls").await;
    let dir = std::env::temp_dir().join(format!("atoll-grpc-tls-{}", ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let openssl = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("running openssl");
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    // A free port: bind, note it, release it for atoll.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let log = dir.join("atoll.log");
    let mut atoll = tokio::process::Command::new(atoll_e2e::atoll_bin())
        .args([
            "run",
            "--namespace",
            ns.name(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--grpc-anonymous-namespaces",
            ns.name(),
        ])
        .args(["--grpc-addr", &addr, "--grpc-tls-cert"])
        .arg(&cert)
        .arg("--grpc-tls-key")
        .arg(&key)
        .env("KUBECONFIG", atoll_testenv::kubeconfig_env())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let grpcurl = tokio::task::spawn_blocking(atoll_testenv::grpcurl)
        .await
        .unwrap();
    let health = |tls: bool| {
        let mut cmd = tokio::process::Command::new(&grpcurl);
        if tls {
            cmd.arg("-cacert").arg(&cert);
        } else {
            cmd.arg("-plaintext");
        }
        cmd.args([
            "-d",
            r#"{"service": ""}"#,
            &addr,
            "grpc.health.v1.Health/Check",
        ]);
        async move {
            let out = cmd.output().await.expect("running grpcurl");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.success(), text)
        }
    };
    wait_for(
        "atoll run to serve gRPC health over TLS",
        Duration::from_secs(60),
        || async {
            match health(true).await {
                (true, out) if out.contains("\"SERVING\"") => Ok(()),
                (_, out) => Err(format!(
                    "{out}\nlog: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )),
            }
        },
    )
    .await;
    let (ok, out) = health(false).await;
    assert!(!ok, "plaintext must not work on a TLS port: {out}");

    let pid = atoll.id().unwrap().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(30), atoll.wait())
        .await
        .expect("atoll stops within 30s of SIGTERM")
        .unwrap();
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(&dir);
    ns.cleanup().await;
}

/// The RBAC in `deploy/rbac.yaml` grants what the gRPC services use: every
/// service works with atoll's own ServiceAccount token.
#[tokio::test]
async fn every_service_works_under_the_deploy_service_account() {
    let admin = atoll_testenv::client().await;
    atoll_testenv::install_crds(&admin, atoll::api::crds()).await;
    for file in ["namespace.yaml", "rbac.yaml"] {
        let path = atoll_e2e::workspace().join("deploy").join(file);
        let text = std::fs::read_to_string(path).unwrap();
        let out = atoll_testenv::kubectl(&["apply", "--server-side", "-f", "-"], Some(&text)).await;
        assert!(out.success, "{file}: {}", out.stderr);
    }
    let token =
        atoll_testenv::kubectl(&["create", "token", "atoll", "-n", "atoll-system"], None).await;
    assert!(token.success, "{}", token.stderr);
    let sa = atoll_testenv::client_with_token(token.stdout.trim()).await;
    let ns = TestNamespace::new(&admin, "grpc-least-privilege").await;
    let n = ns.name();
    k(n, &["apply", "-f", "-"], Some(&example("raft"))).await;
    // Its instance Lease in atoll's namespace, as deployed.
    let liveness = atoll::grpc::Liveness::new("atoll-system");
    let grpc = serve_as(&sa, true, liveness, &[n]).await;

    listed_databases(grpc.addr, "").await;
    listed_databases(grpc.addr, n).await;
    let prim =
        json!({ "database": { "name": "orders", "namespace": n }, "primitive": { "name": "p" } });
    let mut create = prim.clone();
    create["type"] = json!("LOCK");
    call(grpc.addr, &format!("{PRIMS}/CreatePrimitive"), create).await;
    call(grpc.addr, &format!("{PRIMS}/GetPrimitive"), prim.clone()).await;
    call(grpc.addr, &format!("{PRIMS}/GetPrimitives"), json!({})).await;
    call(grpc.addr, &format!("{PRIMS}/DeletePrimitive"), prim).await;

    let mut member = MembershipServiceClient::connect(format!("http://{}", grpc.addr))
        .await
        .unwrap();
    let mut stream = member
        .join_group(join(n, "m", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&next(&mut stream).await), ["m"]);
    drop(stream);
    drop(member);
    wait_members(n, "workers", &[], "the Member to be deleted").await;
    ns.cleanup().await;
}
