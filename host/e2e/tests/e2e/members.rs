//! Members belong to their stream (issue 17), on the real control plane:
//!
//! 1. a second JoinGroup with the id and group of a live member is
//!    ALREADY_EXISTS and leaves the record as it was, on the same replica and
//!    on another one; once the first stream ended, the id joins again;
//! 2. a replica whose instance Lease was deleted (as a sweep does) ends its
//!    streams, writes its Lease again, and its members join again;
//! 3. `atoll run` SIGKILLed with 100 joined members: a new `atoll run`
//!    deletes every one of their records (and the dead replica's Lease)
//!    within 30 s of serving; the time it took is printed;
//! 4. a JoinGroup without a member (Atomix go-client without a member id)
//!    observes: it gets the group's lists, including an empty one, and
//!    nothing is recorded for it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atoll::api::{LABEL_INSTANCE, LABEL_INSTANCE_NAMESPACE, Member as MemberRecord};
use atoll::grpc::proto::atomix::membership::{
    GroupId, JoinGroupRequest, JoinGroupResponse, Member, MemberId,
    membership_service_client::MembershipServiceClient,
};
use atoll_e2e::KillOnDrop;
use atoll_testenv::{TestNamespace, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use tonic::transport::Channel;

use crate::grpc::serve_as;

/// Members joined through the `atoll run` that is then killed.
const KILLED_MEMBERS: usize = 100;
/// What the issue asks: 0 records this long after a new replica serves.
const SWEPT_WITHIN: Duration = Duration::from_secs(30);

fn join(ns: &str, member: &str, group: &str, host: &str, port: i32) -> JoinGroupRequest {
    JoinGroupRequest {
        member: Some(Member {
            id: Some(MemberId {
                name: member.into(),
                namespace: ns.into(),
            }),
            host: host.into(),
            port,
        }),
        group_id: Some(GroupId {
            name: group.into(),
            namespace: ns.into(),
        }),
    }
}

async fn client(addr: SocketAddr) -> MembershipServiceClient<Channel> {
    MembershipServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
}

/// The first list on a fresh stream, within 30 s.
async fn first(stream: &mut tonic::Streaming<JoinGroupResponse>) -> JoinGroupResponse {
    tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("a member list within 30s")
        .expect("a healthy stream")
        .expect("the stream stays open")
}

/// The record's (host, port, uid, instance).
async fn record(members: &Api<MemberRecord>, name: &str) -> Option<(String, i32, String, String)> {
    let m = members.get_opt(name).await.unwrap()?;
    let instance = m.labels().get(LABEL_INSTANCE).cloned().unwrap_or_default();
    Some((m.spec.host.clone(), m.spec.port, m.uid().unwrap(), instance))
}

#[tokio::test]
async fn a_live_members_id_is_refused_and_its_record_kept() {
    let client_ = atoll_testenv::client().await;
    atoll_testenv::install_crds(&client_, atoll::api::crds()).await;
    let ns = TestNamespace::new(&client_, "members-held").await;
    let n = ns.name();
    // Two replicas, their instance Leases in the test namespace.
    let liveness = atoll::grpc::Liveness::new(n);
    let a = serve_as(&client_, true, liveness.clone(), &[n]).await;
    let b = serve_as(&client_, true, liveness, &[n]).await;
    let members: Api<MemberRecord> = Api::namespaced(client_.clone(), n);

    let mut alice = client(a.addr).await;
    let mut stream = alice
        .join_group(join(n, "m", "workers", "first.example", 1001))
        .await
        .unwrap()
        .into_inner();
    first(&mut stream).await;
    let before = record(&members, "m")
        .await
        .expect("the first member's record");
    assert_eq!((before.0.as_str(), before.1), ("first.example", 1001));
    // The record names its replica, whose Lease is in the namespace.
    let leases: Api<Lease> = Api::namespaced(client_.clone(), n);
    let lease = leases
        .get(&format!("{}{}", atoll::grpc::LEASE_PREFIX, before.3))
        .await
        .expect("the serving replica's instance Lease");
    assert_eq!(lease.labels().get(LABEL_INSTANCE), Some(&before.3));
    let m = members.get("m").await.unwrap();
    assert_eq!(
        m.labels().get(LABEL_INSTANCE_NAMESPACE).map(String::as_str),
        Some(n)
    );

    // The same id and group, on the same replica and through another one.
    for (via, addr) in [("the same replica", a.addr), ("another replica", b.addr)] {
        let mut intruder = client(addr).await;
        let status = intruder
            .join_group(join(n, "m", "workers", "intruder.example", 6666))
            .await
            .expect_err("a second join with a live member's id");
        assert_eq!(
            status.code(),
            tonic::Code::AlreadyExists,
            "{via}: {status:?}"
        );
        for word in ["member m ", "\"workers\"", n, "must leave first"] {
            assert!(
                status.message().contains(word),
                "{via}: {:?}",
                status.message()
            );
        }
        assert_eq!(
            record(&members, "m").await,
            Some(before.clone()),
            "{via}: the record is unchanged"
        );
    }

    // The first stream ends: its record goes, and the id joins again.
    drop(stream);
    drop(alice);
    wait_for(
        "the first member's record to be deleted",
        Duration::from_secs(30),
        || async {
            match record(&members, "m").await {
                None => Ok(()),
                Some(r) => Err(format!("{r:?}")),
            }
        },
    )
    .await;
    let mut again = client(b.addr).await;
    let mut stream = again
        .join_group(join(n, "m", "workers", "second.example", 1002))
        .await
        .expect("joining once the first member left")
        .into_inner();
    first(&mut stream).await;
    let after = record(&members, "m").await.unwrap();
    assert_eq!((after.0.as_str(), after.1), ("second.example", 1002));
    assert_ne!(after.3, before.3, "recorded by the other replica");
    drop(stream);
    drop(again);
    drop((a, b));
    ns.cleanup().await;
}

fn names(list: &JoinGroupResponse) -> Vec<String> {
    let mut names: Vec<String> = list
        .members
        .iter()
        .map(|m| m.id.clone().unwrap_or_default().name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_join_without_a_member_observes_and_is_recorded_nowhere() {
    let client_ = atoll_testenv::client().await;
    atoll_testenv::install_crds(&client_, atoll::api::crds()).await;
    let ns = TestNamespace::new(&client_, "members-observer").await;
    let n = ns.name();
    let grpc = serve_as(&client_, true, atoll::grpc::Liveness::new(n), &[n]).await;
    let members: Api<MemberRecord> = Api::namespaced(client_.clone(), n);
    let observe = JoinGroupRequest {
        member: None,
        group_id: Some(GroupId {
            name: "workers".into(),
            namespace: n.into(),
        }),
    };

    // Nobody in the group yet: the first list is empty, and comes at once.
    let mut observer = client(grpc.addr).await;
    let mut watching = observer
        .join_group(observe.clone())
        .await
        .expect("an observer's JoinGroup")
        .into_inner();
    let list = first(&mut watching).await;
    assert_eq!(names(&list), Vec::<String>::new());
    assert_eq!(
        list.group_id.as_ref().map(|g| g.name.as_str()),
        Some("workers")
    );

    // A member joins: the observer sees it; the only record is the member's.
    let mut alice = client(grpc.addr).await;
    let mut joined = alice
        .join_group(join(n, "alice", "workers", "alice.example", 1001))
        .await
        .unwrap()
        .into_inner();
    first(&mut joined).await;
    assert_eq!(names(&first(&mut watching).await), ["alice"]);
    let records = members.list(&ListParams::default()).await.unwrap();
    let recorded: Vec<String> = records.iter().map(ResourceExt::name_any).collect();
    assert_eq!(recorded, ["alice"], "an observer is recorded nowhere");

    // A second observer, and the first one leaves: nothing to delete, and
    // the member's record stays.
    let mut second = client(grpc.addr).await;
    let mut also = second.join_group(observe).await.unwrap().into_inner();
    assert_eq!(names(&first(&mut also).await), ["alice"]);
    drop(watching);
    drop(observer);
    // The member leaves: the remaining observer sees the empty group.
    drop(joined);
    drop(alice);
    assert_eq!(names(&first(&mut also).await), Vec::<String>::new());
    assert_eq!(count(&members).await, Ok(0));
    drop(also);
    drop(grpc);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_replica_whose_lease_was_deleted_ends_its_streams() {
    let client_ = atoll_testenv::client().await;
    atoll_testenv::install_crds(&client_, atoll::api::crds()).await;
    let ns = TestNamespace::new(&client_, "members-lost").await;
    let n = ns.name();
    let grpc = serve_as(&client_, true, atoll::grpc::Liveness::new(n), &[n]).await;
    let members: Api<MemberRecord> = Api::namespaced(client_.clone(), n);
    let leases: Api<Lease> = Api::namespaced(client_.clone(), n);
    let mut c = client(grpc.addr).await;
    let mut stream = c
        .join_group(join(n, "m", "workers", "m.example", 1))
        .await
        .unwrap()
        .into_inner();
    first(&mut stream).await;
    let instance = record(&members, "m").await.unwrap().3;
    let lease = format!("{}{instance}", atoll::grpc::LEASE_PREFIX);

    // As a sweep does when it judged the replica gone: the stream must not
    // go on as if its record were safe.
    leases.delete(&lease, &Default::default()).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => break other,
            }
        }
    })
    .await
    .expect("the stream ends within 15s of its replica's Lease being deleted");
    let status = ended.expect_err("ended with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("instance Lease"), "{status:?}");
    // The replica holds a new Lease; the member joins again.
    wait_for(
        "the member's old record to go",
        Duration::from_secs(30),
        || async {
            match record(&members, "m").await {
                None => Ok(()),
                Some(r) => Err(format!("{r:?}")),
            }
        },
    )
    .await;
    assert!(
        leases.get_opt(&lease).await.unwrap().is_some(),
        "Lease written again"
    );
    let mut stream = c
        .join_group(join(n, "m", "workers", "m.example", 1))
        .await
        .expect("joining again")
        .into_inner();
    first(&mut stream).await;
    drop(stream);
    drop(grpc);
    ns.cleanup().await;
}

/// `atoll run` for `ns` (its instance Lease in `ns`), logging JSON to
/// `dir/<name>.log`; with the gRPC address it logged. Every `atoll run` of
/// this module starts here.
async fn start_atoll_run(ns: &str, dir: &Path, name: &str) -> (KillOnDrop, SocketAddr, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let child = atoll_e2e::atoll_command(ns)
        .arg("--log-json")
        .env("RUST_LOG", "atoll=info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut process = KillOnDrop(child);
    let addr = wait_for(
        "atoll run to log its gRPC address",
        Duration::from_secs(60),
        || {
            let exited = process.0.try_wait().unwrap();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move {
                if let Some(status) = exited {
                    panic!("atoll exited ({status}):\n{text}");
                }
                atoll_e2e::logged_addr(&text, "serving gRPC").ok_or(text)
            }
        },
    )
    .await;
    (process, addr, log)
}

/// Member records in the namespace.
async fn count(members: &Api<MemberRecord>) -> Result<usize, String> {
    members
        .list_metadata(&ListParams::default())
        .await
        .map(|l| l.items.len())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_members_are_swept_by_the_next() {
    let _records = atoll_e2e::plugin_records_shared().await; // atoll run writes them
    let client_ = atoll_testenv::client().await;
    atoll_testenv::install_crds(&client_, atoll::api::crds()).await;
    let ns = TestNamespace::new(&client_, "members-swept").await;
    let n = ns.name().to_string();
    let members: Api<MemberRecord> = Api::namespaced(client_.clone(), &n);
    let leases: Api<Lease> = Api::namespaced(client_.clone(), &n);
    let dir = std::env::temp_dir().join(format!("atoll-{n}"));
    std::fs::create_dir_all(&dir).unwrap();

    let (mut first_run, addr, first_log) = start_atoll_run(&n, &dir, "first").await;
    let channels = [client(addr).await, client(addr).await];
    let mut streams = Vec::new();
    for i in 0..KILLED_MEMBERS {
        let mut c = channels[i % channels.len()].clone();
        let request = join(
            &n,
            &format!("m-{i:03}"),
            &format!("g-{}", i % 5),
            "10.0.0.1",
            5000,
        );
        let mut stream = c.join_group(request).await.unwrap().into_inner();
        first(&mut stream).await;
        streams.push(stream);
    }
    assert_eq!(count(&members).await.unwrap(), KILLED_MEMBERS);
    let dead_instance = record(&members, "m-000").await.unwrap().3;
    let dead_lease = format!("{}{dead_instance}", atoll::grpc::LEASE_PREFIX);
    assert!(leases.get_opt(&dead_lease).await.unwrap().is_some());

    first_run.0.kill().unwrap(); // SIGKILL: no stream ends, no record is deleted
    first_run.0.wait().unwrap();
    drop(streams);
    drop(channels);
    assert_eq!(
        count(&members).await.unwrap(),
        KILLED_MEMBERS,
        "the killed replica left its records"
    );

    let (mut second_run, _, second_log) = start_atoll_run(&n, &dir, "second").await;
    let serving = Instant::now();
    wait_for(
        "the killed replica's records to be swept",
        SWEPT_WITHIN,
        || async {
            match count(&members).await? {
                0 => Ok(()),
                left => Err(format!("{left} Member records left")),
            }
        },
    )
    .await;
    let took = serving.elapsed();
    println!(
        "{KILLED_MEMBERS} Member records of a SIGKILLed atoll run swept {:.1}s after the next one \
         served",
        took.as_secs_f64()
    );
    // Its Lease goes with them (at that sweep or the next).
    wait_for(
        "the killed replica's Lease to be deleted",
        Duration::from_secs(15),
        || async {
            match leases.get_opt(&dead_lease).await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // A graceful stop deletes the replica's own Lease.
    let live_leases = |leases: Api<Lease>| async move {
        leases
            .list_metadata(&ListParams::default().labels(LABEL_INSTANCE))
            .await
            .map(|l| l.items.len())
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        live_leases(leases.clone()).await.unwrap(),
        1,
        "the second replica's"
    );
    let term = std::process::Command::new("kill")
        .args(["-TERM", &second_run.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = wait_for(
        "atoll to stop after SIGTERM",
        Duration::from_secs(30),
        || {
            let exited = second_run.0.try_wait().unwrap();
            async move { exited.ok_or_else(|| "running".to_string()) }
        },
    )
    .await;
    let log = std::fs::read_to_string(&second_log).unwrap_or_default();
    assert!(exit.success(), "{exit}: {log}");
    assert_eq!(live_leases(leases).await.unwrap(), 0, "{log}");
    for log in [first_log, second_log] {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.contains("panicked"), "{}: {text}", log.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
    ns.cleanup().await;
}
