//! The agent's RADIUS server on real sockets, driven by real packets.
//!
//! Two kinds of tests live here:
//! - `radclient_*`: FreeRADIUS's own client (`radclient`, Debian `freeradius-utils`,
//!   which `.ci/run` installs) talks to the server. They need no root, so they run in
//!   the plain tier; without `radclient` they fail, naming the package.
//! - the rest: packets built here with the `radius` codec, for what `radclient` cannot
//!   do (send the same packet twice from one socket, forge a Message-Authenticator,
//!   send from an address that is not a NAS, MS-CHAPv2 — `radclient` 3.2's
//!   `MS-CHAP-Password` computes MS-CHAPv1, see `radclient_ms_chap_password_is_mschapv1`);
//!   and `every_acknowledged_accounting_record_survives_kill_9_mid_load`, which runs the
//!   real `outpost-agent` binary under accounting load and kills it with SIGKILL.
//!
//! No assertion depends on timing. A drop is proven by the server's counters, read once
//! the server says it has finished with the datagram ([`Stats::wait_handled`], marked
//! after any reply was sent); the client's socket is then also checked to be empty.
//! (For a request the server must drop, radclient itself waits out its 1 s timeout;
//! the test still asserts on the counters, not on the wait.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use outpost_agent::radius::authenticator;
use outpost_agent::radius::{Config, Server, Stats, StatsSnapshot};
use outpost_agent::store::{OnlineSession, Store};
use outpost_protocol::{
    AcctStatus, Event, EventBody, NasKind, NasState, RejectReason, SiteSettings, StateKind,
    StateResponse, SubscriberState, SubscriberStatus,
};
use outpost_testkit::fixtures::{self, subscriber, unix_now};
use outpost_testkit::radclient::{Radclient, Reply};
use radius::core::code::Code;
use radius::core::packet::Packet;
use radius::core::{rfc2865, rfc2866, rfc2869};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

const SECRET: &str = "testing123";
/// Guards against a hang turning into a stuck CI job; never an assertion about speed.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn nas(ip: &str, kind: NasKind, require_message_authenticator: bool) -> NasState {
    NasState {
        require_message_authenticator,
        ..fixtures::nas(7, ip, SECRET, kind)
    }
}

/// A site with one NAS at 127.0.0.1 and a few subscribers: the agent's own store (in a
/// temporary file) seeded from a snapshot, as sync leaves it.
struct Site {
    store: Store,
    dir: tempfile::TempDir,
}

fn site(kind: NasKind, require_message_authenticator: bool) -> Site {
    let subscribers = vec![
        SubscriberState {
            static_ipv4: Some("100.64.0.9".into()),
            ..subscriber(1, "amina", "pa55word")
        },
        subscriber(2, "omar", "0mar-secret"),
        // RFC 2759 §9.2's user.
        subscriber(3, "User", "clientPass"),
        SubscriberState {
            status: SubscriberStatus::Suspended,
            ..subscriber(4, "suspended", "pw")
        },
        SubscriberState {
            status: SubscriberStatus::Disabled,
            ..subscriber(5, "disabled", "pw")
        },
        SubscriberState {
            status: SubscriberStatus::Expired,
            ..subscriber(6, "expired-status", "pw")
        },
        // Still "active" by the last sync, but past its expiry by the agent's clock.
        SubscriberState {
            expires_at: Some(unix_now() - 60),
            ..subscriber(7, "expired-clock", "pw")
        },
        SubscriberState {
            mac: Some("AA:BB:CC:00:11:22".into()),
            ..subscriber(8, "macbound", "pw")
        },
        SubscriberState {
            max_sessions: 2,
            ..subscriber(9, "family", "pw")
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("agent.db"), 100_000).unwrap();
    store
        .apply(&StateResponse {
            kind: StateKind::Snapshot,
            revision: 1,
            subscribers,
            removed_subscribers: vec![],
            nas: vec![nas("127.0.0.1", kind, require_message_authenticator)],
            removed_nas: vec![],
            settings: Some(SiteSettings {
                acct_interim_interval_secs: 300,
                shaping_enabled: false,
            }),
            brands: vec![],
            notices: None,
        })
        .unwrap();
    Site { store, dir }
}

/// A running server on 127.0.0.1:0 (auth and acct sockets), stopped on drop.
struct Lab {
    backend: Arc<Store>,
    _dir: tempfile::TempDir,
    stats: Arc<Stats>,
    auth: SocketAddr,
    acct: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Lab {
    async fn start(site: Site) -> Lab {
        let backend = Arc::new(site.store);
        let auth = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let acct = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (auth_addr, acct_addr) = (auth.local_addr().unwrap(), acct.local_addr().unwrap());
        let server = Server::new(backend.clone(), Config::default());
        let stats = server.stats();
        let task = tokio::spawn(async move {
            server.run(auth, acct).await.expect("RADIUS server failed");
        });
        Lab {
            backend,
            _dir: site.dir,
            stats,
            auth: auth_addr,
            acct: acct_addr,
            task,
        }
    }

    /// Waits until the server has finished with `n` datagrams, then reads its counters.
    async fn stats_after(&self, n: u64) -> StatsSnapshot {
        tokio::time::timeout(HANG_GUARD, self.stats.wait_handled(n))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "server never finished {n} datagrams: {:?}",
                    self.stats.snapshot()
                )
            });
        self.stats.snapshot()
    }

    /// Everything journaled, oldest first.
    fn journal(&self) -> Vec<Event> {
        self.backend.outbox_batch(100_000).unwrap()
    }

    fn sessions(&self) -> Vec<OnlineSession> {
        self.backend.sessions()
    }

    fn last_reject(&self) -> RejectReason {
        match self.journal().into_iter().rev().find_map(|e| match e.body {
            EventBody::AuthReject { reason, .. } => Some(reason),
            _ => None,
        }) {
            Some(reason) => reason,
            None => panic!("no reject journaled: {:?}", self.journal()),
        }
    }

    fn online(&self) -> Vec<(String, String)> {
        self.sessions()
            .into_iter()
            .map(|s| (s.username, s.session_id))
            .collect()
    }
}

// ---------------------------------------------------------------------------------
// radclient
// ---------------------------------------------------------------------------------

/// Runs `radclient -x server kind SECRET` with `attributes` on stdin and returns the
/// reply it printed. `answered: false` sends once with a short wait, for requests the
/// server must drop; the test then checks the server's counters, not the clock.
async fn radclient(
    server: SocketAddr,
    kind: &str,
    attributes: &str,
    answered: bool,
) -> Option<Reply> {
    let (retries, timeout) = if answered { (3, 10) } else { (1, 1) };
    let sent = Radclient::new(server, SECRET)
        .tries(retries, timeout)
        .send_async(kind, attributes)
        .await;
    let (stdout, stderr) = (&sent.stdout, &sent.stderr);
    if answered {
        assert!(
            sent.reply.is_some(),
            "radclient got no reply\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    } else {
        assert!(
            sent.reply.is_none(),
            "radclient got a reply\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("invalid") && !stdout.contains("invalid"),
        "radclient refused our reply\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    sent.reply
}

async fn pap(lab: &Lab, user: &str, password: &str) -> Reply {
    let attrs = format!("User-Name = \"{user}\"\nUser-Password = \"{password}\"\n");
    radclient(lab.auth, "auth", &attrs, true).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radclient_pap_accept_carries_mikrotik_reply_attributes() {
    let lab = Lab::start(site(NasKind::Mikrotik, false)).await;
    let reply = pap(&lab, "amina", "pa55word").await;
    assert_eq!(reply.code, "Access-Accept", "{reply:?}");
    // rx/tx from the router's side: upload first.
    assert_eq!(
        reply.get("Mikrotik-Rate-Limit"),
        Some("2000k/10000k"),
        "{reply:?}"
    );
    assert_eq!(
        reply.get("Framed-IP-Address"),
        Some("100.64.0.9"),
        "{reply:?}"
    );
    let timeout: i64 = reply.get("Session-Timeout").unwrap().parse().unwrap();
    assert!(
        (86_000..=86_400).contains(&timeout),
        "seconds until expiry: {timeout}"
    );
    assert_eq!(reply.get("Acct-Interim-Interval"), Some("300"), "{reply:?}");
    assert_eq!(
        reply.get("Class"),
        Some(format!("0x{}", hex::encode("outpost:subscriber:1")).as_str()),
        "{reply:?}"
    );
    assert!(reply.get("Message-Authenticator").is_some(), "{reply:?}");
    assert_eq!(reply.get("Filter-Id"), None);
    assert_eq!(lab.stats_after(1).await.accepts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radclient_pap_accept_carries_accel_ppp_filter_id() {
    let lab = Lab::start(site(NasKind::AccelPpp, false)).await;
    let reply = pap(&lab, "omar", "0mar-secret").await;
    assert_eq!(reply.code, "Access-Accept", "{reply:?}");
    assert_eq!(
        reply.get("Filter-Id"),
        Some("10000/2000"),
        "down/up: {reply:?}"
    );
    assert_eq!(reply.get("Mikrotik-Rate-Limit"), None);
    assert_eq!(
        reply.get("Framed-IP-Address"),
        None,
        "no static IP: {reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radclient_pap_wrong_password_is_rejected_without_detail() {
    let lab = Lab::start(site(NasKind::Mikrotik, false)).await;
    let reply = pap(&lab, "amina", "pa55wort").await;
    assert_eq!(reply.code, "Access-Reject", "{reply:?}");
    let names: Vec<&str> = reply.attributes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["Message-Authenticator"],
        "a reject says nothing but no"
    );
    assert_eq!(lab.last_reject(), RejectReason::WrongPassword);
    let reply = pap(&lab, "nobody", "x").await;
    assert_eq!(reply.code, "Access-Reject");
    assert_eq!(lab.last_reject(), RejectReason::UnknownUser);
    assert_eq!(lab.stats_after(2).await.rejects, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radclient_chap() {
    let lab = Lab::start(site(NasKind::Mikrotik, false)).await;
    let chap = |password: &str| format!("User-Name = \"amina\"\nCHAP-Password = \"{password}\"\n");
    let reply = radclient(lab.auth, "auth", &chap("pa55word"), true)
        .await
        .unwrap();
    assert_eq!(reply.code, "Access-Accept", "{reply:?}");
    assert_eq!(reply.get("Mikrotik-Rate-Limit"), Some("2000k/10000k"));
    let reply = radclient(lab.auth, "auth", &chap("guess"), true)
        .await
        .unwrap();
    assert_eq!(reply.code, "Access-Reject", "{reply:?}");
    assert_eq!(lab.last_reject(), RejectReason::WrongPassword);
}

/// radclient cannot compute MS-CHAPv2, but it sends attributes verbatim: give it the
/// MS-CHAP-Challenge and MS-CHAP2-Response of RFC 2759 §9.2 and expect the RFC's
/// Authenticator Response back in MS-CHAP2-Success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radclient_mschapv2_with_the_rfc_2759_vectors() {
    let lab = Lab::start(site(NasKind::Mikrotik, false)).await;
    // Ident 0x42, Flags 0, Peer-Challenge, 8 reserved octets, NT-Response.
    let response = format!(
        "0x4200{}{}{}",
        "21402324255E262A28295F2B3A337C7E",
        "0000000000000000",
        "82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF"
    );
    let attrs = |user: &str| {
        format!(
            "User-Name = \"{user}\"\nMS-CHAP-Challenge = 0x5B5D7C7D7B3F2F3E3C2C602132262628\n\
             MS-CHAP2-Response = {response}\n"
        )
    };
    let reply = radclient(lab.auth, "auth", &attrs("User"), true)
        .await
        .unwrap();
    assert_eq!(reply.code, "Access-Accept", "{reply:?}");
    let success = format!(
        "0x42{}",
        hex::encode("S=407A5589115FD0D6209F510FE9C04566932CDA56")
    );
    assert_eq!(
        reply.get("MS-CHAP2-Success"),
        Some(success.as_str()),
        "{reply:?}"
    );
    // The MPPE keys, as radclient reveals them with the shared secret (RFC 2548
    // §2.4.2): the send key is RFC 3079 §3.5.3's sample, and 128-bit encryption is
    // offered.
    assert_eq!(
        reply.get("MS-MPPE-Send-Key").map(str::to_ascii_lowercase),
        Some("0x8b7cdc149b993a1ba118cb153f56dccb".into()),
        "{reply:?}"
    );
    let recv = reply.get("MS-MPPE-Recv-Key").expect("MS-MPPE-Recv-Key");
    assert_eq!(recv.len(), "0x".len() + 32, "16 octets revealed: {reply:?}");
    assert_ne!(Some(recv), reply.get("MS-MPPE-Send-Key"));
    assert_eq!(
        (
            reply.get("MS-MPPE-Encryption-Policy"),
            reply.get("MS-MPPE-Encryption-Types")
        ),
        (Some("Encryption-Allowed"), Some("4")),
        "{reply:?}"
    );

    // The same response from a user with another password is wrong.
    let reply = radclient(lab.auth, "auth", &attrs("omar"), true)
        .await
        .unwrap();
    assert_eq!(reply.code, "Access-Reject", "{reply:?}");
    assert!(
        reply.get("MS-CHAP-Error").unwrap().contains("E=691"),
        "{reply:?}"
    );
    assert_eq!(lab.last_reject(), RejectReason::WrongPassword);
}

/// Documents what radclient 3.2 does with `MS-CHAP-Password`: it computes MS-CHAPv1
/// (MS-CHAP-Challenge of 8 octets, MS-CHAP-Response), which we do not accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radclient_ms_chap_password_is_mschapv1() {
    let lab = Lab::start(site(NasKind::Mikrotik, false)).await;
    let attrs = "User-Name = \"amina\"\nMS-CHAP-Password = \"pa55word\"\n";
    let reply = radclient(lab.auth, "auth", attrs, true).await.unwrap();
    assert_eq!(reply.code, "Access-Reject", "{reply:?}");
    assert_eq!(lab.last_reject(), RejectReason::UnsupportedAuth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radclient_rejects_by_standing_and_mac_binding() {
    let lab = Lab::start(site(NasKind::Mikrotik, false)).await;
    for (user, reason) in [
        ("suspended", RejectReason::Suspended),
        ("disabled", RejectReason::Disabled),
        ("expired-status", RejectReason::Expired),
        ("expired-clock", RejectReason::Expired),
    ] {
        let reply = pap(&lab, user, "pw").await;
        assert_eq!(reply.code, "Access-Reject", "{user}: {reply:?}");
        assert_eq!(lab.last_reject(), reason, "{user}");
    }
    let from = |mac: &str| {
        format!(
            "User-Name = \"macbound\"\nUser-Password = \"pw\"\nCalling-Station-Id = \"{mac}\"\n"
        )
    };
    let reply = radclient(lab.auth, "auth", &from("AA:BB:CC:00:11:99"), true)
        .await
        .unwrap();
    assert_eq!(reply.code, "Access-Reject", "{reply:?}");
    assert_eq!(lab.last_reject(), RejectReason::MacMismatch);
    let reply = radclient(lab.auth, "auth", &from("aa-bb-cc-00-11-22"), true)
        .await
        .unwrap();
    assert_eq!(
        reply.code, "Access-Accept",
        "the bound MAC in another spelling: {reply:?}"
    );
    let reply = pap(&lab, "macbound", "pw").await;
    assert_eq!(
        reply.code, "Access-Reject",
        "no Calling-Station-Id: {reply:?}"
    );
    assert_eq!(lab.last_reject(), RejectReason::MacMismatch);
}

fn acct_attrs(status: &str, user: &str, session: &str, extra: &str) -> String {
    format!(
        "Acct-Status-Type = {status}\nUser-Name = \"{user}\"\nAcct-Session-Id = \"{session}\"\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radclient_session_limit() {
    let lab = Lab::start(site(NasKind::Mikrotik, false)).await;
    let start = acct_attrs("Start", "amina", "s-1", "");
    let reply = radclient(lab.acct, "acct", &start, true).await.unwrap();
    assert_eq!(reply.code, "Accounting-Response");
    let reply = pap(&lab, "amina", "pa55word").await;
    assert_eq!(
        reply.code, "Access-Reject",
        "max_sessions 1, one online: {reply:?}"
    );
    assert_eq!(lab.last_reject(), RejectReason::SessionLimit);
    let stop = acct_attrs("Stop", "amina", "s-1", "Acct-Session-Time = 60\n");
    radclient(lab.acct, "acct", &stop, true).await.unwrap();
    assert_eq!(pap(&lab, "amina", "pa55word").await.code, "Access-Accept");

    // A limit of two lets a second session in, not a third.
    for session in ["f-1", "f-2"] {
        assert_eq!(pap(&lab, "family", "pw").await.code, "Access-Accept");
        radclient(
            lab.acct,
            "acct",
            &acct_attrs("Start", "family", session, ""),
            true,
        )
        .await
        .unwrap();
    }
    assert_eq!(pap(&lab, "family", "pw").await.code, "Access-Reject");
    assert_eq!(lab.last_reject(), RejectReason::SessionLimit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radclient_accounting_moves_the_session_table() {
    let lab = Lab::start(site(NasKind::Mikrotik, false)).await;
    let acct = |attrs: String| async move {
        let reply = radclient(lab.acct, "acct", &attrs, true).await.unwrap();
        assert_eq!(reply.code, "Accounting-Response", "{reply:?}");
    };
    acct(acct_attrs(
        "Start",
        "amina",
        "a-1",
        "Framed-IP-Address = 100.64.0.9\n",
    ))
    .await;
    acct(acct_attrs("Start", "omar", "o-1", "")).await;
    assert_eq!(
        lab.online(),
        [
            ("amina".into(), "a-1".into()),
            ("omar".into(), "o-1".into())
        ]
    );

    let interim = "Acct-Session-Time = 300\nAcct-Input-Octets = 1000\nAcct-Input-Gigawords = 1\n\
                   Acct-Output-Octets = 5000\n";
    acct(acct_attrs("Interim-Update", "amina", "a-1", interim)).await;
    // The store's session table keeps only what enforcement needs; the counters and
    // the address as this record gave them are in its journaled accounting record.
    let amina = lab
        .journal()
        .into_iter()
        .rev()
        .find_map(|e| match e.body {
            EventBody::Accounting(a) if a.username == "amina" => Some(a),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (amina.session_time, amina.input_octets, amina.output_octets),
        (300, (1 << 32) + 1000, 5000)
    );
    assert_eq!(amina.framed_ip, None, "each record replaces the last");

    acct(acct_attrs(
        "Stop",
        "omar",
        "o-1",
        "Acct-Terminate-Cause = Lost-Carrier\n",
    ))
    .await;
    assert_eq!(lab.online(), [("amina".into(), "a-1".into())]);
    let stop = lab.journal().into_iter().rev().find_map(|e| match e.body {
        EventBody::Accounting(a) if a.status == AcctStatus::Stop => Some(a),
        _ => None,
    });
    assert_eq!(
        stop.unwrap().terminate_cause.as_deref(),
        Some("Lost-Carrier")
    );

    // The NAS rebooted: everything it had is gone.
    acct("Acct-Status-Type = Accounting-On\nNAS-IP-Address = 127.0.0.1\n".into()).await;
    assert_eq!(lab.online(), []);
    assert!(matches!(
        lab.journal().last().unwrap().body,
        EventBody::NasSessionsClosed { closed: 1, .. }
    ));
    assert_eq!(lab.stats_after(5).await.acct_records, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radclient_message_authenticator_required_by_the_nas() {
    let lab = Lab::start(site(NasKind::Mikrotik, true)).await;
    let attrs = "User-Name = \"amina\"\nUser-Password = \"pa55word\"\n";
    // radclient 3.2.1 adds Message-Authenticator only when asked to.
    assert!(radclient(lab.auth, "auth", attrs, false).await.is_none());
    let stats = lab.stats_after(1).await;
    assert_eq!(stats.missing_message_authenticator, 1, "{stats:?}");
    assert!(lab.journal().is_empty(), "dropped, not rejected");

    let signed = format!("{attrs}Message-Authenticator = 0x00\n");
    let reply = radclient(lab.auth, "auth", &signed, true).await.unwrap();
    assert_eq!(reply.code, "Access-Accept", "{reply:?}");
}

// ---------------------------------------------------------------------------------
// Packets built here
// ---------------------------------------------------------------------------------

/// A NAS-side socket: the tokio handle awaits replies; the std handle of the same
/// socket reads without waiting, to see that nothing came.
struct Client {
    socket: UdpSocket,
    raw: std::net::UdpSocket,
}

async fn client(ip: &str) -> Client {
    let raw = std::net::UdpSocket::bind(format!("{ip}:0")).unwrap();
    raw.set_nonblocking(true).unwrap();
    let socket = UdpSocket::from_std(raw.try_clone().unwrap()).unwrap();
    Client { socket, raw }
}

/// Sends `packet` to `to` and returns the answer.
async fn ask(lab: &Lab, client: &Client, to: SocketAddr, packet: &[u8]) -> Vec<u8> {
    let before = lab.stats.handled();
    client.socket.send_to(packet, to).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, from) = tokio::time::timeout(HANG_GUARD, client.socket.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no answer: {:?}", lab.stats.snapshot()))
        .unwrap();
    assert_eq!(from, to);
    lab.stats_after(before + 1).await;
    buf.truncate(n);
    buf
}

/// Sends `packet` to `to`, waits until the server has finished with it, and checks
/// that nothing came back. (The server marks a datagram finished only after sending
/// its answer, if any; the caller's counter checks prove which way it went.)
async fn ask_unanswered(
    lab: &Lab,
    client: &Client,
    to: SocketAddr,
    packet: &[u8],
) -> StatsSnapshot {
    let before = lab.stats.handled();
    client.socket.send_to(packet, to).await.unwrap();
    let stats = lab.stats_after(before + 1).await;
    let mut buf = [0u8; 4096];
    match client.raw.recv_from(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("expected no answer, got {other:?}"),
    }
    stats
}

fn access_request(user: &str, password: &str, message_authenticator: bool) -> Vec<u8> {
    let mut packet = Packet::new(Code::AccessRequest, SECRET.as_bytes());
    if message_authenticator {
        rfc2869::add_message_authenticator(&mut packet, &[0; 16]);
    }
    rfc2865::add_user_name(&mut packet, user);
    rfc2865::add_user_password(&mut packet, password.as_bytes()).unwrap();
    let mut bytes = packet.encode().unwrap();
    authenticator::sign_request(&mut bytes, SECRET.as_bytes());
    bytes
}

fn request_authenticator(packet: &[u8]) -> [u8; 16] {
    packet[4..20].try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmission_is_answered_from_the_cache_and_counted_once() {
    let lab = Lab::start(site(NasKind::Mikrotik, false)).await;
    let socket = client("127.0.0.1").await;
    let mut start = Packet::new(Code::AccountingRequest, SECRET.as_bytes());
    rfc2866::add_acct_status_type(&mut start, rfc2866::ACCT_STATUS_TYPE_START);
    rfc2865::add_user_name(&mut start, "amina");
    rfc2866::add_acct_session_id(&mut start, "r-1");
    let start = start.encode().unwrap(); // the codec computes the accounting authenticator

    let first = ask(&lab, &socket, lab.acct, &start).await;
    let second = ask(&lab, &socket, lab.acct, &start).await;
    assert_eq!(first, second, "byte-identical");
    assert_eq!(first[0], Code::AccountingResponse as u8);
    assert!(authenticator::verify_response(
        &first,
        &request_authenticator(&start),
        SECRET.as_bytes()
    ));
    let stats = lab.stats_after(2).await;
    assert_eq!(
        (stats.acct_records, stats.retransmissions),
        (1, 1),
        "{stats:?}"
    );
    let records = lab
        .journal()
        .into_iter()
        .filter(|e| matches!(e.body, EventBody::Accounting(_)))
        .count();
    assert_eq!(records, 1);

    // The same for an Access-Request: one decision, two identical answers.
    let request = access_request("omar", "0mar-secret", true);
    let first = ask(&lab, &socket, lab.auth, &request).await;
    let second = ask(&lab, &socket, lab.auth, &request).await;
    assert_eq!(first, second);
    let stats = lab.stats_after(4).await;
    assert_eq!((stats.accepts, stats.retransmissions), (1, 2), "{stats:?}");

    // From another source port it is another request.
    let other = client("127.0.0.1").await;
    ask(&lab, &other, lab.auth, &request).await;
    assert_eq!(lab.stats_after(5).await.accepts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_signed_with_message_authenticator_first() {
    let lab = Lab::start(site(NasKind::Mikrotik, false)).await;
    let socket = client("127.0.0.1").await;
    for (password, code) in [
        ("0mar-secret", Code::AccessAccept),
        ("nope", Code::AccessReject),
    ] {
        let request = access_request("omar", password, false);
        let reply = ask(&lab, &socket, lab.auth, &request).await;
        assert_eq!(reply[0], code as u8);
        assert_eq!(
            reply[20..22],
            [80, 18],
            "Message-Authenticator is the first attribute"
        );
        // Check both signatures from scratch, with the hash crates, not our helpers.
        use hmac::Mac;
        use md5::Digest;
        let mut zeroed = reply.clone();
        zeroed[4..20].copy_from_slice(&request[4..20]);
        zeroed[22..38].fill(0);
        let mut mac = hmac::Hmac::<md5::Md5>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(&zeroed);
        assert_eq!(mac.finalize().into_bytes()[..], reply[22..38]);
        let mut signed = reply.clone();
        signed[4..20].copy_from_slice(&request[4..20]);
        let digest = md5::Md5::new()
            .chain_update(&signed)
            .chain_update(SECRET)
            .finalize();
        assert_eq!(digest[..], reply[4..20]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_message_authenticator_is_dropped_and_counted() {
    let lab = Lab::start(site(NasKind::Mikrotik, false)).await;
    let socket = client("127.0.0.1").await;
    let mut request = access_request("amina", "pa55word", true);
    request[22] ^= 0x01; // the Message-Authenticator's first octet
    let stats = ask_unanswered(&lab, &socket, lab.auth, &request).await;
    assert_eq!(
        (stats.bad_authenticator, stats.accepts, stats.rejects),
        (1, 0, 0),
        "{stats:?}"
    );

    // A forged accounting record (wrong Request Authenticator) is not recorded.
    let mut start = Packet::new(Code::AccountingRequest, b"not-the-secret");
    rfc2866::add_acct_status_type(&mut start, rfc2866::ACCT_STATUS_TYPE_START);
    rfc2866::add_acct_session_id(&mut start, "forged");
    let start = start.encode().unwrap();
    let stats = ask_unanswered(&lab, &socket, lab.acct, &start).await;
    assert_eq!(stats.bad_authenticator, 2, "{stats:?}");
    assert!(lab.journal().is_empty());
    assert!(lab.sessions().is_empty());

    // The untouched request still gets in, so it was the tampering that mattered.
    let request = access_request("amina", "pa55word", true);
    let reply = ask(&lab, &socket, lab.auth, &request).await;
    assert_eq!(reply[0], Code::AccessAccept as u8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_message_authenticator_from_a_strict_nas_is_dropped() {
    let lab = Lab::start(site(NasKind::Mikrotik, true)).await;
    let socket = client("127.0.0.1").await;
    let request = access_request("amina", "pa55word", false);
    let stats = ask_unanswered(&lab, &socket, lab.auth, &request).await;
    assert_eq!(stats.missing_message_authenticator, 1, "{stats:?}");
    let request = access_request("amina", "pa55word", true);
    let reply = ask(&lab, &socket, lab.auth, &request).await;
    assert_eq!(reply[0], Code::AccessAccept as u8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_nas_gets_no_answer_and_is_counted() {
    let lab = Lab::start(site(NasKind::Mikrotik, false)).await;
    // Linux routes all of 127/8 to loopback: 127.0.0.2 is a source that is not a NAS.
    let stranger = client("127.0.0.2").await;
    let request = access_request("amina", "pa55word", true);
    let stats = ask_unanswered(&lab, &stranger, lab.auth, &request).await;
    assert_eq!(
        (stats.unknown_nas, stats.accepts, stats.rejects),
        (1, 0, 0),
        "{stats:?}"
    );
    assert!(lab.journal().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mschapv2_built_here_gets_ms_chap2_success() {
    use outpost_agent::radius::attrs::{self, VENDOR_MICROSOFT};
    use outpost_agent::radius::mschapv2;
    let lab = Lab::start(site(NasKind::Mikrotik, false)).await;
    let socket = client("127.0.0.1").await;
    let authenticator_challenge = [0x5A; 16];
    let peer_challenge = [0xC3; 16];
    let response = mschapv2::Response {
        ident: 9,
        flags: 0,
        peer_challenge,
        nt_response: mschapv2::generate_nt_response(
            &authenticator_challenge,
            &peer_challenge,
            "omar",
            "0mar-secret",
        ),
    };
    let mut packet = Packet::new(Code::AccessRequest, SECRET.as_bytes());
    rfc2869::add_message_authenticator(&mut packet, &[0; 16]);
    rfc2865::add_user_name(&mut packet, "omar");
    packet.add(attrs::vendor_specific(
        VENDOR_MICROSOFT,
        attrs::MS_CHAP_CHALLENGE,
        &authenticator_challenge,
    ));
    packet.add(attrs::vendor_specific(
        VENDOR_MICROSOFT,
        attrs::MS_CHAP2_RESPONSE,
        &response.to_bytes(),
    ));
    let mut request = packet.encode().unwrap();
    authenticator::sign_request(&mut request, SECRET.as_bytes());

    let reply = ask(&lab, &socket, lab.auth, &request).await;
    assert!(authenticator::verify_response(
        &reply,
        &request_authenticator(&request),
        SECRET.as_bytes()
    ));
    let reply = Packet::decode(&reply, SECRET.as_bytes()).unwrap();
    assert_eq!(reply.get_code(), Code::AccessAccept);
    let success =
        attrs::vendor_attribute(&reply, VENDOR_MICROSOFT, attrs::MS_CHAP2_SUCCESS).unwrap();
    let expected = mschapv2::authenticator_response(
        "0mar-secret",
        &response.nt_response,
        &peer_challenge,
        &authenticator_challenge,
        "omar",
    );
    assert_eq!(success[0], 9);
    assert_eq!(&success[1..], expected.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_dropped_and_counted() {
    let lab = Lab::start(site(NasKind::Mikrotik, false)).await;
    let socket = client("127.0.0.1").await;
    for datagram in [
        &b""[..],
        b"\x01",
        &[1, 2, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ] {
        ask_unanswered(&lab, &socket, lab.auth, datagram).await;
    }
    // A well-formed Access-Request sent to the accounting socket is not served there.
    let request = access_request("amina", "pa55word", true);
    let stats = ask_unanswered(&lab, &socket, lab.acct, &request).await;
    assert_eq!(stats.malformed, 4, "{stats:?}");
}

/// RFC 5997: radclient's `status` sends a Status-Server with a Message-Authenticator;
/// the authentication port answers Access-Accept, the accounting port
/// Accounting-Response, and neither journals or moves anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radclient_status_server_on_both_ports_touches_nothing() {
    let lab = Lab::start(site(NasKind::Mikrotik, true)).await;
    // radclient needs one attribute to send anything; it computes this one itself.
    const PROBE: &str = "Message-Authenticator = 0x00\n";
    let on_auth = radclient(lab.auth, "status", PROBE, true).await.unwrap();
    assert_eq!(on_auth.code, "Access-Accept", "{on_auth:?}");
    let on_acct = radclient(lab.acct, "status", PROBE, true).await.unwrap();
    assert_eq!(on_acct.code, "Accounting-Response", "{on_acct:?}");
    let s = lab.stats_after(2).await;
    assert_eq!(
        (s.status_server, s.accepts, s.acct_records),
        (2, 0, 0),
        "{s:?}"
    );
    assert!(lab.journal().is_empty(), "{:?}", lab.journal());
    assert!(lab.online().is_empty());

    // The same secret is what makes it an answer: with another, silence.
    let wrong = Radclient::new(lab.auth, "not-the-secret")
        .tries(1, 1)
        .send_async("status", PROBE)
        .await;
    assert!(wrong.reply.is_none(), "{}", wrong.stdout);
    let s = lab.stats_after(3).await;
    assert_eq!((s.status_server, s.bad_authenticator), (2, 1), "{s:?}");
}

// ---------------------------------------------------------------------------------
// kill -9 under accounting load
// ---------------------------------------------------------------------------------

/// Accounting-Request `i` of the kill test: record `i % 3` (Start, Interim-Update,
/// Stop) of session `i / 3`, for amina or omar.
fn acct_record(i: u64) -> (String, AcctStatus) {
    let status = [
        AcctStatus::Start,
        AcctStatus::InterimUpdate,
        AcctStatus::Stop,
    ][(i % 3) as usize];
    (format!("kill-{:06}", i / 3), status)
}

fn acct_request(id: u8, i: u64) -> Vec<u8> {
    let (session, status) = acct_record(i);
    let mut p = Packet::new_with_identifier(Code::AccountingRequest, SECRET.as_bytes(), id);
    rfc2866::add_acct_status_type(
        &mut p,
        match status {
            AcctStatus::Start => rfc2866::ACCT_STATUS_TYPE_START,
            AcctStatus::InterimUpdate => rfc2866::ACCT_STATUS_TYPE_INTERIM_UPDATE,
            AcctStatus::Stop => rfc2866::ACCT_STATUS_TYPE_STOP,
        },
    );
    rfc2865::add_user_name(&mut p, ["amina", "omar"][(i / 3 % 2) as usize]);
    rfc2866::add_acct_session_id(&mut p, &session);
    rfc2866::add_acct_input_octets(&mut p, (i % 3) as u32 * 1000);
    p.encode().unwrap()
}

/// The real `outpost-agent` binary (controller unreachable) is killed with SIGKILL
/// while Accounting-Requests stream in over four sockets, 32 outstanding on each. Every
/// record it acknowledged, including replies still on their way when it died, is in its
/// store when the store is opened again (as the agent's next start does): no
/// Accounting-Response leaves before the group commit holding its record is durable.
/// Which records were in flight at the kill is up to the scheduler; the assertion holds
/// for any of them.
#[test]
fn every_acknowledged_accounting_record_survives_kill_9_mid_load() {
    use outpost_agent::config::{Config as AgentConfig, Identity, RadiusConfig, SyncConfig};
    use std::collections::HashSet;
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    use std::time::Instant;

    let Site { store, dir } = site(NasKind::Mikrotik, false);
    drop(store);
    let state_dir = dir.path().to_path_buf();
    Identity {
        agent_id: 1,
        site_id: 1,
        credential: "offline".into(),
        wireguard_private_key: String::new(),
        tunnel: None,
        tunnel_interface: None,
        rotation: None,
        former_tunnel_addresses: vec![],
    }
    .save(&state_dir)
    .unwrap();
    // Bound and released: nothing listens there, the controller is away.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.path().join("agent.toml");
    AgentConfig {
        state_dir: state_dir.clone(),
        controller_url: format!("http://{closed}"),
        radius: RadiusConfig {
            auth_listen: "127.0.0.1:0".parse().unwrap(),
            acct_listen: "127.0.0.1:0".parse().unwrap(),
            ..RadiusConfig::default()
        },
        sync: SyncConfig::default(),
        enforce: None,
        edge: Default::default(),
        shaping: None,
        wan: None,
        metrics: None,
        tunnel: None,
    }
    .save(&config)
    .unwrap();

    /// Kills and reaps the agent however the test ends.
    struct Agent(std::process::Child);
    impl Drop for Agent {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_outpost-agent"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = agent.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(acct) = line
                .split_once(", accounting on ")
                .map(|(_, a)| a.to_string())
            {
                let _ = tx.send(acct);
            }
        }
    });
    let acct: SocketAddr = rx.recv_timeout(HANG_GUARD).unwrap().parse().unwrap();

    const SOCKETS: usize = 4;
    const WINDOW: usize = 32;
    const KILL_AFTER: usize = 1_500;
    let sockets: Vec<std::net::UdpSocket> = (0..SOCKETS)
        .map(|_| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(acct).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    // Per socket, by Identifier: the request's index and Request Authenticator.
    let mut outstanding: Vec<std::collections::HashMap<u8, (u64, [u8; 16])>> =
        vec![Default::default(); SOCKETS];
    let mut next_id = [0u8; SOCKETS];
    let mut next = 0u64;
    let mut acked: Vec<u64> = Vec::new();
    let mut killed_at: Option<Instant> = None;
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        if killed_at.is_none() {
            for (k, socket) in sockets.iter().enumerate() {
                while outstanding[k].len() < WINDOW {
                    let id = next_id[k];
                    next_id[k] = next_id[k].wrapping_add(1);
                    let packet = acct_request(id, next);
                    socket.send(&packet).unwrap();
                    outstanding[k].insert(id, (next, request_authenticator(&packet)));
                    next += 1;
                }
            }
        }
        let mut got = false;
        for (k, socket) in sockets.iter().enumerate() {
            while let Ok(len) = socket.recv(&mut buf) {
                got = true;
                let reply = &buf[..len];
                if let Some(&(i, ra)) = outstanding[k].get(&reply[1])
                    && reply[0] == Code::AccountingResponse as u8
                    && authenticator::verify_response(reply, &ra, SECRET.as_bytes())
                {
                    outstanding[k].remove(&reply[1]);
                    acked.push(i);
                }
            }
        }
        if killed_at.is_none() && acked.len() >= KILL_AFTER {
            // SIGKILL, mid-load: requests are outstanding on every socket.
            agent.0.kill().unwrap();
            killed_at = Some(Instant::now());
        }
        match killed_at {
            // Replies sent before the death may still be in our sockets' buffers.
            Some(at) if at.elapsed() > Duration::from_millis(500) => break,
            _ => {}
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "{} acknowledged in {HANG_GUARD:?}",
            acked.len()
        );
        if !got {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    agent.0.wait().unwrap();
    let in_flight: usize = outstanding.iter().map(|o| o.len()).sum();
    eprintln!(
        "sent {next}, acknowledged {}, unanswered at the kill {in_flight}",
        acked.len()
    );
    assert!(acked.len() >= KILL_AFTER);
    assert!(in_flight > 0, "the kill came mid-load");

    // The next start opens the store like this.
    let store = Store::open(&state_dir.join("agent.db"), 100_000).unwrap();
    let journaled: HashSet<(String, String)> = store
        .outbox_batch(1_000_000)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::Accounting(a) => Some((a.session_id, format!("{:?}", a.status))),
            _ => None,
        })
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .map(|&i| {
            let (session, status) = acct_record(i);
            (session, format!("{status:?}"))
        })
        .filter(|r| !journaled.contains(r))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records are not in the store, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}
