//! What checking callers costs: JoinGroup and GetDatabase latency with
//! authentication and authorization on (a ServiceAccount token, RBAC via
//! TokenReview and SubjectAccessReview, answers cached) versus off, in one
//! run on the local control plane, interleaved call by call, and the cost of
//! the first (cold) call of a token.
//!
//! ```sh
//! cargo xtask cluster up && export KUBECONFIG=...
//! cargo bench -p atoll-e2e --bench grpc_auth
//! ```
//!
//! `ATOLL_BENCH_CALLS=N` changes the calls per kind and mode (default 300).
//! Target: warm ratio (on ÷ off) ≤ 1.10 at the median.

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use atoll::grpc::proto::atomix::database::{
    DatabaseId, GetDatabaseRequest, database_service_client::DatabaseServiceClient,
};
use atoll::grpc::proto::atomix::membership::{
    GroupId, JoinGroupRequest, Member, MemberId, membership_service_client::MembershipServiceClient,
};
use atoll::grpc::{AuthConfig, GrpcLimits};
use atoll_e2e::{Operator, k};
use atoll_testenv::{TestNamespace, kubectl};
use tonic::transport::Channel;

async fn serve(client: &kube::Client, ns: &str, auth: AuthConfig) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (ready_tx, ready) = tokio::sync::watch::channel(true);
    let server = atoll::grpc::Server {
        client: client.clone(),
        renderer: atoll_e2e::renderer(),
        ready,
        tls: None,
        auth,
        // The bench makes hundreds of calls a second from one caller.
        limits: GrpcLimits {
            requests_per_second: 0,
            ..GrpcLimits::default()
        },
        liveness: atoll::grpc::Liveness::new(ns),
        namespace: None,
        metrics: Default::default(),
    };
    tokio::spawn(async move {
        let _ready = ready_tx;
        server
            .serve(listener, std::future::pending())
            .await
            .unwrap();
    });
    addr
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

async fn get_database(channel: &Channel, ns: &str, token: Option<&str>) -> Duration {
    let started = Instant::now();
    let id = DatabaseId {
        name: "sessions".into(),
        namespace: ns.into(),
    };
    DatabaseServiceClient::new(channel.clone())
        .get_database(with_token(GetDatabaseRequest { id: Some(id) }, token))
        .await
        .unwrap();
    started.elapsed()
}

/// Join, wait for the first member list, leave.
async fn join(channel: &Channel, ns: &str, member: &str, token: Option<&str>) -> Duration {
    let started = Instant::now();
    let request = JoinGroupRequest {
        member: Some(Member {
            id: Some(MemberId {
                name: member.into(),
                namespace: ns.into(),
            }),
            host: "10.0.0.1".into(),
            port: 5000,
        }),
        group_id: Some(GroupId {
            name: "bench".into(),
            namespace: ns.into(),
        }),
    };
    let mut stream = MembershipServiceClient::new(channel.clone())
        .join_group(with_token(request, token))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    started.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

#[tokio::main]
async fn main() {
    let calls: usize = std::env::var("ATOLL_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let client = atoll_testenv::client().await;
    atoll_testenv::install_crds(&client, atoll::api::crds()).await;
    let ns = TestNamespace::new(&client, "bench-grpc-auth").await;
    let n = ns.name();
    let op = Operator::start(&client, n).await;
    k(n, &["apply", "-f", "-"], Some(&atoll_e2e::example("cache"))).await;
    atoll_e2e::wait_ready(&client, n, "sessions").await;

    let sa = "bench";
    let out = kubectl(&["create", "serviceaccount", sa, "-n", n], None).await;
    assert!(out.success, "{}", out.stderr);
    let rules = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: bench}\nrules:\n- {apiGroups: [atoll.dev], resources: [databases], verbs: [get]}\n- {apiGroups: [atoll.dev], resources: [members], verbs: [create]}\n";
    k(n, &["apply", "-f", "-"], Some(rules)).await;
    let binding = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: bench}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: bench}}\nsubjects: [{{kind: ServiceAccount, name: {sa}, namespace: {n}}}]\n"
    );
    k(n, &["apply", "-f", "-"], Some(&binding)).await;
    let token = kubectl(
        &["create", "token", sa, "-n", n, "--audience", "atoll"],
        None,
    )
    .await;
    assert!(token.success, "{}", token.stderr);
    let token = token.stdout.trim().to_string();

    let off = serve(&client, n, AuthConfig::disabled()).await;
    let on = serve(&client, n, AuthConfig::kubernetes(Vec::<String>::new())).await;
    let connect = |addr: SocketAddr| async move {
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let (off, on) = (connect(off).await, connect(on).await);

    // Cold: the token's first call (TokenReview and SubjectAccessReview),
    // until RBAC has seen the binding.
    let cold_started = Instant::now();
    let cold = loop {
        let started = Instant::now();
        let id = DatabaseId {
            name: "sessions".into(),
            namespace: n.into(),
        };
        let reply = DatabaseServiceClient::new(on.clone())
            .get_database(with_token(
                GetDatabaseRequest { id: Some(id) },
                Some(&token),
            ))
            .await;
        match reply {
            Ok(_) => break started.elapsed(),
            Err(_) if cold_started.elapsed() < Duration::from_secs(30) => {
                // A denial is remembered for 5 s: wait it out.
                tokio::time::sleep(Duration::from_secs(6)).await;
            }
            Err(e) => panic!("the bench token never got access: {e:?}"),
        }
    };
    let cold_join = join(&on, n, "cold", Some(&token)).await;

    let (mut db_off, mut db_on, mut join_off, mut join_on) = (vec![], vec![], vec![], vec![]);
    for i in 0..calls {
        // Interleaved, so load on the shared machine hits both modes alike,
        // and in alternating order: a call right after a JoinGroup stream
        // ends competes with that member's delete at the API server.
        let on_first = i % 2 == 1;
        for on_now in [on_first, !on_first] {
            if on_now {
                db_on.push(get_database(&on, n, Some(&token)).await);
                join_on.push(join(&on, n, &format!("on-{i}"), Some(&token)).await);
            } else {
                db_off.push(get_database(&off, n, None).await);
                join_off.push(join(&off, n, &format!("off-{i}"), None).await);
            }
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "gRPC authorization cost, {calls} calls per kind and mode (load average: {})",
        load.trim()
    );
    for (what, off, on) in [
        ("GetDatabase", db_off, db_on),
        ("JoinGroup", join_off, join_on),
    ] {
        let (m_off, m_on) = (median(off.clone()), median(on.clone()));
        println!(
            "{what:<12} off: median {m_off:>9.2?} p99 {:>9.2?} | on (warm): median {m_on:>9.2?} p99 {:>9.2?} | ratio {:.3} (target ≤ 1.10)",
            p99(off),
            p99(on),
            m_on.as_secs_f64() / m_off.as_secs_f64(),
        );
    }
    println!(
        "cold (a token's first call): GetDatabase {cold:.2?}, then JoinGroup {cold_join:.2?} (its access not yet cached)"
    );
    op.stop().await;
    ns.cleanup().await;
}
