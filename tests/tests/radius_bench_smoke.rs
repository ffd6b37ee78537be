//! Keeps the RADIUS benchmark's load generator honest, small and in-process: against
//! the agent's RADIUS server on the benchmark's own store contents, every request must
//! be answered, verified and counted as what it was, in each of the benchmark's lanes
//! (closed-loop PAP and accounting, paced PAP, accounting and wrong passwords). No
//! timing is asserted.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use outpost_agent::radius;
use outpost_agent::store::Store;
use outpost_protocol::EventBody;
use outpost_tests::radius_bench;
use outpost_tests::radload::{self, LoadConfig, PacedLane, RequestKind};

/// The agent's RADIUS server on 127.0.0.1:0 with `subscribers` of the benchmark's
/// subscribers, serving an auth and an accounting socket (as long as the runtime
/// lives), on a store in a directory of its own.
struct Agent {
    auth: SocketAddr,
    acct: SocketAddr,
    store: Arc<Store>,
    _dir: tempfile::TempDir,
}

async fn start(subscribers: u64) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("agent.db"), 1_000_000).unwrap();
    store
        .apply(&radius_bench::snapshot(subscribers, true))
        .unwrap();
    let store = Arc::new(store);
    let auth = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let acct = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (auth_addr, acct_addr) = (auth.local_addr().unwrap(), acct.local_addr().unwrap());
    let server = radius::Server::new(store.clone(), radius::Config::default());
    tokio::spawn(async move { server.run(auth, acct).await });
    Agent {
        auth: auth_addr,
        acct: acct_addr,
        store,
        _dir: dir,
    }
}

async fn agent(subscribers: u64) -> (SocketAddr, Agent) {
    let agent = start(subscribers).await;
    (agent.auth, agent)
}

/// The accounting records in the store's outbox, as (Acct-Session-Id, status).
fn journaled(store: &Store) -> Vec<(String, String)> {
    store
        .outbox_batch(1_000_000)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::Accounting(a) => Some((a.session_id, format!("{:?}", a.status))),
            _ => None,
        })
        .collect()
}

fn small_load(target: std::net::SocketAddr, users: u64) -> LoadConfig {
    LoadConfig {
        requests: 2_000,
        max_duration: Duration::from_secs(120),
        sockets: 4,
        window: 32,
        // Generous: the machines are shared, and a timeout here fails the test.
        timeout: Duration::from_secs(10),
        ..LoadConfig::new(target, radius_bench::SECRET, users)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_answered_and_accepted() {
    let (addr, _dir) = agent(1_000).await;
    let report = radload::run(&small_load(addr, 1_000)).await.unwrap();
    assert_eq!(report.sent, 2_000);
    assert_eq!(report.accepts, 2_000, "{report:?}");
    assert_eq!(
        (
            report.rejects,
            report.other,
            report.timeouts,
            report.unmatched
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(report.latency_samples(), 2_000);
    assert!(report.latency(0.99).is_some());
}

/// Users the store does not hold are rejected, and counted as rejects: requests
/// 1,000..1,500 name user1000..user1499, the rest cycle through user0..user999 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_are_counted_as_rejects() {
    let (addr, _dir) = agent(1_000).await;
    let report = radload::run(&small_load(addr, 1_500)).await.unwrap();
    assert_eq!(
        (
            report.sent,
            report.accepts,
            report.rejects,
            report.timeouts,
            report.unmatched
        ),
        (2_000, 1_500, 500, 0, 0),
        "{report:?}"
    );
}

/// A server that requires Message-Authenticator drops requests without it: they time
/// out, and the generator reuses their slots until the budget is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_time_out_and_free_their_slots() {
    let (addr, _dir) = agent(10).await;
    let load = LoadConfig {
        requests: 20,
        max_duration: Duration::from_secs(120),
        sockets: 2,
        window: 4,
        timeout: Duration::from_millis(200),
        message_authenticator: false,
        ..LoadConfig::new(addr, radius_bench::SECRET, 10)
    };
    let report = radload::run(&load).await.unwrap();
    assert_eq!(
        (
            report.sent,
            report.timeouts,
            report.answered(),
            report.unmatched
        ),
        (20, 20, 0, 0),
        "{report:?}"
    );
}

/// Replies signed with another secret do not verify: they are counted as unmatched,
/// never as answers, and the requests they pretended to answer still time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_that_do_not_verify_are_not_counted_as_answers() {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    // A server that accepts everything, signing with a secret the NAS does not share.
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok((len, src)) = socket.recv_from(&mut buf).await {
            if len < 20 {
                continue;
            }
            let request_authenticator: [u8; 16] = buf[4..20].try_into().unwrap();
            let mut reply = vec![2, buf[1], 0, 20];
            reply.extend_from_slice(&[0; 16]);
            radius::authenticator::sign_response(&mut reply, &request_authenticator, b"forger");
            let _ = socket.send_to(&reply, src).await;
        }
    });
    let load = LoadConfig {
        requests: 10,
        max_duration: Duration::from_secs(120),
        sockets: 1,
        window: 10,
        timeout: Duration::from_millis(200),
        ..LoadConfig::new(addr, radius_bench::SECRET, 10)
    };
    let report = radload::run(&load).await.unwrap();
    assert_eq!(
        (report.answered(), report.unmatched, report.timeouts),
        (0, 10, 10),
        "{report:?}"
    );
}

/// Accounting in the closed loop: every record is acknowledged, and every acknowledged
/// record is in the store's journal once, as what it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_accounting_records_are_all_journaled() {
    let agent = start(100).await;
    let load = LoadConfig {
        kind: RequestKind::Accounting,
        keep_answered: true,
        ..small_load(agent.acct, 100)
    };
    let report = radload::run(&load).await.unwrap();
    assert_eq!(
        (
            report.sent,
            report.accounting_responses,
            report.accepts + report.rejects + report.other,
            report.timeouts,
            report.unmatched
        ),
        (2_000, 2_000, 0, 0, 0),
        "{report:?}"
    );
    let expected: HashSet<_> = report
        .answered_requests()
        .iter()
        .map(|&i| {
            let (session, status) = radload::accounting_record(&load.session_prefix, i);
            (session, format!("{status:?}"))
        })
        .collect();
    assert_eq!(expected.len(), 2_000);
    let journal = journaled(&agent.store);
    assert_eq!(journal.len(), 2_000, "each record once");
    assert_eq!(journal.into_iter().collect::<HashSet<_>>(), expected);
}

/// Paced lanes side by side: each sends what its rate and duration say, the valid
/// logins are accepted, the wrong passwords rejected (and deferred to the journal), the
/// paced accounting acknowledged, and every request has its latency and lateness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_lanes_send_their_rates_and_every_answer_is_counted() {
    let agent = start(1_000).await;
    let lane = |target, kind, rate: f64| PacedLane {
        load: LoadConfig {
            kind,
            requests: u64::MAX,
            max_duration: Duration::from_secs(2),
            sockets: 2,
            window: 255,
            timeout: Duration::from_secs(10),
            keep_answered: true,
            ..LoadConfig::new(target, radius_bench::SECRET, 1_000)
        },
        rate,
    };
    let lanes = [
        lane(agent.auth, RequestKind::Pap, 100.0),
        lane(agent.auth, RequestKind::WrongPassword, 400.0),
        lane(agent.acct, RequestKind::Accounting, 150.0),
    ];
    let reports = tokio::task::spawn_blocking(move || radload::run_paced(&lanes))
        .await
        .unwrap()
        .unwrap();
    let counts: Vec<_> = reports
        .iter()
        .map(|r| {
            (
                r.sent,
                r.accepts,
                r.rejects,
                r.accounting_responses,
                r.timeouts,
                r.unmatched,
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            (200, 200, 0, 0, 0, 0),
            (800, 0, 800, 0, 0, 0),
            (300, 0, 0, 300, 0, 0)
        ],
        "{reports:?}"
    );
    for r in &reports {
        assert_eq!(r.latency_samples() as u64, r.sent);
        assert!(r.latency(0.999).is_some() && r.lateness(0.99).is_some());
        assert_eq!(r.answered_requests().len() as u64, r.sent);
    }
    // The rejects are deferred off the answering threads and journaled in one go.
    assert_eq!(agent.store.deferred(), 800);
    assert_eq!(journaled(&agent.store).len(), 300);
    let rejects = agent
        .store
        .outbox_batch(1_000_000)
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.body, EventBody::AuthReject { .. }))
        .count();
    assert_eq!(rejects, 800);
}

#[test]
fn a_paced_lane_without_a_positive_rate_is_refused() {
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let lane = PacedLane {
            load: LoadConfig::new("127.0.0.1:9".parse().unwrap(), "s", 10),
            rate,
        };
        assert_eq!(
            radload::run_paced(&[lane]).unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput,
            "{rate}"
        );
    }
}
