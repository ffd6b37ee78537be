//! Keeps the RADIUS benchmark's load generator honest, small and in-process: against
//! the agent's RADIUS server on the benchmark's own store contents, every request must
//! be answered, verified and counted as what it was. No timing is asserted.

use std::sync::Arc;
use std::time::Duration;

use outpost_agent::radius::{self, Listener};
use outpost_agent::store::Store;
use outpost_tests::radius_bench;
use outpost_tests::radload::{self, LoadConfig};

/// Starts the agent's RADIUS server on 127.0.0.1:0 with `subscribers` of the
/// benchmark's subscribers; returns its address (the server lives as long as the
/// runtime) and the store's directory.
async fn agent(subscribers: u64) -> (std::net::SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("agent.db"), 1_000_000).unwrap();
    store
        .apply(&radius_bench::snapshot(subscribers, true))
        .unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let server = radius::Server::new(Arc::new(store), radius::Config::default());
    tokio::spawn(async move { server.serve(socket, Listener::Auth).await });
    (addr, dir)
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
