//! `/healthz`, `/readyz` and `/metrics` through the public router: readiness waits for
//! the listeners and refuses a schema that is not this binary's, metrics are counted by
//! route template (never a path with ids in it), match the database, name no tenant,
//! and answer only the addresses `[http] metrics_allow` names.

mod common;

use std::net::IpAddr;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Fixture, Who, send_via};
use serde_json::{Value, json};

fn get(path: &str) -> Request<Body> {
    Request::builder().uri(path).body(Body::empty()).unwrap()
}

fn loopback() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// The value of the sample `name{labels}` in OpenMetrics text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
}

async fn scrape(fx: &Fixture) -> String {
    let (s, headers, body) = send_via(&fx.app, get("/metrics"), loopback()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        headers["content-type"].to_str().unwrap(),
        "text/plain; version=0.0.4; charset=utf-8",
        "{headers:?}"
    );
    let Value::String(text) = body else {
        panic!("metrics are text: {body}")
    };
    // No Prometheus server is reachable from the tests: a strict reader of the text
    // format stands in for its scraper.
    if let Err(e) = outpost_testkit::prom::parse(&text) {
        panic!("{e}\n{text}");
    }
    text
}

#[tokio::test]
async fn alive_at_once_ready_only_once_listening() {
    let fx = Fixture::new();
    let (s, _, b) = send_via(&fx.app, get("/healthz"), loopback()).await;
    assert_eq!((s, b), (StatusCode::OK, json!({ "status": "alive" })));

    let (s, _, b) = send_via(&fx.app, get("/readyz"), loopback()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(b["status"], "not_ready");
    assert_eq!(b["checks"]["database"], "ok");
    assert_eq!(b["checks"]["listeners"], "not every listener is bound yet");

    fx.state.health.set_listening();
    let (s, _, b) = send_via(&fx.app, get("/readyz"), loopback()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({ "status": "ready", "checks": { "database": "ok", "listeners": "ok" } })
    );
}

#[tokio::test]
async fn a_schema_from_another_version_is_not_ready() {
    let fx = Fixture::new();
    fx.state.health.set_listening();
    fx.state
        .db
        .write_blocking(|tx| Ok(tx.pragma_update(None, "user_version", 999)?))
        .unwrap();
    let (s, _, b) = send_via(&fx.app, get("/readyz"), loopback()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    let why = b["checks"]["database"].as_str().unwrap();
    assert!(
        why.starts_with("schema version 999, this binary's is "),
        "{why}"
    );
}

#[tokio::test]
async fn metrics_match_the_database_and_name_routes_not_paths() {
    let fx = Fixture::new();
    // Two requests with ids in their paths: one answered, one out of scope.
    let own = fx.a.subscriber;
    let foreign = fx.b.subscriber;
    assert_eq!(
        fx.get(Who::A, &format!("/api/v1/subscribers/{own}"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        fx.get(Who::A, &format!("/api/v1/subscribers/{foreign}"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Any token is a method: an invented one is counted as `other`, never by name.
    let brew = Request::builder()
        .method("BREW")
        .uri("/healthz")
        .body(Body::empty())
        .unwrap();
    send_via(&fx.app, brew, loopback()).await;
    let text = scrape(&fx).await;
    assert!(!text.contains("BREW"), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"outpost_controller_http_requests_total{method="other",route="/healthz",status="4xx"}"#
        ),
        Some(1.0),
        "{text}"
    );

    let route = r#"route="/api/v1/subscribers/{id}""#;
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"outpost_controller_http_requests_total{{method="GET",{route},status="2xx"}}"#
            )
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"outpost_controller_http_requests_total{{method="GET",{route},status="4xx"}}"#
            )
        ),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains(r#"outpost_controller_http_request_duration_seconds_count{route="/api/v1/subscribers/{id}"} 2"#), "{text}");
    assert!(
        !text.contains(&format!("/api/v1/subscribers/{own}")),
        "a path with an id is a label: {text}"
    );

    // Subscribers by status, as the database counts them, every status present.
    for status in ["active", "suspended", "disabled", "expired"] {
        let n = fx.query_i64(&format!(
            "SELECT count(*) FROM subscribers WHERE status = '{status}'"
        ));
        assert_eq!(
            sample(
                &text,
                &format!(r#"outpost_controller_subscribers{{status="{status}"}}"#)
            ),
            Some(n as f64),
            "{status}: {text}"
        );
    }
    // Every live agent in exactly one state.
    let live = fx.query_i64("SELECT count(*) FROM agents WHERE revoked_at IS NULL");
    let counted: f64 = ["in_sync", "behind", "digest_mismatch", "silent"]
        .iter()
        .map(|s| {
            sample(
                &text,
                &format!(r#"outpost_controller_agents{{state="{s}"}}"#),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(counted, live as f64, "{text}");
    assert!(live > 0, "the fixture enrols agents");
    assert_eq!(
        sample(&text, r#"outpost_controller_wan_targets{state="down"}"#),
        Some(0.0),
        "{text}"
    );

    // No tenant, user or subscriber is named.
    let names: Vec<String> = fx
        .state
        .db
        .write_blocking(|tx| {
            let mut st =
                tx.prepare("SELECT name FROM tenants UNION SELECT username FROM subscribers")?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .unwrap();
    for n in names.iter().filter(|n| n.len() > 3) {
        assert!(!text.contains(n.as_str()), "{n} named in metrics");
    }
}

#[tokio::test]
async fn metrics_answer_only_allowed_addresses() {
    let outside: IpAddr = "203.0.113.5".parse().unwrap();
    let fx =
        Fixture::with_config(|c| c.http.trusted_proxies = vec!["203.0.113.0/24".parse().unwrap()]);
    let (s, _, b) = send_via(&fx.app, get("/metrics"), outside).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{b}"
    );
    // Not even through a trusted proxy claiming loopback: the socket decides.
    let req = Request::builder()
        .uri("/metrics")
        .header("x-forwarded-for", "127.0.0.1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send_via(&fx.app, req, outside).await.0,
        StatusCode::NOT_FOUND
    );

    let fx =
        Fixture::with_config(|c| c.http.metrics_allow = vec!["203.0.113.0/24".parse().unwrap()]);
    assert_eq!(
        send_via(&fx.app, get("/metrics"), outside).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send_via(&fx.app, get("/metrics"), loopback()).await.0,
        StatusCode::NOT_FOUND
    );
}
