//! Disabling and enabling a reseller cascades to everyone below it: its staff, its
//! sub-resellers' staff and managers can neither log in nor use a session they hold,
//! and come back when it is enabled; another reseller is untouched. (The edge side —
//! subscribers blocked at the sites — is in `agent_feed.rs` at the feed and in the lab.)

mod common;

use axum::http::{Method, StatusCode};
use common::{CLIENT_IP, Fixture, PASSWORD, Who, assert_error};
use serde_json::json;

async fn login(fx: &Fixture, email: &str) -> (StatusCode, serde_json::Value) {
    fx.request(
        None,
        CLIENT_IP.parse().unwrap(),
        Method::POST,
        "/api/v1/session",
        Some(json!({ "email": email, "password": PASSWORD })),
        &[],
    )
    .await
}

#[tokio::test]
async fn a_disabled_resellers_staff_below_it_cannot_log_in_or_act_until_it_is_enabled() {
    let fx = Fixture::new();
    let below_a = [Who::A, Who::A1, Who::M];
    fx.patch_ok(
        Who::Op,
        &format!("/api/v1/resellers/{}", fx.a.tenant),
        json!({ "status": "disabled" }),
    )
    .await;
    for who in below_a {
        let (s, v) = login(&fx, &fx.emails[&who]).await;
        assert_error(s, &v, StatusCode::FORBIDDEN, "account_disabled");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Reseller A"),
            "{v}"
        );
        // A session held from before the switch stops working too.
        let (s, v) = fx.get(who, "/api/v1/me").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{who:?}: {v}");
    }
    // Another reseller and the operator are untouched.
    for who in [Who::B, Who::Op] {
        let (s, v) = login(&fx, &fx.emails[&who]).await;
        assert_eq!(s, StatusCode::OK, "{who:?}: {v}");
        fx.get_ok(who, "/api/v1/me").await;
    }
    // Disabling the sub-reseller alone leaves its parent's staff working.
    fx.patch_ok(
        Who::Op,
        &format!("/api/v1/resellers/{}", fx.a.tenant),
        json!({ "status": "active" }),
    )
    .await;
    for who in below_a {
        let (s, v) = login(&fx, &fx.emails[&who]).await;
        assert_eq!(s, StatusCode::OK, "{who:?}: {v}");
        fx.get_ok(who, "/api/v1/me").await;
    }
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/resellers/{}", fx.a1.tenant),
        json!({ "status": "disabled" }),
    )
    .await;
    let (s, v) = login(&fx, &fx.emails[&Who::A1]).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "account_disabled");
    for who in [Who::A, Who::M] {
        let (s, v) = login(&fx, &fx.emails[&who]).await;
        assert_eq!(s, StatusCode::OK, "{who:?}: {v}");
    }
    // A reseller cannot lift its own disabling: its parent does.
    fx.patch_ok(
        Who::Op,
        &format!("/api/v1/resellers/{}", fx.a.tenant),
        json!({ "status": "disabled" }),
    )
    .await;
    let (s, _) = fx
        .patch(
            Who::A,
            &format!("/api/v1/resellers/{}", fx.a.tenant),
            json!({ "status": "active" }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_reseller_holding_subscribers_or_money_is_not_deleted_an_empty_one_is_with_its_staff() {
    let fx = Fixture::new();
    let tables = [
        "tenants",
        "users",
        "subscribers",
        "ledger",
        "sites",
        "audit_log",
    ];
    let snapshot = |fx: &Fixture| -> Vec<i64> {
        tables
            .iter()
            .map(|t| fx.query_i64(&format!("SELECT count(*) FROM {t}")))
            .collect()
    };
    let before = snapshot(&fx);
    // A holds subscribers, money, a site, plans and a sub-reseller: every one is named.
    let (s, v) = fx
        .call(
            Who::Op,
            Method::DELETE,
            &format!("/api/v1/resellers/{}", fx.a.tenant),
            None,
        )
        .await;
    assert_error(s, &v, StatusCode::CONFLICT, "reseller_not_empty");
    let msg = v["error"]["message"].as_str().unwrap();
    for held in [
        "subscriber(s)",
        "money",
        "sub-reseller(s)",
        "site(s)",
        "plan(s)",
    ] {
        assert!(msg.contains(held), "{held}: {msg}");
    }
    assert_eq!(snapshot(&fx), before);

    // An empty reseller with a staff login goes, with the login and its session.
    let (s, c) = fx
        .post(Who::A, "/api/v1/resellers", json!({ "name": "Reseller C" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let c = c["id"].as_i64().unwrap();
    let (s, u) = fx
        .post(
            Who::A,
            "/api/v1/users",
            json!({ "email": "staff@c.test", "name": "C staff", "kind": "reseller", "tenant_id": c, "password": PASSWORD }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    let (s, _) = login(&fx, "staff@c.test").await;
    assert_eq!(s, StatusCode::OK);
    // Not by B (outside its tree), nor by C's own staff, nor by a manager.
    for who in [Who::B, Who::A1] {
        let (s, v) = fx
            .call(who, Method::DELETE, &format!("/api/v1/resellers/{c}"), None)
            .await;
        assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    }
    let (s, _) = fx
        .call(
            Who::M,
            Method::DELETE,
            &format!("/api/v1/resellers/{c}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = fx
        .call(
            Who::A,
            Method::DELETE,
            &format!("/api/v1/resellers/{c}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(
        fx.query_i64(&format!("SELECT count(*) FROM tenants WHERE id = {c}")),
        0
    );
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM users WHERE email = 'staff@c.test'"),
        0
    );
    let (s, _) = login(&fx, "staff@c.test").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        fx.query_i64(&format!(
            "SELECT count(*) FROM audit_log WHERE action = 'reseller.delete' AND target_id = {c}"
        )),
        1
    );
    let (s, _) = fx.get(Who::A, &format!("/api/v1/resellers/{c}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
