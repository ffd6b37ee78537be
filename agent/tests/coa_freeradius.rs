//! The agent's RFC 5176 client ([`outpost_agent::coa`]) against a real NAS-side peer:
//! FreeRADIUS 3 (Debian `freeradius`) with a `coa` virtual server, as MikroTik and
//! accel-ppp stand-ins. What FreeRADIUS received is read back from a `linelog` file its
//! policy writes for every request that passes its checks, and why it dropped one from
//! its debug log (`-xx`).
//!
//! The tests that start FreeRADIUS need the Debian package `freeradius` (which `.ci/run`
//! installs) but no root: everything is on 127.0.0.1, on free ports. So they run in the
//! plain tier, and without FreeRADIUS they fail, naming the package.
//!
//! No assertion depends on timing. FreeRADIUS runs single-threaded (`-s`), so it
//! handles datagrams in the order they arrive; a test that must know FreeRADIUS is done
//! with a request it dropped sends a good request after it and waits for that answer
//! before reading the log.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use outpost_agent::coa::{self, Action, CoaClient, CoaConfig};
use outpost_agent::radius::{attrs, authenticator};
use outpost_agent::store::OnlineSession;
use outpost_protocol::{CoaKind, CoaOutcome, NasKind, NasState, Rate};
use outpost_testkit::port::free_udp_port;
use outpost_testkit::{fixtures, peer};
use tokio::net::UdpSocket;

const SECRET: &str = "coa-lab-secret";
/// Guards against a hang turning into a stuck CI job; never an assertion about speed.
const HANG_GUARD: Duration = Duration::from_secs(60);
/// Waits for answers from FreeRADIUS: generous, so a loaded machine does not turn an
/// ACK into a retransmission (which would still pass, but prove less).
const ANSWERED: CoaConfig = CoaConfig {
    attempts: 3,
    first_timeout: Duration::from_secs(2),
};
/// For requests that get no answer: short, to keep the tests quick.
const UNANSWERED: CoaConfig = CoaConfig {
    attempts: 3,
    first_timeout: Duration::from_millis(200),
};

/// The FreeRADIUS executable: `freeradius` on Debian, `radiusd` elsewhere.
fn radiusd_binary() -> PathBuf {
    peer::require_any(&["freeradius", "radiusd"], "freeradius")
}

/// A FreeRADIUS acting as the NAS's CoA server, killed (by PID) and its directory
/// removed when dropped.
struct Radiusd {
    child: Child,
    port: u16,
    debug_log: PathBuf,
    received_log: PathBuf,
    // Last, so it is removed after the process is gone.
    dir: tempfile::TempDir,
}

impl Radiusd {
    /// Starts FreeRADIUS with a `coa` server whose policy:
    /// - logs each request's attributes to `received.log`;
    /// - NAKs User-Name `gone` with Error-Cause Session-Context-Not-Found (503);
    /// - never answers User-Name `silent` (`handled` without a reply);
    /// - ACKs the rest.
    fn start() -> Radiusd {
        let dir = tempfile::Builder::new()
            .prefix(&format!("outpost-coa-{}-", std::process::id()))
            .tempdir()
            .unwrap();
        let d = dir.path();
        let port = free_udp_port();
        let debug_log = d.join("debug.log");
        let received_log = d.join("received.log");
        let conf = format!(
            r#"
prefix = /usr
confdir = {d}
raddbdir = {d}
logdir = {d}
run_dir = {d}
libdir = /usr/lib/freeradius
pidfile = {d}/radiusd.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
security {{
	allow_core_dumps = no
}}
client nas {{
	ipaddr = 127.0.0.1
	secret = {SECRET}
}}
modules {{
	always ok {{
		rcode = ok
	}}
	always handled {{
		rcode = handled
	}}
	always reject {{
		rcode = reject
	}}
	linelog received {{
		filename = {received}
		format = "%{{Packet-Type}}|%{{User-Name}}|%{{Acct-Session-Id}}|%{{Framed-IP-Address}}|%{{Mikrotik-Rate-Limit}}|%{{Filter-Id}}|%{{Message-Authenticator}}"
	}}
}}
listen {{
	type = coa
	ipaddr = 127.0.0.1
	port = {port}
	virtual_server = coa
}}
server coa {{
	recv-coa {{
		received
		if (&User-Name == "gone") {{
			update reply {{
				Error-Cause := Session-Context-Not-Found
			}}
			reject
		}}
		if (&User-Name == "silent") {{
			handled
		}}
		ok
	}}
	send-coa {{
		ok
	}}
}}
"#,
            d = d.display(),
            received = received_log.display(),
        );
        std::fs::write(d.join("radiusd.conf"), conf).unwrap();
        let output = std::fs::File::create(d.join("stdout.log")).unwrap();
        // -f foreground, -s one process handling requests in order, -xx debug detail
        // (why a packet was dropped), -l the log file.
        let child = Command::new(radiusd_binary())
            .args(["-f", "-s", "-xx", "-d"])
            .arg(d)
            .arg("-l")
            .arg(&debug_log)
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .expect("start FreeRADIUS");
        let mut server = Radiusd {
            child,
            port,
            debug_log,
            received_log,
            dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + HANG_GUARD;
        loop {
            if read(&self.debug_log).contains("Ready to process requests") {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "FreeRADIUS exited ({status}) before it was ready:\n{}\n{}",
                    read(&self.dir.path().join("stdout.log")),
                    read(&self.debug_log)
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "FreeRADIUS not ready within the hang guard:\n{}",
                read(&self.debug_log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The NAS this FreeRADIUS plays, in dialect `kind`.
    fn nas(&self, kind: NasKind) -> NasState {
        NasState {
            coa_port: self.port,
            require_message_authenticator: true,
            ..fixtures::nas(1, "127.0.0.1", SECRET, kind)
        }
    }

    /// The `received.log` line of the request for `session_id` (the policy logs every
    /// request that passed FreeRADIUS's checks, once: retransmissions are not rerun).
    fn received(&self, session_id: &str) -> Vec<String> {
        let lines: Vec<Vec<String>> = read(&self.received_log)
            .lines()
            .map(|l| l.split('|').map(str::to_owned).collect())
            .filter(|f: &Vec<String>| f.get(2).map(String::as_str) == Some(session_id))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "one request for {session_id} in received.log:\n{}",
            read(&self.received_log)
        );
        lines.into_iter().next().unwrap()
    }

    fn debug_log(&self) -> String {
        read(&self.debug_log)
    }
}

impl Drop for Radiusd {
    fn drop(&mut self) {
        // Child::kill signals this child's PID, nothing else.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- FreeRADIUS debug log ({}) ---\n{}",
                self.dir.path().display(),
                read(&self.debug_log)
            );
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn session(username: &str, session_id: &str) -> OnlineSession {
    OnlineSession {
        nas_ip: "127.0.0.1".into(),
        session_id: session_id.into(),
        username: username.into(),
        framed_ip: Some(Ipv4Addr::new(100, 64, 0, 7).into()),
        framed_ipv6: None,
    }
}

fn rate() -> Rate {
    fixtures::rate(20_000, 5_000)
}

/// A Disconnect-Request for `username`'s session `session_id` to `nas`; the answer.
async fn disconnect(
    client: &CoaClient,
    nas: &NasState,
    username: &str,
    session_id: &str,
    reason: &str,
) -> outpost_protocol::CoaEvent {
    client
        .send(
            nas,
            &session(username, session_id),
            &Action::Disconnect,
            reason,
        )
        .await
        .unwrap()
}

async fn client(config: CoaConfig) -> CoaClient {
    CoaClient::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

fn is_message_authenticator(field: &str) -> bool {
    field.len() == 34
        && field.starts_with("0x")
        && field[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn freeradius_acks_a_disconnect_request_naming_the_session() {
    let radiusd = Radiusd::start();
    let client = client(ANSWERED).await;
    let event = disconnect(
        &client,
        &radiusd.nas(NasKind::Mikrotik),
        "amina",
        "sess-disc",
        "suspended",
    )
    .await;
    assert_eq!(event.kind, CoaKind::Disconnect);
    assert_eq!(event.outcome, CoaOutcome::Ack, "{event:?}");
    assert_eq!(event.error_cause, None);
    assert_eq!(
        (
            event.username.as_str(),
            event.session_id.as_str(),
            event.nas_ip.as_str(),
            event.reason.as_str()
        ),
        ("amina", "sess-disc", "127.0.0.1", "suspended")
    );

    let got = radiusd.received("sess-disc");
    assert_eq!(
        got[..6],
        [
            "Disconnect-Request",
            "amina",
            "sess-disc",
            "100.64.0.7",
            "",
            ""
        ]
    );
    // FreeRADIUS checks a Message-Authenticator before it runs any policy and drops
    // the packet if it is wrong (see the next test), so one logged here was valid.
    assert!(is_message_authenticator(&got[6]), "{got:?}");
    assert!(
        !radiusd
            .debug_log()
            .contains("invalid Message-Authenticator")
    );
    assert_eq!(client.stats().acks, 1);
}

/// Proves FreeRADIUS verifies our Message-Authenticator: a request whose
/// Message-Authenticator alone is wrong (its Request Authenticator recomputed to match)
/// is dropped, while the same request built by `build_request` is answered.
#[tokio::test]
async fn freeradius_drops_a_request_whose_message_authenticator_is_wrong() {
    let radiusd = Radiusd::start();
    let nas = radiusd.nas(NasKind::Mikrotik);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = SocketAddr::from(([127, 0, 0, 1], radiusd.port));

    let mut bad =
        coa::build_request(1, &nas, &session("amina", "bad-ma"), &Action::Disconnect).unwrap();
    let offset = attrs::message_authenticator_offset(&bad).unwrap().unwrap();
    bad[offset] ^= 0x01;
    let request_authenticator =
        authenticator::accounting_request_authenticator(&bad, SECRET.as_bytes());
    bad[4..20].copy_from_slice(&request_authenticator);
    assert!(authenticator::verify_accounting_request(
        &bad,
        SECRET.as_bytes()
    ));
    socket.send_to(&bad, to).await.unwrap();

    let good =
        coa::build_request(2, &nas, &session("amina", "good-ma"), &Action::Disconnect).unwrap();
    socket.send_to(&good, to).await.unwrap();
    let mut buf = vec![0; 4096];
    let (len, from) = tokio::time::timeout(HANG_GUARD, socket.recv_from(&mut buf))
        .await
        .expect("an answer within the hang guard")
        .unwrap();
    assert_eq!(from, to);
    let answer = coa::parse_response(&buf[..len], &good, SECRET.as_bytes()).unwrap();
    assert_eq!(answer.outcome, CoaOutcome::Ack);
    // FreeRADIUS handles packets in order, so the bad one was dealt with before this
    // answer was sent: had it been answered, that answer would be waiting here.
    assert_eq!(
        socket.try_recv_from(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the request with a wrong Message-Authenticator was answered"
    );
    let log = radiusd.debug_log();
    assert_eq!(
        log.matches("invalid Message-Authenticator").count(),
        1,
        "{log}"
    );
    assert!(!read(&radiusd.received_log).contains("bad-ma"));
    radiusd.received("good-ma");
}

#[tokio::test]
async fn freeradius_acks_coa_requests_with_the_rate_in_each_dialect() {
    let radiusd = Radiusd::start();
    let client = client(ANSWERED).await;
    let change = Action::ChangeRate(rate());
    for (kind, session_id) in [
        (NasKind::Mikrotik, "sess-mt"),
        (NasKind::AccelPpp, "sess-accel"),
    ] {
        let event = client
            .send(
                &radiusd.nas(kind),
                &session("amina", session_id),
                &change,
                "plan_change",
            )
            .await
            .unwrap();
        assert_eq!(event.kind, CoaKind::Coa);
        assert_eq!(event.outcome, CoaOutcome::Ack, "{kind:?}: {event:?}");
    }
    let mikrotik = radiusd.received("sess-mt");
    assert_eq!(
        mikrotik[..6],
        [
            "CoA-Request",
            "amina",
            "sess-mt",
            "100.64.0.7",
            "5000k/20000k",
            ""
        ]
    );
    assert!(is_message_authenticator(&mikrotik[6]), "{mikrotik:?}");
    let accel = radiusd.received("sess-accel");
    assert_eq!(
        accel[..6],
        [
            "CoA-Request",
            "amina",
            "sess-accel",
            "100.64.0.7",
            "",
            "20000/5000"
        ]
    );
    assert!(is_message_authenticator(&accel[6]), "{accel:?}");
}

#[tokio::test]
async fn freeradius_nak_carries_error_cause_503() {
    let radiusd = Radiusd::start();
    let client = client(ANSWERED).await;
    let nas = radiusd.nas(NasKind::AccelPpp);
    for (action, kind, session_id) in [
        (Action::Disconnect, CoaKind::Disconnect, "gone-disc"),
        (Action::ChangeRate(rate()), CoaKind::Coa, "gone-coa"),
    ] {
        let event = client
            .send(&nas, &session("gone", session_id), &action, "expired")
            .await
            .unwrap();
        assert_eq!(event.kind, kind);
        assert_eq!(
            (event.outcome, event.error_cause),
            (CoaOutcome::Nak, Some(503)),
            "{event:?}"
        );
        radiusd.received(session_id);
    }
    assert_eq!(client.stats().naks, 2);
}

/// A NAS that receives the request and never answers: every retransmission reaches
/// FreeRADIUS, which recognises each as a copy of the first (same Identifier and
/// authenticator) rather than a new request, and the outcome is Timeout.
#[tokio::test]
async fn freeradius_that_never_answers_ends_in_timeout_after_every_attempt() {
    let radiusd = Radiusd::start();
    let client = client(UNANSWERED).await;
    let nas = radiusd.nas(NasKind::Mikrotik);
    let event = disconnect(&client, &nas, "silent", "sess-silent", "disabled").await;
    assert_eq!(event.outcome, CoaOutcome::Timeout, "{event:?}");
    assert_eq!(event.attempts, UNANSWERED.attempts);
    assert_eq!(event.error_cause, None);
    let s = client.stats();
    assert_eq!((s.requests, s.retransmissions, s.timeouts), (1, 2, 1));

    // Barrier: once this is answered, FreeRADIUS has handled everything sent before.
    let after = disconnect(&client, &nas, "amina", "sess-after", "disabled").await;
    assert_eq!(after.outcome, CoaOutcome::Ack);
    // The policy ran once; the two retransmissions were seen as duplicates.
    radiusd.received("sess-silent");
    let log = radiusd.debug_log();
    assert_eq!(log.matches("Ignoring retransmit").count(), 2, "{log}");
}

/// A wrong secret: FreeRADIUS drops every copy without answering (it checks the
/// Message-Authenticator before the Request Authenticator and logs "invalid
/// Message-Authenticator! (Shared secret is incorrect.)"), so the client sees silence
/// and reports Timeout, not a NAK: a NAS answers only requests it can authenticate
/// and silently discards the others.
#[tokio::test]
async fn freeradius_drops_requests_signed_with_a_wrong_secret() {
    let radiusd = Radiusd::start();
    let client = client(UNANSWERED).await;
    let wrong = NasState {
        secret: "not-the-secret".into(),
        ..radiusd.nas(NasKind::Mikrotik)
    };
    let event = disconnect(&client, &wrong, "amina", "sess-wrong", "suspended").await;
    assert_eq!(event.outcome, CoaOutcome::Timeout, "{event:?}");
    assert_eq!(event.attempts, UNANSWERED.attempts);
    assert_eq!(client.stats().forged, 0, "FreeRADIUS sent nothing at all");

    let after = disconnect(
        &client,
        &radiusd.nas(NasKind::Mikrotik),
        "amina",
        "sess-right",
        "suspended",
    )
    .await;
    assert_eq!(after.outcome, CoaOutcome::Ack);
    // Every copy reached FreeRADIUS and was dropped: checked and refused, or, if it
    // came while FreeRADIUS still held the refused first copy (about 0.3 s), ignored
    // as its duplicate. Which of the two depends on timing; the sum does not.
    let log = radiusd.debug_log();
    let refused = log
        .matches("invalid Message-Authenticator!  (Shared secret is incorrect.)")
        .count();
    let duplicates = log.matches("Ignoring duplicate packet").count();
    assert!(refused >= 1, "{log}");
    assert_eq!(
        refused + duplicates,
        UNANSWERED.attempts as usize,
        "each copy dropped:\n{log}"
    );
    assert!(!read(&radiusd.received_log).contains("sess-wrong"));
}

/// Nothing listening on the CoA port: the kernel answers with ICMP port unreachable,
/// which an unconnected UDP socket does not report, so the client retransmits as for
/// any silence and ends in Timeout. Needs no FreeRADIUS.
#[tokio::test]
async fn closed_coa_port_ends_in_timeout_after_every_attempt() {
    let client = client(UNANSWERED).await;
    let nas = NasState {
        coa_port: free_udp_port(),
        require_message_authenticator: true,
        ..fixtures::nas(1, "127.0.0.1", SECRET, NasKind::Mikrotik)
    };
    let event = disconnect(&client, &nas, "amina", "sess-closed", "expired").await;
    assert_eq!(event.outcome, CoaOutcome::Timeout, "{event:?}");
    assert_eq!(event.attempts, UNANSWERED.attempts);
    let s = client.stats();
    assert_eq!((s.requests, s.retransmissions, s.timeouts), (1, 2, 1));
}

/// The edge loop end to end against the FreeRADIUS peer: subscribers with sessions
/// learnt from accounting are suspended (and one changes plan) in the local store; the
/// policy loop asks the NAS, and every answer ends up journaled for the controller.
#[tokio::test]
async fn the_edge_disconnects_suspended_sessions_re_rates_plan_changes_and_journals_each_answer() {
    use outpost_agent::edge::{Edge, EdgeOptions, dispatch_coa};
    use outpost_agent::radius::Backend;
    use outpost_agent::store::Store;
    use outpost_protocol::{
        Accounting, AcctStatus, EventBody, SiteSettings, StateKind, StateResponse, SubscriberState,
        SubscriberStatus,
    };
    use std::sync::Arc;

    let radiusd = Radiusd::start();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("agent.db"), 1000).unwrap());
    let sub = |id: i64, name: &str, status: SubscriberStatus, down: u64| SubscriberState {
        id,
        username: name.into(),
        password: "pw".into(),
        status,
        expires_at: None,
        static_ipv4: None,
        mac: None,
        rate: Some(Rate {
            download_kbps: down,
            upload_kbps: 5_000,
            burst_download_kbps: None,
            burst_upload_kbps: None,
        }),
        max_sessions: 1,
        tenant_id: 2,
        wan_check: false,
        wan_tcp_ports: None,
    };
    let state = |kind, revision, subscribers| StateResponse {
        kind,
        revision,
        subscribers,
        removed_subscribers: vec![],
        nas: vec![radiusd.nas(NasKind::Mikrotik)],
        removed_nas: vec![],
        settings: Some(SiteSettings {
            acct_interim_interval_secs: 300,
            shaping_enabled: false,
        }),
        brands: vec![],
        notices: None,
    };
    store
        .apply(&state(
            StateKind::Snapshot,
            1,
            vec![
                sub(1, "amina", SubscriberStatus::Active, 20_000),
                sub(2, "gone", SubscriberStatus::Active, 20_000),
                sub(3, "chen", SubscriberStatus::Active, 20_000),
            ],
        ))
        .unwrap();
    for (user, session, ip) in [
        ("amina", "edge-amina", "100.64.0.7"),
        ("gone", "edge-gone", "100.64.0.8"),
        ("chen", "edge-chen", "100.64.0.9"),
    ] {
        store
            .record(EventBody::Accounting(Accounting {
                framed_ip: Some(ip.into()),
                ..fixtures::accounting(AcctStatus::Start, user, session, "127.0.0.1")
            }))
            .unwrap();
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(dispatch_coa(
        rx,
        Arc::new(client(ANSWERED).await),
        store.clone(),
    ));
    let (mut edge, _handle) = Edge::new(store.clone(), None, Some(tx), EdgeOptions::default());
    assert!(edge.step().await);
    // Suspend amina and gone (FreeRADIUS NAKs `gone`: no such session), re-rate chen.
    store
        .apply(&state(
            StateKind::Delta,
            2,
            vec![
                sub(1, "amina", SubscriberStatus::Suspended, 20_000),
                sub(2, "gone", SubscriberStatus::Suspended, 20_000),
                sub(3, "chen", SubscriberStatus::Active, 50_000),
            ],
        ))
        .unwrap();
    assert!(edge.step().await);
    let coa_events = || -> Vec<outpost_protocol::CoaEvent> {
        store
            .outbox_batch(100)
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.body {
                EventBody::Coa(c) => Some(c),
                _ => None,
            })
            .collect()
    };
    let mut events = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let got = coa_events();
            if got.len() == 3 {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("three CoA outcomes journaled");
    events.sort_by(|a, b| a.username.cmp(&b.username));
    let summary: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.username.as_str(),
                e.kind,
                e.outcome,
                e.error_cause,
                e.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "amina",
                CoaKind::Disconnect,
                CoaOutcome::Ack,
                None,
                "suspended"
            ),
            ("chen", CoaKind::Coa, CoaOutcome::Ack, None, "plan_change"),
            (
                "gone",
                CoaKind::Disconnect,
                CoaOutcome::Nak,
                Some(503),
                "suspended"
            ),
        ]
    );
    assert_eq!(radiusd.received("edge-amina")[3], "100.64.0.7");
    let chen = radiusd.received("edge-chen").join("|");
    assert!(chen.contains("5000k/50000k"), "{chen}");
    // Nothing changed since: another pass asks the NAS nothing more.
    assert!(edge.step().await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(coa_events().len(), 3);
}
