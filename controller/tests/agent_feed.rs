//! The controller side of agents: enrollment, the change feed and its long poll, the
//! acknowledgement digest, idempotent events, sessions and usage, and that an agent's
//! credential reaches only `/agent/v1` and only its own site.

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::{Fixture, Who, assert_error};
use outpost_protocol as proto;
use serde_json::{Value, json};

fn ip() -> IpAddr {
    common::CLIENT_IP.parse().unwrap()
}

/// Calls an agent route with an agent credential.
async fn agent_call(
    fx: &Fixture,
    secret: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let version = proto::PROTOCOL_VERSION.to_string();
    fx.request(
        Some(secret),
        ip(),
        method,
        path,
        body,
        &[(proto::PROTOCOL_HEADER, &version)],
    )
    .await
}

/// Posts a batch of events as the agent with `secret`.
async fn post_events(fx: &Fixture, secret: &str, batch: Value) -> (StatusCode, Value) {
    agent_call(fx, secret, Method::POST, "/agent/v1/events", Some(batch)).await
}

/// A usage or session row's (input, output) octets.
fn octets(row: &Value) -> (Option<i64>, Option<i64>) {
    (row["input_octets"].as_i64(), row["output_octets"].as_i64())
}

async fn state(fx: &Fixture, secret: &str, since: u64, wait: u32) -> proto::StateResponse {
    let (s, v) = agent_call(
        fx,
        secret,
        Method::GET,
        &format!("/agent/v1/state?since={since}&wait={wait}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    serde_json::from_value(v).unwrap()
}

fn secret(fx: &Fixture, site: i64) -> String {
    fx.agents[&site].1.clone()
}

#[tokio::test]
async fn an_agent_sees_only_its_own_site_and_only_agent_routes() {
    let fx = Fixture::new();
    let a = secret(&fx, fx.a.site);
    let snap = state(&fx, &a, 0, 0).await;
    assert_eq!(snap.kind, proto::StateKind::Snapshot);
    assert!(snap.revision > 0);
    let ids: Vec<i64> = snap.subscribers.iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![fx.a.subscriber], "only site A's subscribers");
    assert_eq!(
        snap.nas.iter().map(|n| n.id).collect::<Vec<_>>(),
        vec![fx.a.nas]
    );
    let sub = &snap.subscribers[0];
    assert_eq!(
        (sub.password.as_str(), sub.status),
        ("ppp-a", proto::SubscriberStatus::Active)
    );
    assert_eq!(sub.rate.unwrap().download_kbps, 20_000, "a-home's rate");
    assert_eq!(snap.nas[0].secret, "radius-secret");
    assert!(snap.settings.is_some());
    // The agent credential opens nothing under /api/v1.
    let req = Request::get("/api/v1/subscribers")
        .header(header::AUTHORIZATION, format!("Bearer {a}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(fx.send(req, ip()).await.0, StatusCode::UNAUTHORIZED);
    // A forged or revoked credential opens nothing under /agent/v1.
    let (s, b) = agent_call(
        &fx,
        "opa_forged",
        Method::GET,
        "/agent/v1/state?since=0",
        None,
    )
    .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthenticated");
    // A wrong protocol version is refused clearly.
    let req = Request::get("/agent/v1/state?since=0")
        .header(header::AUTHORIZATION, format!("Bearer {a}"))
        .header(proto::PROTOCOL_HEADER, "99")
        .body(Body::empty())
        .unwrap();
    let (s, _, b) = fx.send(req, ip()).await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "protocol_mismatch");
}

#[tokio::test]
async fn every_change_that_matters_reaches_the_feed() {
    let fx = Fixture::new();
    let a = secret(&fx, fx.a.site);
    let b_site = secret(&fx, fx.b.site);
    let mut rev = state(&fx, &a, 0, 0).await.revision;
    let unchanged = state(&fx, &a, rev, 0).await;
    assert_eq!(
        (unchanged.kind, unchanged.revision),
        (proto::StateKind::Unchanged, rev)
    );
    let sub = format!("/api/v1/subscribers/{}", fx.a.subscriber);

    // Suspension.
    fx.patch_ok(Who::A, &sub, json!({ "status": "suspended" }))
        .await;
    let d = state(&fx, &a, rev, 0).await;
    assert_eq!(d.kind, proto::StateKind::Delta);
    assert_eq!(d.subscribers.len(), 1);
    assert_eq!(d.subscribers[0].status, proto::SubscriberStatus::Suspended);
    rev = d.revision;

    // A reseller disabled above the subscriber disables it at the edge.
    fx.patch_ok(Who::A, &sub, json!({ "status": "active" }))
        .await;
    fx.patch_ok(
        Who::Op,
        "/api/v1/resellers/2",
        json!({ "status": "disabled" }),
    )
    .await;
    let d = state(&fx, &a, rev, 0).await;
    assert_eq!(
        d.subscribers.last().unwrap().status,
        proto::SubscriberStatus::Disabled
    );
    rev = d.revision;
    let (s, _) = fx
        .patch(
            Who::Op,
            "/api/v1/resellers/2",
            json!({ "status": "active" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    rev = state(&fx, &a, rev, 0).await.revision;

    // A plan's rate.
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/plans/{}", fx.a.plan),
        json!({ "download_kbps": 12_000 }),
    )
    .await;
    let d = state(&fx, &a, rev, 0).await;
    assert_eq!(d.subscribers[0].rate.unwrap().download_kbps, 12_000);
    rev = d.revision;

    // The NAS secret, and the site settings.
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/nas/{}", fx.a.nas),
        json!({ "secret": "rotated-secret" }),
    )
    .await;
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/sites/{}", fx.a.site),
        json!({ "acct_interim_interval_secs": 120 }),
    )
    .await;
    let d = state(&fx, &a, rev, 0).await;
    assert_eq!(d.nas[0].secret, "rotated-secret");
    assert_eq!(d.settings.unwrap().acct_interim_interval_secs, 120);
    rev = d.revision;

    // A renewal moves the expiry.
    let (s, _) = fx.money(Who::A, &format!("{sub}/renew"), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let d = state(&fx, &a, rev, 0).await;
    assert!(d.subscribers[0].expires_at.is_some());
    rev = d.revision;

    // Moving the subscriber to the operator's site: removed here, added there.
    let op = secret(&fx, fx.op_tenant.site);
    let op_rev = state(&fx, &op, 0, 0).await.revision;
    let (s, b) = fx
        .patch(Who::Op, &sub, json!({ "site_id": fx.op_tenant.site }))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let d = state(&fx, &a, rev, 0).await;
    assert_eq!(
        (d.subscribers.len(), d.removed_subscribers.clone()),
        (0, vec![fx.a.subscriber])
    );
    let d = state(&fx, &op, op_rev, 0).await;
    assert_eq!(
        d.subscribers.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![fx.a.subscriber]
    );
    // Site B heard of none of it.
    let snap_b = state(&fx, &b_site, 0, 0).await;
    assert_eq!(
        state(&fx, &b_site, snap_b.revision, 0).await.kind,
        proto::StateKind::Unchanged
    );
    // A revision the feed never gave (a restored controller) gets a snapshot.
    assert_eq!(
        state(&fx, &a, 1_000_000, 0).await.kind,
        proto::StateKind::Snapshot
    );
}

#[tokio::test]
async fn brands_reach_the_sites_of_every_subscriber_below_and_inherit_down_the_tree() {
    let fx = Fixture::new();
    let a = secret(&fx, fx.a.site);
    let a1 = secret(&fx, fx.a1.site);
    let b_site = secret(&fx, fx.b.site);
    let snap = state(&fx, &a, 0, 0).await;
    let own = snap.brands.iter().find(|b| b.tenant_id == 2).unwrap();
    assert_eq!(
        own.name, "Reseller A",
        "without settings, the reseller's name"
    );
    let rev_a = snap.revision;
    let rev_a1 = state(&fx, &a1, 0, 0).await.revision;
    let rev_b = state(&fx, &b_site, 0, 0).await.revision;

    let (s, v) = fx
        .call(
            Who::A,
            Method::PUT,
            "/api/v1/resellers/2/brand",
            Some(json!({ "name": "Skylink", "color": "#0a7d32", "contact": "+1 555 0100" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["effective"]["name"], "Skylink");
    let d = state(&fx, &a, rev_a, 0).await;
    assert_eq!(d.kind, proto::StateKind::Delta);
    let got = d.brands.iter().find(|b| b.tenant_id == 2).unwrap();
    assert_eq!(
        (
            got.name.as_str(),
            got.color.as_deref(),
            got.contact.as_deref()
        ),
        ("Skylink", Some("#0a7d32"), Some("+1 555 0100"))
    );
    // A1 has its own rebranding but no settings of its own... it shows its own name;
    // once its parent takes rebranding away from it, it inherits Skylink.
    let d1 = state(&fx, &a1, rev_a1, 0).await;
    assert!(
        d1.brands
            .iter()
            .all(|b| b.tenant_id != 3 || b.name == "Sub-reseller A1")
    );
    let (s, v) = fx
        .patch(
            Who::A,
            "/api/v1/resellers/3",
            json!({ "rebrand_enabled": false }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d1 = state(&fx, &a1, rev_a1, 0).await;
    let inherited = d1.brands.iter().find(|b| b.tenant_id == 3).unwrap();
    assert_eq!(inherited.name, "Skylink");
    // Without rebranding it cannot set one, and B's site never heard of any of it.
    let (s, v) = fx
        .call(
            Who::A1,
            Method::PUT,
            "/api/v1/resellers/3/brand",
            Some(json!({ "name": "Mine" })),
        )
        .await;
    assert_error(s, &v, StatusCode::CONFLICT, "rebrand_disabled");
    assert_eq!(
        state(&fx, &b_site, rev_b, 0).await.kind,
        proto::StateKind::Unchanged
    );
    // A tagline reaches the site with the rest of the brand.
    let rev_a = state(&fx, &a, 0, 0).await.revision;
    let body =
        json!({ "name": "Skylink", "color": "#0a7d32", "tagline": "Wireless for the valley" });
    let (s, v) = fx
        .call(Who::A, Method::PUT, "/api/v1/resellers/2/brand", Some(body))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = state(&fx, &a, rev_a, 0).await;
    let got = d
        .brands
        .iter()
        .find(|b| b.tenant_id == 2)
        .expect("the brand changed");
    assert_eq!(got.tagline.as_deref(), Some("Wireless for the valley"));
    // Bad values are refused by name.
    for (body, field) in [
        (json!({ "color": "green" }), "color"),
        (
            json!({ "logo_url": "http://cdn.example/l.png" }),
            "logo_url",
        ),
        (json!({ "logo_url": "https://x/\"onerror=\"" }), "logo_url"),
        (json!({ "contact": "a".repeat(201) }), "contact"),
        (json!({ "tagline": "a".repeat(201) }), "tagline"),
        (json!({ "tagline": "line\nbreak" }), "tagline"),
    ] {
        let (s, v) = fx
            .call(Who::A, Method::PUT, "/api/v1/resellers/2/brand", Some(body))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(field),
            "{v}"
        );
    }
}

#[tokio::test]
async fn retention_prunes_replays_and_superseded_feed_rows_but_never_what_an_agent_needs() {
    let fx = Fixture::new();
    let a = secret(&fx, fx.a.site);
    let old = state(&fx, &a, 0, 0).await.revision;
    let sub = format!("/api/v1/subscribers/{}", fx.a.subscriber);
    for status in ["suspended", "active", "suspended", "active", "suspended"] {
        fx.patch_ok(Who::A, &sub, json!({ "status": status })).await;
    }
    let site = fx.a.site;
    let rows = |fx: &Fixture| {
        fx.query_i64(&format!(
            "SELECT count(*) FROM site_changes WHERE site_id = {site} AND entity = 'subscriber'"
        ))
    };
    assert!(rows(&fx) >= 5);
    // A stored idempotent answer from 4 days ago and one from now; an event from 100
    // days ago and one from now.
    let now = outpost_controller::db::now();
    fx.state
        .db
        .write_blocking(move |tx| {
            tx.execute(
                "INSERT INTO idempotency (user_id, key, request_hash, status, response, created_at)
                 VALUES (1, 'old', 'h', 200, '{}', ?1), (1, 'new', 'h', 200, '{}', ?2)",
                rusqlite::params![now - 4 * 86_400, now],
            )?;
            let agent: i64 = tx.query_row("SELECT id FROM agents WHERE site_id = ?1 AND revoked_at IS NULL", [site], |r| r.get(0))?;
            tx.execute(
                "INSERT INTO agent_events (agent_id, seq, site_id, at, type, body, received_at)
                 VALUES (?1, 900001, ?2, ?3, 'auth_reject', '{}', ?3), (?1, 900002, ?2, ?4, 'auth_reject', '{}', ?4)",
                rusqlite::params![agent, site, now - 100 * 86_400, now],
            )?;
            Ok(())
        })
        .unwrap();

    let pruned = outpost_controller::jobs::sweep_retention(&fx.state)
        .await
        .unwrap();
    assert_eq!((pruned.idempotency, pruned.agent_events), (1, 1));
    assert!(pruned.feed >= 4, "{pruned:?}");
    assert_eq!(rows(&fx), 1, "only the newest row per entity is left");
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM idempotency WHERE key IN ('old', 'new')"),
        1
    );
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM agent_events WHERE seq IN (900001, 900002)"),
        1
    );
    // An agent still at the revision from before all of it gets the subscriber as it is
    // now, and one at the head hears nothing.
    let d = state(&fx, &a, old, 0).await;
    assert_eq!(d.kind, proto::StateKind::Delta);
    assert_eq!(d.subscribers.len(), 1);
    assert_eq!(d.subscribers[0].status, proto::SubscriberStatus::Suspended);
    assert_eq!(
        state(&fx, &a, d.revision, 0).await.kind,
        proto::StateKind::Unchanged
    );
    // A second pass finds nothing more.
    let again = outpost_controller::jobs::sweep_retention(&fx.state)
        .await
        .unwrap();
    assert_eq!(again, Default::default());
}

#[tokio::test]
async fn coa_outcomes_and_rejects_are_visible_per_site_to_whoever_manages_it() {
    let fx = Fixture::new();
    let a = secret(&fx, fx.a.site);
    let coa = |seq: u64, outcome: &str, cause: Option<u32>| {
        json!({ "seq": seq, "at": 1_800_000_000 + seq, "type": "coa", "kind": "disconnect", "outcome": outcome,
                "username": "amina", "nas_ip": "198.51.100.2", "session_id": "s1", "error_cause": cause,
                "attempts": if outcome == "timeout" { 3 } else { 1 }, "reason": "suspended" })
    };
    let reject = json!({ "seq": 3, "at": 1_800_000_003, "type": "auth_reject", "username": "amina",
                         "nas_ip": "198.51.100.2", "reason": "suspended", "calling_station_id": null });
    let (s, b) = post_events(
        &fx,
        &a,
        json!({ "events": [coa(1, "nak", Some(503)), coa(2, "timeout", None), reject] }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let path = format!("/api/v1/sites/{}/events", fx.a.site);
    let all = fx.get_ok(Who::A, &path).await;
    let seqs: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3, 2, 1], "newest first");
    let (_, coas) = fx.get(Who::A, &format!("{path}?type=coa")).await;
    let got: Vec<(&str, Option<i64>)> = coas
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["body"]["outcome"].as_str().unwrap(),
                e["body"]["error_cause"].as_i64(),
            )
        })
        .collect();
    assert_eq!(got, vec![("timeout", None), ("nak", Some(503))]);
    let (_, page) = fx
        .get(Who::A, &format!("{path}?before=1800000002&limit=1"))
        .await;
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["seq"], 1);
    let (s, v) = fx.get(Who::A, &format!("{path}?type=bogus")).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_query");
    let (s, _) = fx.get(Who::B, &path).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_long_polls_wait_as_tasks_and_wake_on_a_change() {
    let fx = Arc::new(Fixture::new());
    let a = secret(&fx, fx.a.site);
    let rev = state(&fx, &a, 0, 0).await.revision;
    let threads = || -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let before = threads();
    let mut polls = Vec::new();
    for _ in 0..1000 {
        let (fx, a) = (fx.clone(), a.clone());
        polls.push(tokio::spawn(async move { state(&fx, &a, rev, 60).await }));
    }
    // Give the polls time to reach their wait (a slow one still answers correctly below:
    // it reads the state after the change).
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let during = threads();
    assert!(
        polls.iter().all(|p| !p.is_finished()),
        "a poll returned before any change"
    );
    assert!(
        during < before + 32,
        "{during} threads while 1000 polls wait (was {before})"
    );
    let (s, _) = fx
        .patch(
            Who::A,
            &format!("/api/v1/subscribers/{}", fx.a.subscriber),
            json!({ "status": "suspended" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    for p in polls {
        let d = p.await.unwrap();
        assert_eq!(
            d.kind,
            proto::StateKind::Delta,
            "woken by the change, not by the 60 s wait"
        );
        assert_eq!(d.subscribers[0].status, proto::SubscriberStatus::Suspended);
    }
}

#[tokio::test]
async fn the_ack_digest_shows_drift() {
    let fx = Fixture::new();
    let a = secret(&fx, fx.a.site);
    let snap = state(&fx, &a, 0, 0).await;
    let digest = outpost_controller::crypto::sha256(
        proto::digest_input(&snap.subscribers, &snap.nas).as_bytes(),
    );
    let good = json!({ "revision": snap.revision, "digest": hex::encode(digest), "agent_version": "0.1.0" });
    let (s, _) = agent_call(&fx, &a, Method::POST, "/agent/v1/ack", Some(good)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, st) = fx
        .get(Who::A, &format!("/api/v1/sites/{}/agent", fx.a.site))
        .await;
    assert_eq!(
        (
            st["in_sync"].as_bool(),
            st["digest_matches"].as_bool(),
            st["version"].as_str()
        ),
        (Some(true), Some(true), Some("0.1.0"))
    );
    let bad =
        json!({ "revision": snap.revision, "digest": "ab".repeat(32), "agent_version": "0.1.0" });
    let (s, _) = agent_call(&fx, &a, Method::POST, "/agent/v1/ack", Some(bad)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, st) = fx
        .get(Who::A, &format!("/api/v1/sites/{}/agent", fx.a.site))
        .await;
    assert_eq!(
        (st["in_sync"].as_bool(), st["digest_matches"].as_bool()),
        (Some(false), Some(false)),
        "{st}"
    );
    // Behind the head after a change: drift unknown, not in sync.
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/subscribers/{}", fx.a.subscriber),
        json!({ "notes": "x" }),
    )
    .await;
    let (_, st) = fx
        .get(Who::A, &format!("/api/v1/sites/{}/agent", fx.a.site))
        .await;
    assert_eq!(
        (st["in_sync"].as_bool(), st["digest_matches"].is_null()),
        (Some(false), true),
        "{st}"
    );
    // Nonsense is refused; a revision the site has not reached is a conflict with it.
    let ahead = json!({ "revision": 1_000_000, "digest": "ab".repeat(32), "agent_version": "x" });
    let (s, b) = agent_call(&fx, &a, Method::POST, "/agent/v1/ack", Some(ahead)).await;
    assert_error(s, &b, StatusCode::CONFLICT, "revision_ahead");
    for body in [
        json!({ "revision": 1, "digest": "zz", "agent_version": "x" }),
        json!({ "revision": 1, "digest": "ab".repeat(32), "agent_version": "" }),
    ] {
        let (s, _) = agent_call(&fx, &a, Method::POST, "/agent/v1/ack", Some(body)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let (s, b) = agent_call(
        &fx,
        &a,
        Method::POST,
        "/agent/v1/ack",
        Some(json!({ "revision": 1 })),
    )
    .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
}

fn acct(seq: u64, status: &str, session: &str, input: u64, output: u64) -> Value {
    json!({ "seq": seq, "at": time::OffsetDateTime::now_utc().unix_timestamp(), "type": "accounting",
            "status": status, "username": "sub-a", "session_id": session, "nas_ip": "198.51.100.2",
            "framed_ip": "100.64.0.7", "calling_station_id": "AA:BB:CC:DD:EE:01", "session_time": 60,
            "input_octets": input, "output_octets": output, "terminate_cause": null })
}

#[tokio::test]
async fn events_are_stored_once_and_feed_sessions_and_usage() {
    let fx = Fixture::new();
    let a = secret(&fx, fx.a.site);
    let a_sessions = format!("/api/v1/subscribers/{}/sessions", fx.a.subscriber);
    let a_usage = format!("/api/v1/subscribers/{}/usage", fx.a.subscriber);
    let batch = json!({ "events": [acct(1, "start", "s1", 0, 0), acct(2, "interim_update", "s1", 1_000, 5_000)] });
    for _ in 0..3 {
        // Redelivered (the agent never saw the answer): stored once.
        let (s, b) = post_events(&fx, &a, batch.clone()).await;
        assert_eq!((s, b["through"].as_u64()), (StatusCode::OK, Some(2)), "{b}");
    }
    assert_eq!(fx.query_i64("SELECT count(*) FROM agent_events"), 2);
    let sessions = fx.get_ok(Who::A, &a_sessions).await;
    assert_eq!(sessions.as_array().unwrap().len(), 1);
    assert_eq!(
        (
            sessions[0]["framed_ip"].as_str(),
            sessions[0]["output_octets"].as_i64()
        ),
        (Some("100.64.0.7"), Some(5_000))
    );
    let (_, usage) = fx.get(Who::A, &a_usage).await;
    assert_eq!(octets(&usage[0]), (Some(1_000), Some(5_000)));
    // Whoever may not see the customer sees none of it.
    let (s, _) = fx.get(Who::B, &a_sessions).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Stop adds only the new traffic and ends the session.
    let (s, _) = post_events(
        &fx,
        &a,
        json!({ "events": [acct(3, "stop", "s1", 1_500, 9_000)] }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, usage) = fx.get(Who::A, &a_usage).await;
    assert_eq!(octets(&usage[0]), (Some(1_500), Some(9_000)));
    let (_, sessions) = fx.get(Who::A, &a_sessions).await;
    assert_eq!(sessions, json!([]));
    // A NAS reboot (Accounting-On) closes every session of that NAS.
    let (s, _) = post_events(
        &fx,
        &a,
        json!({ "events": [acct(4, "start", "s2", 0, 0), acct(5, "start", "s3", 0, 0)] }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(fx.query_i64("SELECT count(*) FROM online_sessions"), 2);
    let closed = json!({ "events": [{ "seq": 6, "at": 0, "type": "nas_sessions_closed", "nas_ip": "198.51.100.2", "closed": 2, "reason": "accounting-on" }] });
    let (s, _) = post_events(&fx, &a, closed).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(fx.query_i64("SELECT count(*) FROM online_sessions"), 0);
    // Bad batches are refused whole and store nothing.
    for bad in [
        json!({ "events": [] }),
        json!({ "events": [{ "seq": 0, "at": 0, "type": "accounting" }] }),
        json!({ "evnts": [] }),
    ] {
        let (s, _) = post_events(&fx, &a, bad).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_eq!(fx.query_i64("SELECT count(*) FROM agent_events"), 6);
}

/// One accounting record of sub-a's `session` as an agent journals it: `at` when the
/// agent received it, `event_time` when the NAS says it happened (None: an agent from
/// before that field).
fn record(
    seq: u64,
    status: &str,
    session: &str,
    (input, output, session_time): (u64, u64, u64),
    at: i64,
    event_time: Option<i64>,
) -> Value {
    let mut v = acct(seq, status, session, input, output);
    v["at"] = json!(at);
    v["session_time"] = json!(session_time);
    if let Some(t) = event_time {
        v["event_time"] = json!(t);
    }
    v
}

/// Issue 14: a session's usage is its latest counters, so no resend of a record, at any
/// time and under any sequence number, adds traffic twice.
#[tokio::test]
async fn usage_is_counted_once_whatever_is_resent_and_whenever() {
    let fx = Fixture::new();
    let a = secret(&fx, fx.a.site);
    let usage = || {
        fx.query_i64("SELECT coalesce(sum(input_octets), 0) * 1000000 + coalesce(sum(output_octets), 0) FROM usage_daily")
    };
    let online = || fx.query_i64("SELECT count(*) FROM online_sessions");
    let mut seq = 0;
    let mut send = |events: Vec<Value>| {
        let events: Vec<Value> = events
            .into_iter()
            .map(|mut e| {
                seq += 1;
                e["seq"] = json!(seq);
                e
            })
            .collect();
        let batch = json!({ "events": events });
        let fx = &fx;
        let a = a.clone();
        async move {
            let (s, b) = post_events(fx, &a, batch).await;
            assert_eq!(s, StatusCode::OK, "{b}");
        }
    };
    let t0 = time::OffsetDateTime::now_utc().unix_timestamp() - 3_600;
    let start = record(0, "start", "s1", (0, 0, 0), t0, Some(t0));
    let interim = record(
        0,
        "interim_update",
        "s1",
        (100, 500, 60),
        t0 + 60,
        Some(t0 + 60),
    );
    let stop = record(0, "stop", "s1", (150, 900, 120), t0 + 120, Some(t0 + 120));
    send(vec![start.clone(), interim.clone(), stop.clone()]).await;
    assert_eq!((usage(), online()), (150_000_900, 0));

    // The NAS resends the Stop from another source port, or after the agent's reply
    // cache expired: a new event with a new sequence number, same record.
    send(vec![stop.clone()]).await;
    // The interim again, late, and even the Start: older than what was counted.
    send(vec![interim.clone(), start.clone()]).await;
    // An agent from before event_time journaled the same Stop a minute later.
    let mut no_time = stop.clone();
    no_time["at"] = json!(t0 + 180);
    no_time.as_object_mut().unwrap().remove("event_time");
    send(vec![no_time]).await;
    assert_eq!(
        (usage(), online()),
        (150_000_900, 0),
        "resends add nothing and bring nothing back online"
    );

    // Counters that go backwards within a session (a NAS restarting its counter, or a
    // 32-bit wrap without Gigawords) are new traffic, as before.
    send(vec![
        record(0, "start", "s2", (0, 0, 0), t0 + 200, Some(t0 + 200)),
        record(
            0,
            "interim_update",
            "s2",
            (4_000, 0, 60),
            t0 + 260,
            Some(t0 + 260),
        ),
        record(
            0,
            "interim_update",
            "s2",
            (1_000, 0, 120),
            t0 + 320,
            Some(t0 + 320),
        ),
    ])
    .await;
    assert_eq!(usage(), 150_000_900 + 5_000 * 1_000_000);
    // ... and resending the interim from before the wrap changes nothing.
    send(vec![record(
        0,
        "interim_update",
        "s2",
        (4_000, 0, 60),
        t0 + 400,
        Some(t0 + 260),
    )])
    .await;
    assert_eq!(usage(), 150_000_900 + 5_000 * 1_000_000);
    assert_eq!(online(), 1, "s2 is online");

    // The NAS's event time dates the traffic: a record it held since yesterday counts
    // on yesterday.
    let yesterday = t0 - 86_400;
    send(vec![record(
        0,
        "stop",
        "s3",
        (7, 7, 30),
        t0 + 400,
        Some(yesterday),
    )])
    .await;
    let day = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .unwrap()
            .date()
            .to_string()
    };
    assert_eq!(
        fx.query_i64(&format!(
            "SELECT input_octets FROM usage_daily WHERE day = '{}'",
            day(yesterday)
        )),
        7
    );

    // After the NAS restarts (Accounting-On), a reused session id is a new session.
    send(vec![
        json!({ "seq": 0, "at": t0 + 500, "type": "nas_sessions_closed",
                      "nas_ip": "198.51.100.2", "closed": 1, "reason": "Accounting-On" }),
    ])
    .await;
    assert_eq!(online(), 0);
    let before = usage();
    send(vec![
        record(0, "start", "s1", (0, 0, 0), t0 + 600, Some(t0 + 600)),
        record(0, "stop", "s1", (20, 30, 60), t0 + 660, Some(t0 + 660)),
    ])
    .await;
    assert_eq!(usage(), before + 20_000_030);
    // Every record was stored once as an event, whatever it meant.
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM agent_events"),
        seq as i64
    );
}

#[tokio::test]
async fn enrollment_tokens_are_single_use_and_reenrolling_revokes_the_old_agent() {
    let fx = Fixture::new();
    let (s, t) = fx
        .post(
            Who::A,
            &format!("/api/v1/sites/{}/enrollment-tokens", fx.a.site),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let token = t["secret"].as_str().unwrap().to_string();
    let body = json!({ "token": token, "wireguard_public_key": common::TEST_WG_KEY, "hostname": "bng-a-new",
                       "agent_version": "0.1.0", "protocol_version": proto::PROTOCOL_VERSION });
    let req = |b: &Value| {
        Request::post("/agent/v1/enroll")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string()))
            .unwrap()
    };
    let (s, _, r) = fx.send(req(&body), ip()).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let r: proto::EnrollResponse = serde_json::from_value(r).unwrap();
    assert_eq!(r.site_id, fx.a.site);
    assert!(
        r.tunnel.is_none(),
        "no [tunnel] configured: no tunnel parameters"
    );
    // The old agent of the site is revoked; the new one works.
    let (s, _) = agent_call(
        &fx,
        &secret(&fx, fx.a.site),
        Method::GET,
        "/agent/v1/state?since=0",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        state(&fx, &r.credential, 0, 0).await.kind,
        proto::StateKind::Snapshot
    );
    // The token is spent.
    let (s, _, b) = fx.send(req(&body), ip()).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "invalid_token");
    // Bad keys and protocol versions are refused clearly.
    let (_, t) = fx
        .post(
            Who::A,
            &format!("/api/v1/sites/{}/enrollment-tokens", fx.a.site),
            json!({ "ttl_hours": 1 }),
        )
        .await;
    let mut bad = body.clone();
    bad["token"] = t["secret"].clone();
    bad["wireguard_public_key"] = json!("not-a-key");
    assert_eq!(
        fx.send(req(&bad), ip()).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    bad["wireguard_public_key"] = json!(common::TEST_WG_KEY);
    bad["protocol_version"] = json!(99);
    let (s, _, b) = fx.send(req(&bad), ip()).await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "protocol_mismatch");
    // Listing never shows secrets; B cannot mint tokens for A's site.
    let (_, list) = fx
        .get(
            Who::A,
            &format!("/api/v1/sites/{}/enrollment-tokens", fx.a.site),
        )
        .await;
    assert!(!list.to_string().contains("ope_"), "{list}");
    let (s, _) = fx
        .post(
            Who::B,
            &format!("/api/v1/sites/{}/enrollment-tokens", fx.a.site),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// What schemathesis found on the agent routes: a session time larger than the event's
/// time panicked the handler (500), counters past i64 would have wrapped, and a state
/// request past the schema's bounds was taken.
#[tokio::test]
async fn agent_values_past_their_bounds_are_refused_not_wrapped() {
    let fx = Fixture::new();
    let a = secret(&fx, fx.a.site);
    let mut e = acct(1, "start", "s-big", 10, 10);
    e["at"] = json!(-8_750_707);
    e["session_time"] = json!(i64::MAX);
    let (s, v) = post_events(&fx, &a, json!({ "events": [e] })).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a session older than time itself is stored: {v}"
    );
    let mut e = acct(2, "interim_update", "s-big", 10, 10);
    e["input_octets"] = json!(u64::MAX);
    let (s, v) = post_events(&fx, &a, json!({ "events": [e] })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events[0].input_octets"),
        "{v}"
    );
    for q in ["since=9223372036854775808", "since=0&wait=61"] {
        let (s, v) = agent_call(&fx, &a, Method::GET, &format!("/agent/v1/state?{q}"), None).await;
        assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_query");
    }
    // The scheme name is case-insensitive, for agents as for people.
    let (s, v) = fx
        .request(
            None,
            ip(),
            Method::GET,
            "/agent/v1/state?since=0",
            None,
            &[("authorization", &format!("bearer {a}"))],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// A stopping controller answers its held long polls at once (and any later one), so
/// their connections close while the tunnel can still tell the agents, which otherwise
/// wait out their request timeout before trying the restarted controller.
#[tokio::test]
async fn held_long_polls_are_answered_when_the_controller_stops() {
    let fx = Fixture::new();
    let a = secret(&fx, fx.a.site);
    let head = state(&fx, &a, 0, 0).await.revision;
    let held = {
        let (fx, a) = (&fx, a.clone());
        async move { state(fx, &a, head, proto::MAX_WAIT_SECS).await }
    };
    let closing = async {
        // Give the poll time to start waiting; it must be woken, not merely not wait.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        fx.state.db.feed.close();
    };
    // A hang guard far below the poll's own wait (MAX_WAIT_SECS).
    let guard = std::time::Duration::from_secs(u64::from(proto::MAX_WAIT_SECS) / 3);
    let (answered, ()) = tokio::time::timeout(guard, async { tokio::join!(held, closing) })
        .await
        .expect("the held poll was answered when the controller began to stop");
    assert_eq!(answered.kind, proto::StateKind::Unchanged);
    // Later polls do not wait either.
    let again = tokio::time::timeout(guard, state(&fx, &a, head, proto::MAX_WAIT_SECS))
        .await
        .expect("a poll during shutdown is answered at once");
    assert_eq!(again.revision, head);
}
