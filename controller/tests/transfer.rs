//! The subscriber transfer rule, for the single update and the bulk action:
//! only inside the actor's own subtree. The operator: anywhere. A reseller: itself or any
//! descendant. A sub-reseller: only itself when it has no descendants. Anything else is
//! refused (403), changes nothing, and is recorded as a security event.

mod common;

use axum::http::{Method, StatusCode};
use common::{Fixture, Who, assert_error, error_code};
use serde_json::json;

fn owner_of(fx: &Fixture, sub: i64) -> i64 {
    fx.query_i64(&format!(
        "SELECT tenant_id FROM subscribers WHERE id = {sub}"
    ))
}

fn security_events(fx: &Fixture, actor: i64) -> i64 {
    fx.query_i64(&format!(
        "SELECT count(*) FROM audit_log WHERE security = 1 AND action = 'security.tenant_out_of_scope' AND actor_user_id = {actor}"
    ))
}

async fn move_one(fx: &Fixture, who: Who, sub: i64, to: i64) -> StatusCode {
    let (s, body) = fx
        .patch(
            who,
            &format!("/api/v1/subscribers/{sub}"),
            json!({ "tenant_id": to }),
        )
        .await;
    if !s.is_success() {
        error_code(&body);
    }
    s
}

async fn move_bulk(
    fx: &Fixture,
    who: Who,
    ids: &[i64],
    to: i64,
) -> (StatusCode, serde_json::Value) {
    fx.post(
        who,
        "/api/v1/subscribers/bulk",
        json!({ "action": "set_reseller", "ids": ids, "tenant_id": to }),
    )
    .await
}

/// Asserts a refused move: 403, subscriber unchanged, one more security event.
/// Puts subscribers on the operator's site, which every tenant may use, and off their
/// plans (which only their owner sells), so that only the tree rule decides a move.
async fn on_shared_site(fx: &Fixture, subs: &[i64]) {
    for sub in subs {
        fx.patch_ok(
            Who::Op,
            &format!("/api/v1/subscribers/{sub}"),
            json!({ "site_id": fx.op_tenant.site, "plan_id": null }),
        )
        .await;
    }
}

async fn mv(fx: &Fixture, who: Who, sub: i64, to: i64, bulk: bool) -> StatusCode {
    if bulk {
        move_bulk(fx, who, &[sub], to).await.0
    } else {
        move_one(fx, who, sub, to).await
    }
}

async fn assert_refused(fx: &Fixture, who: Who, sub: i64, to: i64, bulk: bool) {
    let owner = owner_of(fx, sub);
    let events = security_events(fx, fx.user_id(who));
    let status = mv(fx, who, sub, to, bulk).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "{who:?} moving {sub} to {to} (bulk={bulk})"
    );
    assert_eq!(owner_of(fx, sub), owner, "a refused move changed the owner");
    assert_eq!(
        security_events(fx, fx.user_id(who)),
        events + 1,
        "refusal not recorded as a security event"
    );
}

#[tokio::test]
async fn operator_moves_anywhere() {
    let fx = Fixture::new();
    // A subscriber on A's own site cannot go to B, which may not use that site.
    let (s, body) = fx
        .patch(
            Who::Op,
            &format!("/api/v1/subscribers/{}", fx.a.subscriber),
            json!({ "tenant_id": 4 }),
        )
        .await;
    assert_error(s, &body, StatusCode::NOT_FOUND, "site_unavailable");
    assert_eq!(owner_of(&fx, fx.a.subscriber), 2);
    on_shared_site(&fx, &[fx.a.subscriber]).await;
    for bulk in [false, true] {
        for to in [4, 3, 1, 2] {
            let s = mv(&fx, Who::Op, fx.a.subscriber, to, bulk).await;
            assert_eq!(s, StatusCode::OK, "operator to {to} (bulk={bulk})");
            assert_eq!(owner_of(&fx, fx.a.subscriber), to);
        }
    }
}

#[tokio::test]
async fn reseller_moves_to_itself_and_descendants_only() {
    let fx = Fixture::new();
    on_shared_site(&fx, &[fx.a.subscriber, fx.a1.subscriber]).await;
    for bulk in [false, true] {
        let sub = fx.a.subscriber;
        assert_eq!(
            mv(&fx, Who::A, sub, 3, bulk).await,
            StatusCode::OK,
            "A to its sub-reseller A1"
        );
        assert_eq!(owner_of(&fx, sub), 3);
        assert_eq!(
            mv(&fx, Who::A, sub, 2, bulk).await,
            StatusCode::OK,
            "A back to itself"
        );
        assert_eq!(owner_of(&fx, sub), 2);
        assert_refused(&fx, Who::A, sub, 4, bulk).await; // sibling reseller B
        assert_refused(&fx, Who::A, sub, 1, bulk).await; // the operator above it
        assert_refused(&fx, Who::A, sub, 999, bulk).await; // no such tenant: same answer
        // A1's subscriber can be pulled up into A, since both are A's.
        assert_eq!(
            mv(&fx, Who::A, fx.a1.subscriber, 2, bulk).await,
            StatusCode::OK
        );
        assert_eq!(
            move_one(&fx, Who::A, fx.a1.subscriber, 3).await,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn sub_reseller_without_descendants_only_itself() {
    let fx = Fixture::new();
    for bulk in [false, true] {
        let sub = fx.a1.subscriber;
        let same = mv(&fx, Who::A1, sub, 3, bulk).await;
        assert_eq!(same, StatusCode::OK, "to itself is a no-op");
        assert_eq!(owner_of(&fx, sub), 3);
        assert_refused(&fx, Who::A1, sub, 2, bulk).await; // its parent
        assert_refused(&fx, Who::A1, sub, 4, bulk).await; // a stranger
        assert_refused(&fx, Who::A1, sub, 1, bulk).await; // the operator
    }
}

#[tokio::test]
async fn in_a_deeper_tree_a_sub_reseller_moves_to_its_own_descendants() {
    let fx = Fixture::with_config(|c| c.tree.max_depth = 3);
    let (s, child) = fx
        .post(Who::A1, "/api/v1/resellers", json!({ "name": "A1 child" }))
        .await;
    on_shared_site(&fx, &[fx.a1.subscriber]).await;
    assert_eq!(s, StatusCode::CREATED, "{child}");
    let child = child["id"].as_i64().unwrap();
    assert_eq!(
        move_one(&fx, Who::A1, fx.a1.subscriber, child).await,
        StatusCode::OK
    );
    assert_eq!(
        move_bulk(&fx, Who::A1, &[fx.a1.subscriber], 3).await.0,
        StatusCode::OK
    );
    assert_refused(&fx, Who::A1, fx.a1.subscriber, 2, false).await;
    // With the default depth the same creation is refused.
    let fx2 = Fixture::new();
    let (s, body) = fx2
        .post(Who::A1, "/api/v1/resellers", json!({ "name": "too deep" }))
        .await;
    assert_error(s, &body, StatusCode::UNPROCESSABLE_ENTITY, "depth_exceeded");
}

#[tokio::test]
async fn a_manager_cannot_move_customers_out_of_its_tenant() {
    let fx = Fixture::new();
    // Grant the manager edit rights so only the tree rule stands in the way.
    let (s, _) = fx
        .call(
            Who::A,
            Method::PATCH,
            &format!("/api/v1/users/{}", fx.user_id(Who::M)),
            Some(
                json!({ "permissions": ["view_customers", "edit_customers", "suspend_reconnect"] }),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_refused(&fx, Who::M, fx.a.subscriber, 3, false).await;
    assert_refused(&fx, Who::M, fx.a.subscriber, 3, true).await;
    assert_eq!(
        move_one(&fx, Who::M, fx.a.subscriber, 2).await,
        StatusCode::OK,
        "staying put is fine"
    );
}

#[tokio::test]
async fn bulk_is_all_or_nothing() {
    let fx = Fixture::new();
    on_shared_site(&fx, &[fx.a.subscriber]).await;
    // One id out of scope: 404 naming it, and nothing moves.
    let (s, body) = move_bulk(&fx, Who::A, &[fx.a.subscriber, fx.b.subscriber], 3).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&fx.b.subscriber.to_string())
    );
    assert_eq!(owner_of(&fx, fx.a.subscriber), 2);
    // Suspend with one foreign id: nothing is suspended.
    let (s, _) = fx
        .post(
            Who::A,
            "/api/v1/subscribers/bulk",
            json!({ "action": "suspend", "ids": [fx.a.subscriber, fx.b.subscriber] }),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM subscribers WHERE status = 'suspended'"),
        0
    );
    // A valid bulk moves both and reports them.
    let (s, body) = move_bulk(&fx, Who::A, &[fx.a.subscriber, fx.a1.subscriber], 3).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], json!([fx.a.subscriber]));
    assert_eq!(body["unchanged"], json!([fx.a1.subscriber]));
    // One audit entry for the call, findable by each changed subscriber.
    let (s, audit) = fx
        .call(
            Who::A,
            Method::GET,
            &format!(
                "/api/v1/audit?target_kind=subscriber&target_id={}",
                fx.a.subscriber
            ),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(audit["items"][0]["action"], "subscriber.bulk_set_reseller");
}

#[tokio::test]
async fn a_move_respects_the_target_limits() {
    let fx = Fixture::new();
    on_shared_site(&fx, &[fx.a.subscriber, fx.b.subscriber]).await;
    fx.patch_ok(
        Who::A,
        "/api/v1/resellers/3",
        json!({ "limits": { "max_subscribers": 1 } }),
    )
    .await;
    let (s, body) = fx
        .patch(
            Who::A,
            &format!("/api/v1/subscribers/{}", fx.a.subscriber),
            json!({ "tenant_id": 3 }),
        )
        .await;
    assert_error(s, &body, StatusCode::CONFLICT, "limit_reached");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Sub-reseller A1")
    );
    assert_eq!(owner_of(&fx, fx.a.subscriber), 2);
    // Moving within A's own subtree never trips A's own limit.
    fx.patch_ok(
        Who::Op,
        "/api/v1/resellers/2",
        json!({ "limits": { "max_subscribers": 2 } }),
    )
    .await;
    let (s, _) = fx
        .patch(Who::Op, "/api/v1/resellers/3", json!({ "limits": {} }))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        move_one(&fx, Who::A, fx.a.subscriber, 3).await,
        StatusCode::OK
    );
    // But moving B's subscriber into the full A is refused.
    let (s, body) = move_bulk(&fx, Who::Op, &[fx.b.subscriber], 2).await;
    assert_error(s, &body, StatusCode::CONFLICT, "limit_reached");
}
