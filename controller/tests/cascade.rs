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
