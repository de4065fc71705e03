//! The gRPC API under abuse, against `atoll run` as a real process on the
//! local control plane (one namespace of its own):
//!
//! 1. 1,000 concurrent JoinGroup streams over 10 HTTP/2 connections, in 20
//!    groups of 50; every stream gets its group's full list; then every
//!    stream is dropped at once;
//! 2. 1,000 more, dropped at once while half of them are still joining
//!    (queued, or with their record being created);
//! 3. malformed requests (bytes that are not protobuf, truncated messages,
//!    invalid UTF-8, a length prefix longer than the body, a compressed flag
//!    without an encoding, no message at all, an empty message, invalid
//!    names and fields) on every method, and oversized ones (over the 4 MiB
//!    limit, and a length prefix of 4 GiB), 20 times each.
//!
//! Each round must end with every Member record deleted, atoll's membership
//! gauges at 0, the process alive and serving, and no `panicked` in its log;
//! rounds 1 and 2 with its memory (VmRSS from `/proc/<pid>/status`) back
//! near the baseline taken after a warm-up, round 3 with VmRSS no higher
//! after its second half than after its first. Figures are printed (run
//! with `--nocapture` to see them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll::api::Member as MemberRecord;
use atoll::grpc::proto::atomix::membership::{
    GroupId, JoinGroupRequest, Member, MemberId, membership_service_client::MembershipServiceClient,
};
use atoll_e2e::KillOnDrop;
use atoll_testenv::{TestNamespace, wait_for};
use kube::api::{Api, ListParams};
use prost::Message;
use prost::bytes::Bytes;
use tokio::task::JoinSet;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Concurrent JoinGroup streams in each round.
const STREAMS: usize = 1000;
/// HTTP/2 connections they share (atoll, like any hyper server, allows 200
/// concurrent streams on one).
const CONNECTIONS: usize = 10;
/// Groups the members join: `STREAMS / GROUPS` members each.
const GROUPS: usize = 20;
/// Streams that join before the baseline is taken (twice).
const WARM_UP: usize = 200;
/// How often each malformed or oversized request is sent.
const BAD_REPEATS: usize = 20;

/// How far above the baseline VmRSS may stay once a round's records are
/// deleted. 1,000 streams add 12-16 MiB (debug build); atoll's allocator
/// (jemalloc, purging pages unused for 1 s) hands freed memory back (with
/// glibc's malloc, which keeps it in its arenas, 12.3 MiB stayed and this
/// test failed). What stays is pages that live allocations still share
/// (fragmentation). Measured over 14 rounds: 2.3-5.3 MiB, flat after the
/// third. 8 MiB is half again the most seen and about half of what 1,000
/// streams take: a leak of 8 KiB per stream fails.
const RSS_TOLERANCE_KIB: u64 = 8 * 1024;
/// How much more VmRSS may be after all malformed requests than after half
/// of them (no trimming there: what a request leaves in malloc's arenas is
/// reused by the next). Measured over 70 rounds of them: it swings within
/// 6 MiB with no trend; a leak of 16 KiB per request (540 in the second
/// half) fails.
const BAD_TOLERANCE_KIB: u64 = 8 * 1024;

/// `atoll run` for one namespace, killed when dropped, logging to a file.
struct Atoll {
    process: KillOnDrop,
    grpc: SocketAddr,
    metrics: SocketAddr,
    log: PathBuf,
}

impl Atoll {
    /// Start it on ports the kernel picks, and wait until it logged them.
    async fn start(ns: &str, dir: &Path) -> Atoll {
        let log = dir.join("atoll.log");
        let child = atoll_e2e::atoll_command(ns)
            .arg("--log-json")
            // Every stream here comes from one address: the per-caller rate
            // (tested in grpc_auth) would refuse most of the 1,000 joins.
            .args(["--grpc-rate-limit", "0"])
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut process = KillOnDrop(child);
        let (grpc, metrics) = wait_for(
            "atoll run to log its addresses",
            Duration::from_secs(60),
            || {
                let exited = process.0.try_wait().unwrap();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                async move {
                    if let Some(status) = exited {
                        panic!("atoll exited ({status}):\n{text}");
                    }
                    let addr = |message: &str| atoll_e2e::logged_addr(&text, message);
                    match (
                        addr("serving gRPC"),
                        addr("serving /metrics, /healthz and /readyz"),
                    ) {
                        (Some(grpc), Some(metrics)) => Ok((grpc, metrics)),
                        _ => Err(text),
                    }
                }
            },
        )
        .await;
        Atoll {
            process,
            grpc,
            metrics,
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.process.0.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_else(|e| panic!("reading atoll's /proc status: {e}\n{}", self.log()));
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }

    fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// Still running, and no panic in its log so far.
    fn assert_healthy(&mut self) {
        if let Some(status) = self.process.0.try_wait().unwrap() {
            panic!("atoll exited ({status}):\n{}", self.log());
        }
        let log = self.log();
        assert!(!log.contains("panicked"), "atoll panicked:\n{log}");
    }

    /// The membership gauges: (streams, records, watches).
    async fn gauges(&self) -> Result<(i64, i64, i64), String> {
        let text = atoll_e2e::metrics_text(self.metrics).await?;
        let gauge = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<i64>().ok())
                .ok_or_else(|| format!("no {name} in {text}"))
        };
        Ok((
            gauge("atoll_grpc_join_streams")?,
            gauge("atoll_grpc_member_records")?,
            gauge("atoll_grpc_member_watches")?,
        ))
    }
}

async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to atoll's gRPC port {addr}: {e}"))
}

/// `count` fresh HTTP/2 connections to atoll.
async fn connections(addr: SocketAddr, count: usize) -> Vec<Channel> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        channels.push(connect(addr).await);
    }
    channels
}

fn join_request(ns: &str, i: usize) -> JoinGroupRequest {
    JoinGroupRequest {
        member: Some(Member {
            id: Some(MemberId {
                name: format!("m-{i:04}"),
                namespace: ns.into(),
            }),
            host: format!("10.1.{}.{}", i / 256, i % 256),
            port: 5000,
        }),
        group_id: Some(GroupId {
            name: format!("g-{}", i % GROUPS),
            namespace: ns.into(),
        }),
    }
}

/// Streams being read by tasks of their own, as clients read them.
struct Streams {
    tasks: JoinSet<()>,
    /// Streams that got their first list (which must hold the joiner).
    joined: Arc<AtomicUsize>,
    /// Size of the latest list each stream got.
    sizes: Vec<Arc<AtomicUsize>>,
    /// Anything a stream did wrong.
    failures: Arc<Mutex<Vec<String>>>,
}

impl Streams {
    /// Open `count` JoinGroup streams (members `m-0000` on) at once, spread
    /// over `channels`.
    fn open(channels: &[Channel], ns: &str, count: usize) -> Streams {
        let mut streams = Streams {
            tasks: JoinSet::new(),
            joined: Arc::default(),
            sizes: Vec::new(),
            failures: Arc::default(),
        };
        for i in 0..count {
            let mut client = MembershipServiceClient::new(channels[i % channels.len()].clone());
            let request = join_request(ns, i);
            let me = request.member.clone().unwrap();
            let (joined, failures) = (Arc::clone(&streams.joined), Arc::clone(&streams.failures));
            let size = Arc::new(AtomicUsize::new(0));
            streams.sizes.push(Arc::clone(&size));
            streams.tasks.spawn(async move {
                let fail = |what: String| failures.lock().unwrap().push(what);
                let mut stream = match client.join_group(request).await {
                    Ok(response) => response.into_inner(),
                    Err(status) => return fail(format!("join {i}: {status:?}")),
                };
                let mut first = true;
                loop {
                    match stream.message().await {
                        Ok(Some(list)) => {
                            if first && !list.members.contains(&me) {
                                return fail(format!("first list of {i} lacks it: {list:?}"));
                            }
                            size.store(list.members.len(), Ordering::SeqCst);
                            if first {
                                joined.fetch_add(1, Ordering::SeqCst);
                                first = false;
                            }
                        }
                        Ok(None) => return fail(format!("stream {i} ended")),
                        Err(status) => return fail(format!("stream {i}: {status:?}")),
                    }
                }
            });
        }
        streams
    }

    fn joined(&self) -> usize {
        self.joined.load(Ordering::SeqCst)
    }

    fn assert_no_failures(&self) {
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} streams failed, e.g. {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
    }
}

/// Member records in `ns`.
async fn records(members: &Api<MemberRecord>) -> Result<usize, String> {
    members
        .list_metadata(&ListParams::default())
        .await
        .map(|l| l.items.len())
        .map_err(|e| e.to_string())
}

/// Wait until no Member record is left in the namespace and atoll counts no
/// stream, record or watch; how long that took.
async fn wait_cleaned_up(atoll: &Atoll, members: &Api<MemberRecord>, what: &str) -> Duration {
    let start = Instant::now();
    wait_for(what, Duration::from_secs(60), || async {
        let left = records(members).await?;
        let gauges = atoll.gauges().await?;
        if left == 0 && gauges == (0, 0, 0) {
            Ok(())
        } else {
            Err(format!(
                "{left} Member records; atoll's (streams, records, watches): {gauges:?}"
            ))
        }
    })
    .await;
    start.elapsed()
}

/// Wait until VmRSS is at most `limit_kib`; the last reading.
async fn wait_rss_at_most(atoll: &Atoll, limit_kib: u64, what: &str) -> u64 {
    wait_for(what, Duration::from_secs(30), || async {
        let rss = atoll.rss_kib();
        if rss <= limit_kib {
            Ok(rss)
        } else {
            Err(format!("VmRSS {rss} KiB, limit {limit_kib} KiB"))
        }
    })
    .await
}

/// Watches on Member objects in one namespace open at the API server, from
/// its own metrics (kube-controller-manager's cluster-wide one left out).
async fn api_server_member_watches() -> u64 {
    let out = atoll_testenv::kubectl(&["get", "--raw", "/metrics"], None).await;
    assert!(
        out.success,
        "reading the API server's metrics: {}",
        out.stderr
    );
    out.stdout
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_longrunning_requests{")
                && l.contains(r#"group="atoll.dev""#)
                && l.contains(r#"resource="members""#)
                && l.contains(r#"scope="namespace""#)
                && l.contains(r#"verb="WATCH""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Open `count` streams, wait until `joined` of them got their first list,
/// drop them all, wait until every record is gone.
async fn warm_up(
    atoll: &Atoll,
    members: &Api<MemberRecord>,
    ns: &str,
    count: usize,
    joined: usize,
) {
    let channels = connections(atoll.grpc, CONNECTIONS).await;
    let streams = Streams::open(&channels, ns, count);
    wait_for(
        "warm-up streams to join",
        Duration::from_secs(120),
        || async {
            streams.assert_no_failures();
            if streams.joined() >= joined {
                Ok(())
            } else {
                Err(format!("{} joined", streams.joined()))
            }
        },
    )
    .await;
    drop(streams);
    drop(channels);
    wait_cleaned_up(atoll, members, "warm-up records to be deleted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_streams_and_malformed_requests_leave_nothing_behind() {
    let _records = atoll_e2e::plugin_records_shared().await; // atoll run writes them
    let client = atoll_testenv::client().await;
    atoll_testenv::install_crds(&client, atoll::api::crds()).await;
    let ns = TestNamespace::new(&client, "grpc-abuse").await;
    let n = ns.name().to_string();
    let members: Api<MemberRecord> = Api::namespaced(client.clone(), &n);
    let dir = std::env::temp_dir().join(format!("atoll-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut atoll = Atoll::start(&n, &dir).await;

    let health_channel = wait_for(
        "atoll run to serve gRPC health",
        Duration::from_secs(60),
        || async {
            let channel = Endpoint::from_shared(format!("http://{}", atoll.grpc))
                .unwrap()
                .connect()
                .await
                .map_err(|e| format!("{e}\nlog: {}", atoll.log()))?;
            let status = HealthClient::new(channel.clone())
                .check(HealthCheckRequest::default())
                .await
                .map_err(|e| e.to_string())?
                .into_inner()
                .status;
            if status == ServingStatus::Serving as i32 {
                Ok(channel)
            } else {
                Err(format!("health {status}"))
            }
        },
    )
    .await;
    let started_rss = atoll.rss_kib();

    // Warm-up: what the first streams allocate once and keep (worker thread
    // arenas, h2 connection buffers, the kube client's pool of connections
    // to the API server: up to 32 for creates, and 32 more while deletes
    // overlap them, as when streams drop while others still join) belongs
    // in the baseline. Both kinds of round, smaller.
    warm_up(&atoll, &members, &n, WARM_UP, WARM_UP).await;
    warm_up(&atoll, &members, &n, 2 * WARM_UP, WARM_UP).await;
    let baseline = atoll.rss_kib();
    atoll.assert_healthy();

    // Round 1: 1,000 streams, each gets its group's full list, all dropped.
    let channels = connections(atoll.grpc, CONNECTIONS).await;
    let start = Instant::now();
    let streams = Streams::open(&channels, &n, STREAMS);
    wait_for(
        "1,000 streams to join",
        Duration::from_secs(180),
        || async {
            streams.assert_no_failures();
            if streams.joined() == STREAMS {
                Ok(())
            } else {
                Err(format!("{} joined", streams.joined()))
            }
        },
    )
    .await;
    let joined_in = start.elapsed();
    assert_eq!(records(&members).await.unwrap(), STREAMS);
    // Every stream sees its whole group: the shared watch fans out to all.
    let group_size = STREAMS / GROUPS;
    wait_for(
        "every stream to list its whole group",
        Duration::from_secs(60),
        || async {
            streams.assert_no_failures();
            let short = streams
                .sizes
                .iter()
                .filter(|s| s.load(Ordering::SeqCst) != group_size)
                .count();
            if short == 0 {
                Ok(())
            } else {
                Err(format!(
                    "{short} streams list fewer or more than {group_size}"
                ))
            }
        },
    )
    .await;
    let full_lists_in = start.elapsed();
    let (open, recorded, watches) = atoll.gauges().await.unwrap();
    assert_eq!((open, recorded), (STREAMS as i64, STREAMS as i64));
    assert_eq!(watches, 1, "one watch on Members for the namespace");
    // As the API server counts them (every test's, on this shared control
    // plane: a few at most; one per stream would be 1,000 here). At least
    // ours: the count is read right.
    let member_watches = api_server_member_watches().await;
    assert!(
        (1..=10).contains(&member_watches),
        "{member_watches} watches on Members open at the API server"
    );
    let peak = atoll.rss_kib();
    atoll.assert_healthy();

    drop(streams); // aborts every reading task, dropping its stream
    drop(channels);
    let cleanup = wait_cleaned_up(&atoll, &members, "the 1,000 Member records to be deleted").await;
    let after = wait_rss_at_most(
        &atoll,
        baseline + RSS_TOLERANCE_KIB,
        "VmRSS back near the baseline after round 1",
    )
    .await;
    println!(
        "round 1: {STREAMS} streams joined in {:.1}s, full lists in {:.1}s; \
         {member_watches} watches on Members at the API server; \
         VmRSS at start {}, baseline {}, with {STREAMS} streams {}, after {}; \
         records deleted {:.1}s after the drop",
        joined_in.as_secs_f64(),
        full_lists_in.as_secs_f64(),
        mib(started_rss),
        mib(baseline),
        mib(peak),
        mib(after),
        cleanup.as_secs_f64(),
    );

    // Round 2: 1,000 more, dropped while half of them are still joining.
    let channels = connections(atoll.grpc, CONNECTIONS).await;
    let streams = Streams::open(&channels, &n, STREAMS);
    wait_for(
        "half of the streams to join",
        Duration::from_secs(180),
        || async {
            streams.assert_no_failures();
            if streams.joined() >= STREAMS / 2 {
                Ok(())
            } else {
                Err(format!("{} joined", streams.joined()))
            }
        },
    )
    .await;
    let joined_at_drop = streams.joined();
    let (_, recorded_at_drop, _) = atoll.gauges().await.unwrap();
    let peak2 = atoll.rss_kib();
    drop(streams);
    drop(channels);
    let cleanup2 =
        wait_cleaned_up(&atoll, &members, "round 2's Member records to be deleted").await;
    let after2 = wait_rss_at_most(
        &atoll,
        baseline + RSS_TOLERANCE_KIB,
        "VmRSS back near the baseline after round 2",
    )
    .await;
    println!(
        "round 2: dropped with {joined_at_drop} streams joined and {recorded_at_drop} records \
         written or being written; VmRSS {} at the drop, after {}; \
         records deleted {:.1}s after the drop",
        mib(peak2),
        mib(after2),
        cleanup2.as_secs_f64(),
    );
    atoll.assert_healthy();

    // Round 3: malformed and oversized requests.
    let bad = connect(atoll.grpc).await;
    let mut refused = 0;
    for _ in 0..BAD_REPEATS / 2 {
        refused += malformed_requests(&bad, &n).await;
    }
    let half = atoll.rss_kib();
    for _ in BAD_REPEATS / 2..BAD_REPEATS {
        refused += malformed_requests(&bad, &n).await;
    }
    let after3 = atoll.rss_kib();
    println!(
        "round 3: {refused} malformed or oversized requests refused; VmRSS after half of \
         them {}, after all {}; peak over the whole run (VmHWM) {}",
        mib(half),
        mib(after3),
        mib(atoll.status_kib("VmHWM")),
    );
    assert!(
        after3 <= half + BAD_TOLERANCE_KIB,
        "VmRSS grew from {} to {} over the second half of the bad requests",
        mib(half),
        mib(after3)
    );
    atoll.assert_healthy();
    assert_eq!(
        records(&members).await.unwrap(),
        0,
        "no record from a bad request"
    );

    // Still serving: health, and a join that works and cleans up.
    let status = HealthClient::new(health_channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let channels = vec![bad];
    let streams = Streams::open(&channels, &n, 1);
    wait_for("a last join", Duration::from_secs(30), || async {
        streams.assert_no_failures();
        if streams.joined() == 1 {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    drop(streams);
    wait_cleaned_up(&atoll, &members, "the last record to be deleted").await;

    // A clean stop.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &atoll.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = wait_for(
        "atoll to stop after SIGTERM",
        Duration::from_secs(30),
        || {
            let exited = atoll.process.0.try_wait().unwrap();
            async move { exited.ok_or_else(|| "running".to_string()) }
        },
    )
    .await;
    let log = atoll.log();
    assert!(exit.success(), "{exit}: {log}");
    assert!(!log.contains("panicked"), "atoll panicked:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
    ns.cleanup().await;
}

/// A gRPC message frame: compressed flag, big-endian length, payload.
fn frame(compressed: bool, length: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![u8::from(compressed)];
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// One well-formed frame holding `payload`.
fn message(payload: &[u8]) -> Vec<u8> {
    frame(false, payload.len() as u32, payload)
}

/// Every method atoll serves.
const METHODS: [&str; 12] = [
    "/atomix.database.DatabaseService/GetDatabase",
    "/atomix.database.DatabaseService/GetDatabases",
    "/atomix.membership.MembershipService/JoinGroup",
    "/atomix.primitive.PrimitiveService/CreatePrimitive",
    "/atomix.primitive.PrimitiveService/GetPrimitive",
    "/atomix.primitive.PrimitiveService/GetPrimitives",
    "/atomix.primitive.PrimitiveService/DeletePrimitive",
    "/atoll.v1alpha1.PluginService/ListPlugins",
    "/atoll.v1alpha1.PluginService/GetPlugin",
    "/atoll.v1alpha1.PluginService/RenderDatabase",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

const JOIN: &str = "/atomix.membership.MembershipService/JoinGroup";

/// Call `method` with `body` as the raw request body (frames and all) and
/// return the status atoll answers with; the call must fail.
async fn raw(channel: &Channel, method: &str, body: Vec<u8>) -> tonic::Status {
    use http_body_util::{BodyExt, Full};
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://atoll{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(Full::new(Bytes::from(body))))
        .unwrap();
    let call = async {
        let response = tower::ServiceExt::oneshot(channel.clone(), request)
            .await
            .unwrap_or_else(|e| panic!("{method}: no HTTP/2 response: {e}"));
        let (head, body) = response.into_parts();
        assert_eq!(head.status, http::StatusCode::OK, "{method}: {head:?}");
        // A refusal before any message is a trailers-only response.
        if let Some(status) = tonic::Status::from_header_map(&head.headers) {
            return status;
        }
        let body = body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{method}: reading the response: {e}"));
        let trailers = body.trailers().cloned().unwrap_or_default();
        tonic::Status::from_header_map(&trailers)
            .unwrap_or_else(|| panic!("{method}: no grpc-status in {trailers:?}"))
    };
    let status = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .unwrap_or_else(|_| panic!("{method}: no status within 30s"));
    assert_ne!(status.code(), Code::Ok, "{method} succeeded");
    // Never a request echoed back whole.
    assert!(
        status.message().len() <= atoll::grpc::MAX_STATUS_MESSAGE,
        "{method}: a {}-byte message",
        status.message().len()
    );
    status
}

fn assert_code(status: &tonic::Status, code: Code, what: &str) {
    assert_eq!(status.code(), code, "{what}: {status:?}");
}

/// A JoinGroup request with `edit` applied, encoded.
fn join_with(ns: &str, edit: impl FnOnce(&mut JoinGroupRequest)) -> Vec<u8> {
    let mut request = join_request(ns, 9999);
    edit(&mut request);
    request.encode_to_vec()
}

/// Send each malformed and oversized request once; how many there were.
async fn malformed_requests(channel: &Channel, ns: &str) -> usize {
    let mut sent = 0;
    let mut check = |status: tonic::Status, code: Code, what: &str| {
        assert_code(&status, code, what);
        sent += 1;
    };

    // Not protobuf, on every method: tonic fails decoding with INTERNAL,
    // as grpc-go and grpc-java do.
    let garbage: [(&str, &[u8]); 3] = [
        ("a varint that never ends", &[0xff; 16]),
        ("wire type 7", &[0x0f, 0x01]),
        ("a field longer than the message", &[0x0a, 0x7f, 0x01]),
    ];
    for method in METHODS {
        for (what, bytes) in garbage {
            let status = raw(channel, method, message(bytes)).await;
            check(status, Code::Internal, &format!("{method}: {what}"));
        }
    }
    // A valid JoinGroupRequest cut short.
    let whole = join_with(ns, |_| {});
    let status = raw(channel, JOIN, message(&whole[..whole.len() / 2])).await;
    check(status, Code::Internal, "truncated message");
    // Invalid UTF-8 in a string field (member.id.name = ff fe).
    let utf8 = [0x0a, 0x06, 0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe];
    let status = raw(channel, JOIN, message(&utf8)).await;
    check(status, Code::Internal, "invalid UTF-8");
    // The length prefix promises more than the body holds.
    let status = raw(channel, JOIN, frame(false, 100, &whole[..10])).await;
    check(status, Code::Internal, "length prefix past the end");
    // Half a length prefix.
    let status = raw(channel, JOIN, vec![0, 0, 0]).await;
    check(status, Code::Internal, "half a frame header");
    // Compressed flag, no grpc-encoding.
    let status = raw(channel, JOIN, frame(true, whole.len() as u32, &whole)).await;
    check(status, Code::Internal, "compressed without an encoding");
    // No message at all.
    let status = raw(channel, JOIN, Vec::new()).await;
    check(status, Code::Internal, "no request message");

    // Protobuf, but not a valid join.
    let status = raw(channel, JOIN, message(&[])).await;
    check(status, Code::InvalidArgument, "empty message");
    for (what, body) in [
        (
            "upper-case member name",
            join_with(ns, |r| {
                r.member.as_mut().unwrap().id.as_mut().unwrap().name = "Not_A_Name".into()
            }),
        ),
        (
            "1 MiB member name",
            join_with(ns, |r| {
                r.member.as_mut().unwrap().id.as_mut().unwrap().name = "a".repeat(1 << 20)
            }),
        ),
        (
            "group name with a slash",
            join_with(ns, |r| r.group_id.as_mut().unwrap().name = "a/b".into()),
        ),
        (
            "namespace of another member",
            join_with(ns, |r| {
                r.member.as_mut().unwrap().id.as_mut().unwrap().namespace = "elsewhere".into()
            }),
        ),
        (
            "port -1",
            join_with(ns, |r| r.member.as_mut().unwrap().port = -1),
        ),
        (
            "3 MiB host (under the message limit)",
            join_with(ns, |r| {
                r.member.as_mut().unwrap().host = "h".repeat(3 << 20)
            }),
        ),
        ("no group", join_with(ns, |r| r.group_id = None)),
    ] {
        let status = raw(channel, JOIN, message(&body)).await;
        check(status, Code::InvalidArgument, what);
    }

    // Oversized: over 4 MiB, refused before decoding.
    let huge = join_with(ns, |r| {
        r.member.as_mut().unwrap().host = "h".repeat(5 << 20)
    });
    let status = raw(channel, JOIN, message(&huge)).await;
    check(status, Code::ResourceExhausted, "5 MiB JoinGroup");
    let status = raw(
        channel,
        "/atoll.v1alpha1.PluginService/GetPlugin",
        message(&huge),
    )
    .await;
    check(status, Code::ResourceExhausted, "5 MiB GetPlugin");
    // A length prefix of 4 GiB: refused without waiting for (or
    // allocating) the rest.
    let status = raw(channel, JOIN, frame(false, u32::MAX, &whole)).await;
    check(status, Code::ResourceExhausted, "length prefix of 4 GiB");

    // A method that does not exist.
    let status = raw(
        channel,
        "/atomix.membership.MembershipService/Nope",
        message(&whole),
    )
    .await;
    check(status, Code::Unimplemented, "unknown method");
    sent
}
