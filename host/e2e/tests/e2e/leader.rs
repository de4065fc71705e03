//! Leader election against the real control plane: candidates compete for one
//! Lease in a namespace of their own.

use std::time::Duration;

use atoll::leader::LeaderElection;
use atoll_testenv::{TestNamespace, client, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const LEASE: &str = "atoll-leader";

/// One running candidate.
struct Candidate {
    identity: String,
    leading: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), atoll::leader::LeaderError>>,
}

impl Candidate {
    fn start(client: &Client, ns: &str, identity: &str, lease: Duration, renew: Duration) -> Self {
        let mut election = LeaderElection::new(client.clone(), ns, LEASE, identity);
        election.lease_duration = lease;
        election.renew_period = renew;
        let (tx, leading) = watch::channel(false);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(election.run(tx, async {
            let _ = stopped.await;
        }));
        Candidate {
            identity: identity.to_owned(),
            leading,
            stop: Some(stop),
            task,
        }
    }

    fn leads(&self) -> bool {
        *self.leading.borrow()
    }

    /// Graceful stop: resolves the shutdown future and waits for `run` to return.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("run returns within 10s of shutdown")
            .expect("run did not panic")
            .expect("run succeeded");
    }
}

async fn lease(client: &Client, ns: &str) -> Lease {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get(LEASE)
        .await
        .expect("reading the Lease")
}

fn holder(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

/// Waits until exactly one of `candidates` leads; returns its index.
async fn sole_leader(candidates: &[&Candidate], timeout: Duration) -> usize {
    wait_for("exactly one leader", timeout, || async {
        let leading: Vec<usize> = (0..candidates.len())
            .filter(|&i| candidates[i].leads())
            .collect();
        match leading[..] {
            [one] => Ok(one),
            _ => Err(format!("leaders: {leading:?}")),
        }
    })
    .await
}

#[tokio::test]
async fn one_leader_at_a_time_and_takeover_after_a_crash() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "leader-crash").await;
    let (lease_duration, renew) = (Duration::from_secs(3), Duration::from_secs(1));
    let a = Candidate::start(&client, ns.name(), "candidate-a", lease_duration, renew);
    let b = Candidate::start(&client, ns.name(), "candidate-b", lease_duration, renew);

    let first = sole_leader(&[&a, &b], Duration::from_secs(10)).await;
    let (leader, follower) = if first == 0 { (a, b) } else { (b, a) };

    // Sample for a few lease periods: never two leaders, and the Lease names the one.
    let until = Instant::now() + Duration::from_secs(6);
    let (mut samples, mut exactly_one) = (0, 0);
    while Instant::now() < until {
        let (l, f) = (leader.leads(), follower.leads());
        assert!(!(l && f), "both candidates lead at once");
        assert!(!f, "the follower took over while the leader was renewing");
        samples += 1;
        exactly_one += usize::from(l);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Under a loaded machine a renewal can time out and the leader steps down
    // for a moment (it must: that is the safety rule); it must be rare.
    assert!(
        exactly_one * 100 >= samples * 95,
        "the leader led in only {exactly_one} of {samples} samples"
    );
    let held = lease(&client, ns.name()).await;
    assert_eq!(holder(&held).as_deref(), Some(leader.identity.as_str()));
    let spec = held.spec.clone().unwrap();
    assert_eq!(spec.lease_duration_seconds, Some(3));
    assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());
    let transitions = spec.lease_transitions.unwrap_or(0);

    // Crash the leader: no release, its Lease has to expire.
    leader.task.abort();
    let crashed = Instant::now();
    let took_over = wait_for(
        "the follower to take over",
        Duration::from_secs(15),
        || async {
            if follower.leads() {
                Ok(crashed.elapsed())
            } else {
                Err("not yet".to_owned())
            }
        },
    )
    .await;
    // Its last renewal was at most one renew period before the crash, and the
    // follower must then wait a full lease duration of no change.
    assert!(
        took_over >= lease_duration - renew,
        "took over after {took_over:?}: before the lease could have expired"
    );
    assert!(
        took_over <= lease_duration + renew * 3,
        "took over only after {took_over:?}"
    );
    let taken = lease(&client, ns.name()).await;
    assert_eq!(holder(&taken).as_deref(), Some(follower.identity.as_str()));
    assert_eq!(
        taken.spec.unwrap().lease_transitions,
        Some(transitions + 1),
        "a takeover counts as a transition"
    );

    follower.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn graceful_stop_releases_and_hands_over_at_once() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "leader-release").await;
    // A long lease: a handover faster than its expiry proves the release.
    let (lease_duration, renew) = (Duration::from_secs(10), Duration::from_millis(500));
    let a = Candidate::start(&client, ns.name(), "candidate-a", lease_duration, renew);
    let b = Candidate::start(&client, ns.name(), "candidate-b", lease_duration, renew);
    let first = sole_leader(&[&a, &b], Duration::from_secs(10)).await;
    let (leader, follower) = if first == 0 { (a, b) } else { (b, a) };
    let mut leader_flag = leader.leading.clone();
    let leader_identity = leader.identity.clone();

    let stopped = Instant::now();
    leader.stop().await;
    assert!(!*leader_flag.borrow_and_update(), "stopped but still leads");
    let took_over = wait_for("the follower to lead", Duration::from_secs(8), || async {
        if follower.leads() {
            Ok(stopped.elapsed())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
    assert!(
        took_over < lease_duration / 2,
        "handover took {took_over:?}: the lease was not released"
    );
    let taken = lease(&client, ns.name()).await;
    assert_eq!(holder(&taken).as_deref(), Some(follower.identity.as_str()));
    assert_ne!(follower.identity, leader_identity);

    // The last one standing releases too: the Lease ends with no holder.
    follower.stop().await;
    assert_eq!(holder(&lease(&client, ns.name()).await), None);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_live_foreign_holder_is_respected_until_it_stops_renewing() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "leader-foreign").await;
    let api: Api<Lease> = Api::namespaced(client.clone(), ns.name());
    // Another process holds the Lease, with a renewTime far in the future:
    // only the local observation of "no change" may count, not wall clocks.
    let foreign: Lease = serde_json::from_value(serde_json::json!({
        "metadata": { "name": LEASE },
        "spec": {
            "holderIdentity": "someone-else",
            "leaseDurationSeconds": 2,
            "acquireTime": "2099-01-01T00:00:00.000000Z",
            "renewTime": "2099-01-01T00:00:00.000000Z",
            "leaseTransitions": 7
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &foreign).await.unwrap();

    let started = Instant::now();
    let c = Candidate::start(
        &client,
        ns.name(),
        "candidate-c",
        Duration::from_secs(2),
        Duration::from_millis(500),
    );
    // The foreign holder renews for a while: c must not take over.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut lease = api.get(LEASE).await.unwrap();
        let spec = lease.spec.as_mut().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("someone-else"));
        assert!(!c.leads(), "took over a lease that is being renewed");
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        api.replace(LEASE, &PostParams::default(), &lease)
            .await
            .unwrap();
    }
    let renewed_until = Instant::now();
    // Then it stops renewing: c takes over after the lease duration.
    wait_for("c to take over", Duration::from_secs(10), || async {
        if c.leads() {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
    assert!(renewed_until.elapsed() >= Duration::from_millis(1500));
    assert!(started.elapsed() >= Duration::from_secs(4));
    let taken = api.get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(taken.holder_identity.as_deref(), Some("candidate-c"));
    assert_eq!(taken.lease_transitions, Some(8));
    assert_eq!(taken.lease_duration_seconds, Some(2));
    c.stop().await;
    ns.cleanup().await;
}
