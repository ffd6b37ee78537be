//! The whole agent started inside the test process with [`Site::start`]: enforcement
//! and shaping off (no root), every port 0, the controller unreachable. It answers
//! RADIUS from the store it was started on, journals accounting, and
//! [`SiteHandle::shutdown`] stops every task and RADIUS thread it started.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use outpost_agent::radius::authenticator;
use outpost_agent::site::{Site, SiteHandle};
use outpost_agent::store::Store;
use outpost_protocol::{
    NasKind, NasState, SiteSettings, StateKind, StateResponse, SubscriberState, SubscriberStatus,
};
use radius::core::code::Code;
use radius::core::packet::Packet;
use radius::core::{rfc2865, rfc2866};

const SECRET: &str = "in-process-secret";
const HANG_GUARD: Duration = Duration::from_secs(30);

fn subscriber(
    id: i64,
    username: &str,
    password: &str,
    status: SubscriberStatus,
) -> SubscriberState {
    SubscriberState {
        status,
        expires_at: None,
        rate: None,
        ..outpost_testkit::fixtures::subscriber(id, username, password)
    }
}

fn snapshot() -> StateResponse {
    StateResponse {
        kind: StateKind::Snapshot,
        revision: 3,
        subscribers: vec![
            subscriber(1, "amina", "pa55word", SubscriberStatus::Active),
            subscriber(2, "omar", "pw", SubscriberStatus::Suspended),
        ],
        removed_subscribers: vec![],
        nas: vec![NasState {
            id: 1,
            ip: "127.0.0.1".into(),
            secret: SECRET.into(),
            kind: NasKind::Generic,
            coa_port: 3799,
            require_message_authenticator: false,
        }],
        removed_nas: vec![],
        settings: Some(SiteSettings {
            acct_interim_interval_secs: 300,
            shaping_enabled: false,
        }),
        brands: vec![],
        notices: None,
    }
}

/// A site on 127.0.0.1:0 whose store already holds [`snapshot`]; the controller URL
/// names a loopback port nothing listens on, so sync fails and the site runs from
/// its store, as it must when the controller is unreachable.
async fn start(dir: &std::path::Path) -> SiteHandle {
    Store::open(&dir.join("agent.db"), 1000)
        .unwrap()
        .apply(&snapshot())
        .unwrap();
    let cfg = common::loopback_config(dir, None);
    let id = common::identity();
    Site::start(&cfg, &id).await.unwrap()
}

async fn ask(to: SocketAddr, request: &[u8]) -> Vec<u8> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(request, to).await.unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = tokio::time::timeout(HANG_GUARD, socket.recv_from(&mut buf))
        .await
        .expect("the site answers")
        .unwrap();
    buf[..n].to_vec()
}

fn access_request(user: &str, password: &str) -> Vec<u8> {
    let mut packet = Packet::new(Code::AccessRequest, SECRET.as_bytes());
    rfc2865::add_user_name(&mut packet, user);
    rfc2865::add_user_password(&mut packet, password.as_bytes()).unwrap();
    let mut bytes = packet.encode().unwrap();
    authenticator::sign_request(&mut bytes, SECRET.as_bytes());
    bytes
}

async fn code_of(to: SocketAddr, request: &[u8]) -> Code {
    let reply = ask(to, request).await;
    let request_authenticator: [u8; 16] = request[4..20].try_into().unwrap();
    assert!(
        authenticator::verify_response(&reply, &request_authenticator, SECRET.as_bytes()),
        "the answer is signed with the NAS's secret"
    );
    Packet::decode(&reply, SECRET.as_bytes())
        .unwrap()
        .get_code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_started_in_process_answers_radius_and_stops_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let site = start(dir.path()).await;
    assert_ne!(site.auth_addr.port(), 0, "the bound port is reported");
    assert_ne!(site.acct_addr.port(), 0);
    assert_eq!(
        site.portal_addr, None,
        "no suspended page without [enforce]"
    );

    assert_eq!(
        code_of(site.auth_addr, &access_request("amina", "pa55word")).await,
        Code::AccessAccept
    );
    assert_eq!(
        code_of(site.auth_addr, &access_request("omar", "pw")).await,
        Code::AccessReject,
        "suspended by the store it was started on"
    );
    let mut start = Packet::new(Code::AccountingRequest, SECRET.as_bytes());
    rfc2866::add_acct_status_type(&mut start, rfc2866::ACCT_STATUS_TYPE_START);
    rfc2865::add_user_name(&mut start, "amina");
    rfc2866::add_acct_session_id(&mut start, "in-process-1");
    let start = start.encode().unwrap();
    assert_eq!(
        code_of(site.acct_addr, &start).await,
        Code::AccountingResponse
    );

    let status = site.status();
    assert_eq!(
        (
            status.revision,
            status.subscribers,
            status.nas,
            status.online_sessions
        ),
        (3, 2, 1, 1),
        "{status:?}"
    );
    assert_eq!(status.radius_requests, 3, "{status:?}");
    assert!(
        status.backlog >= 2,
        "the reject and the Start are journaled"
    );
    assert!(!status.controller_reachable, "{status:?}");
    assert!(status.enforcement_healthy, "{status:?}");

    let (auth, acct) = (site.auth_addr, site.acct_addr);
    let store = site.store().clone();
    tokio::time::timeout(HANG_GUARD, site.shutdown())
        .await
        .expect("shutdown ends")
        .unwrap();
    // Every task held a reference to the store; only ours is left (a blocking read an
    // aborted task had started may take a moment to let go of its own).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::sync::Arc::strong_count(&store) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        std::sync::Arc::strong_count(&store),
        1,
        "a site task outlived shutdown"
    );
    // The RADIUS threads let go of their sockets: the ports can be bound again.
    std::net::UdpSocket::bind(auth).expect("the auth port is free after shutdown");
    std::net::UdpSocket::bind(acct).expect("the accounting port is free after shutdown");
}
