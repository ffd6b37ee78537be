//! WAN checks at the controller: agents' transitions stored once, folded into the state
//! and the outages, and read back scoped — per site, per reseller, per subscriber, and
//! as the outage report.

mod common;

use axum::http::{Method, StatusCode};
use common::{Fixture, Who, assert_error};
use outpost_protocol as proto;
use serde_json::{Value, json};

async fn post_events(fx: &Fixture, site: i64, batch: Value) -> (StatusCode, Value) {
    let version = proto::PROTOCOL_VERSION.to_string();
    let secret = fx.agents[&site].1.clone();
    fx.request(
        Some(&secret),
        common::CLIENT_IP.parse().unwrap(),
        Method::POST,
        "/agent/v1/events",
        Some(batch),
        &[(proto::PROTOCOL_HEADER, &version)],
    )
    .await
}

fn transition(seq: u64, at: i64, subscriber: i64, state: &str, previous_since: i64) -> Value {
    json!({ "seq": seq, "at": at, "type": "wan_check", "subscriber_id": subscriber, "tenant_id": 999,
            "address": "100.64.0.7", "probe": { "kind": "icmp" }, "state": state,
            "previous_since": previous_since, "failures": if state == "down" { 3 } else { 0 },
            "rtt_us": if state == "up" { Some(850) } else { None }, "sent": 10, "lost": 3, "flaps": 1 })
}

fn items(v: &Value) -> &Vec<Value> {
    v["items"].as_array().unwrap()
}

#[tokio::test]
async fn transitions_are_stored_once_and_read_back_in_scope() {
    let fx = Fixture::new();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (down_at, up_at) = (now - 300, now - 60);
    let sub = fx.a.subscriber;
    let down = json!({ "events": [transition(1, down_at, sub, "down", down_at - 1000)] });
    for _ in 0..3 {
        // Redelivered (the agent never saw the answer): one outage.
        let (s, b) = post_events(&fx, fx.a.site, down.clone()).await;
        assert_eq!((s, b["through"].as_u64()), (StatusCode::OK, Some(1)), "{b}");
    }
    assert_eq!(fx.query_i64("SELECT count(*) FROM wan_outages"), 1);

    // Site A's agent cannot speak for B's subscriber: stored as an event, folded nowhere.
    let (s, _) = post_events(
        &fx,
        fx.a.site,
        json!({ "events": [transition(2, down_at, fx.b.subscriber, "down", 0)] }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(fx.query_i64("SELECT count(*) FROM wan_targets"), 1);

    let targets = fx.get_ok(Who::A, "/api/v1/wan/targets?state=down").await;
    let t = &items(&targets)[0];
    assert_eq!(items(&targets).len(), 1);
    assert_eq!(
        (
            t["subscriber_id"].as_i64(),
            t["tenant_id"].as_i64(),
            t["probe"].as_str()
        ),
        (Some(sub), Some(fx.a.tenant), Some("icmp")),
        "the owner is the controller's, not the agent's word (999)"
    );
    let per_site = fx
        .get_ok(
            Who::Op,
            &format!("/api/v1/wan/targets?site_id={}", fx.a.site),
        )
        .await;
    assert_eq!(items(&per_site).len(), 1);
    let theirs = fx.get_ok(Who::B, "/api/v1/wan/targets").await;
    assert!(
        items(&theirs).is_empty(),
        "B sees none of A's CPE: {theirs}"
    );
    let (s, v) = fx.get(Who::A, "/api/v1/wan/targets?state=sideways").await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_query");

    let open = fx.get_ok(Who::A, "/api/v1/wan/outages?open=true").await;
    assert_eq!(items(&open).len(), 1);
    assert!(items(&open)[0]["ended_at"].is_null());

    // Back up: the outage ends and the report counts it.
    let (s, _) = post_events(
        &fx,
        fx.a.site,
        json!({ "events": [transition(3, up_at, sub, "up", down_at)] }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let ended = fx.get_ok(Who::A, "/api/v1/wan/outages?open=false").await;
    assert_eq!(items(&ended)[0]["duration_secs"].as_i64(), Some(240));
    let mine = fx
        .get_ok(Who::A, &format!("/api/v1/subscribers/{sub}/wan"))
        .await;
    assert_eq!(mine["targets"][0]["state"], "up");
    assert_eq!(mine["targets"][0]["rtt_us"], 850);
    assert_eq!(mine["outages"].as_array().unwrap().len(), 1);
    let (s, _) = fx
        .get(Who::B, &format!("/api/v1/subscribers/{sub}/wan"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let report = fx.get_ok(Who::A, "/api/v1/wan/report").await;
    let line = json!({ "id": fx.a.site, "down_now": 0, "outages": 1, "down_secs": 240, "longest_secs": 240 });
    assert_eq!(report["per_site"], json!([line]), "{report}");
    assert_eq!(report["per_reseller"][0]["id"], fx.a.tenant);
    let report = fx.get_ok(Who::B, "/api/v1/wan/report").await;
    assert_eq!(report["per_site"], json!([]));
    let (s, _) = fx
        .get(
            Who::B,
            &format!("/api/v1/wan/report?tenant_id={}", fx.a.tenant),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "another reseller's report is not found"
    );
    // A window that ends before it starts holds no outage time.
    let (s, r) = fx
        .get(
            Who::A,
            "/api/v1/wan/report?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z",
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["since"], r["until"], "the window is empty: {r}");
    let (s, r) = fx.get(Who::A, "/api/v1/wan/report?since=yesterday").await;
    assert_error(s, &r, StatusCode::BAD_REQUEST, "bad_query");
    // Only the window's part of an outage counts.
    let since = time::OffsetDateTime::from_unix_timestamp(up_at - 40)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let report = fx
        .get_ok(Who::A, &format!("/api/v1/wan/report?since={since}"))
        .await;
    assert_eq!(report["per_site"][0]["down_secs"], 40, "{report}");
}

/// The agent's view of one subscriber: the state feed as site `site`'s agent reads it.
async fn wan_check_of(fx: &Fixture, site: i64, sub: i64) -> bool {
    feed_of(fx, site, sub).await.wan_check
}

/// The subscriber as the state feed of site `site` serves it.
async fn feed_of(fx: &Fixture, site: i64, sub: i64) -> proto::SubscriberState {
    let version = proto::PROTOCOL_VERSION.to_string();
    let secret = fx.agents[&site].1.clone();
    let (s, v) = fx
        .request(
            Some(&secret),
            common::CLIENT_IP.parse().unwrap(),
            Method::GET,
            "/agent/v1/state?since=0",
            None,
            &[(proto::PROTOCOL_HEADER, &version)],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let state: proto::StateResponse = serde_json::from_value(v).unwrap();
    state
        .subscribers
        .into_iter()
        .find(|s| s.id == sub)
        .expect("the site serves its subscriber")
}

#[tokio::test]
async fn tcp_ports_come_from_the_subscriber_else_its_plan_else_the_site() {
    let fx = Fixture::new();
    let op = fx.op_tenant;
    async fn ports(fx: &Fixture) -> Option<Vec<u16>> {
        let op = fx.op_tenant;
        feed_of(fx, op.site, op.subscriber).await.wan_tcp_ports
    }
    assert_eq!(ports(&fx).await, None, "nothing named: the site's own list");
    let head = |fx: &Fixture| fx.query_i64("SELECT max(revision) FROM site_changes");
    let before = head(&fx);
    let plan = fx
        .patch_ok(
            Who::Op,
            &format!("/api/v1/plans/{}", op.plan),
            json!({ "wan_tcp_ports": [8291, 22, 22] }),
        )
        .await;
    assert_eq!(
        plan["wan_tcp_ports"],
        json!([22, 8291]),
        "sorted, once each: {plan}"
    );
    assert!(
        head(&fx) > before,
        "a plan's ports reach its subscribers' sites"
    );
    assert_eq!(ports(&fx).await, Some(vec![22, 8291]));
    let path = format!("/api/v1/subscribers/{}", op.subscriber);
    let sub = fx
        .patch_ok(Who::Op, &path, json!({ "wan_tcp_ports": [] }))
        .await;
    assert_eq!(sub["wan_tcp_ports"], json!([]), "{sub}");
    assert_eq!(ports(&fx).await, Some(vec![]), "its own (ICMP only) wins");
    fx.patch_ok(Who::Op, &path, json!({ "notes": "kept" }))
        .await;
    assert_eq!(ports(&fx).await, Some(vec![]), "another change keeps it");
    fx.patch_ok(Who::Op, &path, json!({ "wan_tcp_ports": null }))
        .await;
    assert_eq!(
        ports(&fx).await,
        Some(vec![22, 8291]),
        "null: its plan's again"
    );
    // Bad lists are refused and change nothing.
    for bad in [
        json!([0]),
        json!([70000]),
        json!((1..=17).collect::<Vec<u16>>()),
    ] {
        let (s, _) = fx
            .call(
                Who::Op,
                Method::PATCH,
                &path,
                Some(json!({ "wan_tcp_ports": bad })),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    assert_eq!(ports(&fx).await, Some(vec![22, 8291]));
}

#[tokio::test]
async fn the_feed_says_whom_to_probe_by_the_resellers_toggle_and_never_probe() {
    let fx = Fixture::new();
    let (a, a1) = (fx.a, fx.a1);
    // Operator's own subscribers: the operator has every feature.
    assert!(wan_check_of(&fx, fx.op_tenant.site, fx.op_tenant.subscriber).await);
    assert!(
        !wan_check_of(&fx, a.site, a.subscriber).await,
        "A has no WAN checks"
    );
    let head = |fx: &Fixture| fx.query_i64("SELECT max(revision) FROM site_changes");
    let before = head(&fx);
    fx.patch_ok(
        Who::Op,
        &format!("/api/v1/resellers/{}", a.tenant),
        json!({ "wan_check_enabled": true }),
    )
    .await;
    assert!(head(&fx) > before, "the toggle reaches the sites' feeds");
    assert!(wan_check_of(&fx, a.site, a.subscriber).await);
    // Inherited: A1 needs it too, and loses it with A.
    assert!(!wan_check_of(&fx, a1.site, a1.subscriber).await);
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/resellers/{}", a1.tenant),
        json!({ "wan_check_enabled": true }),
    )
    .await;
    assert!(wan_check_of(&fx, a1.site, a1.subscriber).await);
    fx.patch_ok(
        Who::Op,
        &format!("/api/v1/resellers/{}", a.tenant),
        json!({ "wan_check_enabled": false }),
    )
    .await;
    assert!(
        !wan_check_of(&fx, a1.site, a1.subscriber).await,
        "A1 inherits A's loss"
    );
    // "Never probe" on one subscriber.
    fx.patch_ok(
        Who::Op,
        &format!("/api/v1/resellers/{}", a.tenant),
        json!({ "wan_check_enabled": true }),
    )
    .await;
    let sub = fx
        .patch_ok(
            Who::A,
            &format!("/api/v1/subscribers/{}", a.subscriber),
            json!({ "wan_check_exempt": true }),
        )
        .await;
    assert_eq!(sub["wan_check_exempt"], true);
    assert!(!wan_check_of(&fx, a.site, a.subscriber).await);
    let (s, v) = fx
        .patch(
            Who::A,
            &format!("/api/v1/subscribers/{}", a.subscriber),
            json!({ "wan_check_exempt": "yes" }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}
