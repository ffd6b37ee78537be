//! The agent's `/healthz`, `/readyz` and `/metrics` on a real listener (plain tier, no
//! root): readiness waits for the first enforcement reconcile; the metrics move after
//! real `radclient` requests (Debian `freeradius-utils`) to a site started in-process,
//! parse as Prometheus text and name no subscriber; a listener others could reach is
//! refused before anything starts.
//!
//! No Prometheus server is reachable from the tests, so the exposition is checked by
//! `outpost_testkit::prom`, a strict reader of the text format. No assertion depends on
//! timing.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::identity;
use outpost_agent::config::{Config, MetricsConfig};
use outpost_agent::edge::{Edge, EdgeOptions};
use outpost_agent::health::Health;
use outpost_agent::site::{Site, SiteError};
use outpost_agent::store::Store;
use outpost_agent::sync::Link;
use outpost_protocol::{NasKind, StateResponse, SubscriberState, SubscriberStatus};
use outpost_testkit::fixtures::{self, subscriber};
use outpost_testkit::prom;
use outpost_testkit::radclient::Radclient;

const SECRET: &str = "metrics-secret";
/// Guards against a hang turning into a stuck CI job; never an assertion about speed.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn snapshot() -> StateResponse {
    fixtures::snapshot(
        4,
        vec![
            subscriber(1, "amina-metrics", "pa55word"),
            SubscriberState {
                status: SubscriberStatus::Suspended,
                ..subscriber(2, "omar-metrics", "pw")
            },
        ],
        vec![fixtures::nas(1, "127.0.0.1", SECRET, NasKind::Generic)],
    )
}

fn config(dir: &std::path::Path, metrics: Option<&str>) -> Config {
    common::loopback_config(
        dir,
        metrics.map(|l| MetricsConfig {
            listen: l.parse().unwrap(),
        }),
    )
}

async fn get(url: String) -> (u16, String, String) {
    let resp = tokio::time::timeout(HANG_GUARD, reqwest::get(&url))
        .await
        .expect("the listener answers")
        .unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_enforcement_has_reconciled_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("agent.db"), 1000).unwrap());
    store.apply(&snapshot()).unwrap();
    // The enforcement loop is built but not run: nothing has reconciled yet.
    let (mut edge, handle) = Edge::new(store.clone(), None, None, EdgeOptions::default());
    let radius = outpost_agent::radius::Server::new(store.clone(), Default::default());
    let auth = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let acct = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let serving = {
        let radius = radius.clone();
        tokio::spawn(async move { radius.run(auth, acct).await })
    };
    let health = Health {
        store,
        radius: radius.clone(),
        edge: handle,
        link: Arc::new(Link::default()),
        wan: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(outpost_agent::health::serve(listener, health));
    let until_threads = tokio::time::Instant::now() + HANG_GUARD;
    while radius.threads_running() == 0 {
        assert!(
            tokio::time::Instant::now() < until_threads,
            "RADIUS threads start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (status, _, body) = get(format!("{base}/healthz")).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"alive"}"#));
    let (status, _, body) = get(format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    let b: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(b["status"], "not_ready");
    assert_eq!(b["checks"]["store"], "ok");
    assert_eq!(b["checks"]["radius"], "ok");
    assert_eq!(
        b["checks"]["enforcement"],
        "enforcement has not reconciled yet"
    );

    assert!(edge.step().await, "a reconcile without a firewall succeeds");
    let (status, _, body) = get(format!("{base}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({
            "status": "ready",
            "checks": { "store": "ok", "enforcement": "ok", "radius": "ok" }
        })
    );

    // RADIUS no longer served: not ready, whatever else holds.
    serving.abort();
    let _ = serving.await;
    let until_stopped = tokio::time::Instant::now() + HANG_GUARD;
    while radius.threads_running() > 0 {
        assert!(
            tokio::time::Instant::now() < until_stopped,
            "RADIUS threads stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, body) = get(format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("no thread is serving the RADIUS sockets"),
        "{body}"
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_real_radclient_requests_by_code_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(&dir.path().join("agent.db"), 1000)
        .unwrap()
        .apply(&snapshot())
        .unwrap();
    let site = Site::start(&config(dir.path(), Some("127.0.0.1:0")), &identity())
        .await
        .unwrap();
    tokio::time::timeout(HANG_GUARD, site.ready())
        .await
        .expect("the site becomes ready");
    let base = format!("http://{}", site.metrics_addr.expect("metrics configured"));
    let (status, _, body) = get(format!("{base}/readyz")).await;
    assert_eq!(status, 200, "{body}");

    let scrape = || async {
        let (status, ctype, text) = get(format!("{base}/metrics")).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
        let parsed = prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        (parsed, text)
    };
    let (before, _) = scrape().await;
    let requests = |e: &prom::Exposition, code: &str, reason: &str| {
        e.value(
            "outpost_agent_radius_requests_total",
            &[("code", code), ("reason", reason)],
        )
        .unwrap_or_else(|| panic!("{code}/{reason} is always exported"))
    };
    assert_eq!(requests(&before, "access_accept", "accepted"), 0.0);
    assert_eq!(requests(&before, "access_reject", "wrong_password"), 0.0);

    let nas = Radclient::new(site.auth_addr, SECRET);
    let accept = nas
        .send_async(
            "auth",
            "User-Name = amina-metrics\nUser-Password = pa55word\n",
        )
        .await;
    assert_eq!(
        accept.reply.as_ref().map(|r| r.code.as_str()),
        Some("Access-Accept"),
        "{}",
        accept.text()
    );
    for (user, password) in [("amina-metrics", "wrong"), ("omar-metrics", "pw")] {
        let sent = nas
            .send_async(
                "auth",
                &format!("User-Name = {user}\nUser-Password = {password}\n"),
            )
            .await;
        assert_eq!(
            sent.reply.as_ref().map(|r| r.code.as_str()),
            Some("Access-Reject"),
            "{}",
            sent.text()
        );
    }
    let acct = Radclient::new(site.acct_addr, SECRET)
        .send_async(
            "acct",
            "User-Name = amina-metrics\nAcct-Status-Type = Start\nAcct-Session-Id = m-1\nFramed-IP-Address = 100.64.9.1\n",
        )
        .await;
    assert_eq!(
        acct.reply.as_ref().map(|r| r.code.as_str()),
        Some("Accounting-Response"),
        "{}",
        acct.text()
    );

    let (after, text) = scrape().await;
    assert_eq!(requests(&after, "access_accept", "accepted"), 1.0, "{text}");
    assert_eq!(
        requests(&after, "access_reject", "wrong_password"),
        1.0,
        "{text}"
    );
    assert_eq!(
        requests(&after, "access_reject", "suspended"),
        1.0,
        "{text}"
    );
    assert_eq!(
        requests(&after, "accounting_response", "recorded"),
        1.0,
        "{text}"
    );
    assert_eq!(
        after.sum("outpost_agent_radius_requests_total"),
        4.0,
        "{text}"
    );
    for (code, n) in [
        ("access_accept", 1.0),
        ("access_reject", 2.0),
        ("accounting_response", 1.0),
    ] {
        assert_eq!(
            after.value(
                "outpost_agent_radius_request_duration_seconds_count",
                &[("code", code)]
            ),
            Some(n),
            "{text}"
        );
    }
    // The two rejects and the accounting record wait in the outbox: the controller is away.
    assert_eq!(
        after.value("outpost_agent_outbox_backlog_events", &[]),
        Some(site.status().backlog as f64)
    );
    assert!(site.status().backlog >= 3, "{text}");
    assert_eq!(
        after.value("outpost_agent_online_sessions", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        after.value("outpost_agent_sync_revision", &[]),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        after.value("outpost_agent_controller_reachable", &[]),
        Some(0.0),
        "{text}"
    );
    assert!(
        after
            .value("outpost_agent_enforcement_reconciles_total", &[])
            .unwrap()
            >= 1.0,
        "{text}"
    );
    assert_eq!(
        after.value("outpost_agent_enforcement_drift_subscribers", &[]),
        Some(0.0)
    );
    // Site-wide counts only: no subscriber, address or NAS is named.
    for private in ["amina", "omar", "100.64.9.1", "127.0.0.1", "m-1"] {
        assert!(!text.contains(private), "{private} in the metrics:\n{text}");
    }
    site.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_metrics_listener_others_could_reach_is_refused_before_anything_starts() {
    for listen in ["0.0.0.0:0", "[::]:0", "192.0.2.10:9108"] {
        let dir = tempfile::tempdir().unwrap();
        let err = match Site::start(&config(dir.path(), Some(listen)), &identity()).await {
            Ok(_) => panic!("{listen} was accepted"),
            Err(e) => e,
        };
        assert!(matches!(err, SiteError::MetricsListen(_)), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "metrics.listen {} is not a loopback address",
                listen.parse::<SocketAddr>().unwrap()
            )),
            "{msg}"
        );
        assert!(
            !dir.path().join("agent.db").exists(),
            "the store was opened before the refusal"
        );
    }
}
