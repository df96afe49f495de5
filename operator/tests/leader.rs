//! Leader election against the stateful fake API server: two replicas, one leader, and a
//! takeover when the leader goes away.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kaa_operator::leader::{Elector, Ended, LeaseSettings};
use kaa_testkit::{FakeApiServer, ObjectKey, eventually};
use tokio::{sync::oneshot, task::JoinHandle};

const NS: &str = "kaa";
const LEASE: Duration = Duration::from_secs(2);
/// Generous: a takeover may take up to the lease duration plus a retry period.
const WAIT: Duration = Duration::from_secs(10);

/// Clears its flag when the work is dropped (the replica stopped reconciling).
struct Leading(Arc<AtomicBool>);

impl Drop for Leading {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

struct Replica {
    leading: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Ended>,
}

impl Replica {
    fn leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }
}

/// A replica whose "reconciling" is a flag that is set while it leads.
fn replica(server: &FakeApiServer, identity: &str) -> Replica {
    let settings = LeaseSettings {
        lease_duration: LEASE,
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
        ..LeaseSettings::new("kaa-operator", NS, identity)
    };
    let mut elector = Elector::new(server.client_in(NS), settings);
    let leading = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = oneshot::channel::<()>();
    let flag = leading.clone();
    let task = tokio::spawn(async move {
        let work = || {
            let flag = flag.clone();
            async move {
                flag.store(true, Ordering::SeqCst);
                let _leading = Leading(flag);
                std::future::pending::<()>().await;
            }
        };
        elector
            .run(work, async {
                let _ = stopped.await;
            })
            .await
    });
    Replica {
        leading,
        stop: Some(stop),
        task,
    }
}

fn holder(server: &FakeApiServer) -> Option<String> {
    let key = ObjectKey {
        group: "coordination.k8s.io".into(),
        version: "v1".into(),
        plural: "leases".into(),
        namespace: NS.into(),
        name: "kaa-operator".into(),
    };
    server
        .object(&key)
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

/// Both replicas started; returns (leader, follower) once one leads.
async fn elected(server: &FakeApiServer) -> (Replica, Replica) {
    let a = replica(server, "a");
    let b = replica(server, "b");
    eventually(WAIT, "one replica to lead", || async {
        (a.leading() || b.leading()).then_some(())
    })
    .await;
    // Several renewals later there is still exactly one leader, and it holds the Lease.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(a.leading() != b.leading(), "exactly one replica leads");
    }
    match a.leading() {
        true => (a, b),
        false => (b, a),
    }
}

#[tokio::test]
async fn exactly_one_replica_leads_and_a_stopped_leader_hands_over_at_once() {
    let server = FakeApiServer::start().await;
    let (mut leader, follower) = elected(&server).await;
    let leader_name = holder(&server).unwrap();
    leader.stop.take().unwrap().send(()).unwrap();
    let stopped_flag = leader.leading.clone();
    assert_eq!(leader.task.await.unwrap(), Ended::Shutdown);
    assert!(
        !stopped_flag.load(Ordering::SeqCst),
        "a stopped replica no longer reconciles"
    );
    // Released on shutdown: the follower need not wait out the lease duration.
    eventually(WAIT, "the follower to take over", || async {
        follower.leading().then_some(())
    })
    .await;
    let new_holder = holder(&server).unwrap();
    assert_ne!(new_holder, leader_name);
}

#[tokio::test]
async fn a_leader_that_vanishes_is_replaced_after_the_lease_expires() {
    let server = FakeApiServer::start().await;
    let (leader, follower) = elected(&server).await;
    // A crash: no release, the Lease still names the old leader until it expires.
    leader.task.abort();
    let _ = leader.task.await;
    eventually(WAIT, "the follower to take over an expired Lease", || async {
        follower.leading().then_some(())
    })
    .await;
    assert!(follower.leading());
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_stops_reconciling() {
    let server = FakeApiServer::start().await;
    let a = replica(&server, "a");
    eventually(WAIT, "the only replica to lead", || async {
        a.leading().then_some(())
    })
    .await;
    // Someone else (an operator of another build, or a user) takes the Lease over.
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(server.client_in(NS), NS);
    let mut lease = leases.get("kaa-operator").await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    spec.lease_duration_seconds = Some(3600);
    leases
        .replace("kaa-operator", &Default::default(), &lease)
        .await
        .unwrap();
    eventually(WAIT, "the replica to stop reconciling", || async {
        (!a.leading()).then_some(())
    })
    .await;
    assert_eq!(holder(&server).as_deref(), Some("intruder"));
}
