//! Who sees what: list contents per actor, manager scope and permissions, presets,
//! secrets, and the audit log's visibility.

mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use common::{Fixture, Who, error_code};
use serde_json::{Value, json};

fn tenants_of(items: &Value) -> BTreeSet<i64> {
    items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["tenant_id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn each_actor_lists_exactly_its_part_of_the_tree() {
    let fx = Fixture::new();
    for (who, want) in [
        (Who::Op, vec![1, 2, 3, 4]),
        (Who::A, vec![2, 3]),
        (Who::A1, vec![3]),
        // A manager: only its tenant's direct customers, not the sub-reseller's.
        (Who::M, vec![2]),
        (Who::B, vec![4]),
    ] {
        let subs = fx.get_ok(who, "/api/v1/subscribers").await;
        assert_eq!(
            tenants_of(&subs),
            want.iter().copied().collect(),
            "{who:?} subscribers"
        );
    }
    for (who, want) in [
        (Who::Op, vec![1, 2, 3, 4]),
        (Who::A, vec![2, 3]),
        (Who::A1, vec![3]),
        (Who::B, vec![4]),
    ] {
        for route in ["/api/v1/sites", "/api/v1/nas", "/api/v1/users"] {
            let rows = fx.get_ok(who, route).await;
            assert_eq!(
                tenants_of(&rows),
                want.iter().copied().collect(),
                "{who:?} {route}"
            );
        }
    }
    // Reseller records: strictly below you.
    for (who, want) in [
        (Who::Op, vec![2, 3, 4]),
        (Who::A, vec![3]),
        (Who::A1, vec![]),
        (Who::B, vec![]),
    ] {
        let (_, rows) = fx.get(who, "/api/v1/resellers").await;
        let ids: Vec<i64> = rows["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, want, "{who:?} resellers");
    }
}

#[tokio::test]
async fn an_operator_manager_sees_only_the_operators_direct_customers() {
    let fx = Fixture::new();
    // The fixture's operator-tenant manager has view_customers; log in as it.
    fx.post_ok(
        Who::Anon,
        "/api/v1/session",
        json!({ "email": "mgr-op@fixture.test", "password": common::PASSWORD }),
    )
    .await;
    let secret = outpost_controller::crypto::new_bearer("ops_");
    let mgr = fx.op_tenant.manager;
    let sec = secret.clone();
    fx.state
        .db
        .write_blocking(move |tx| {
            outpost_controller::db::session::create(
                tx,
                &sec,
                mgr,
                None,
                common::CLIENT_IP,
                "t",
                600,
            )
        })
        .unwrap();
    let req = axum::http::Request::get("/api/v1/subscribers")
        .header("authorization", format!("Bearer {secret}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let (s, _, subs) = fx.send(req, common::CLIENT_IP.parse().unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(tenants_of(&subs), [1].into_iter().collect());
    let req = axum::http::Request::get(format!("/api/v1/subscribers/{}", fx.a.subscriber))
        .header("authorization", format!("Bearer {secret}"))
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(
        fx.send(req, common::CLIENT_IP.parse().unwrap()).await.0,
        StatusCode::NOT_FOUND,
        "reseller's customer"
    );
}

#[tokio::test]
async fn a_manager_with_no_permissions_can_do_nothing() {
    let fx = Fixture::new();
    let (s, u) = fx.post(Who::A, "/api/v1/users", json!({ "email": "nobody@a.test", "name": "No grants", "password": "nobody-password", "kind": "manager" })).await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    assert_eq!(u["permissions"], json!([]));
    let id = u["id"].as_i64().unwrap();
    let secret = outpost_controller::crypto::new_bearer("ops_");
    let sec = secret.clone();
    fx.state
        .db
        .write_blocking(move |tx| {
            outpost_controller::db::session::create(tx, &sec, id, None, common::CLIENT_IP, "t", 600)
        })
        .unwrap();
    let call = |m: Method, path: String, body: Option<Value>| {
        let mut b = axum::http::Request::builder()
            .method(m)
            .uri(path)
            .header("authorization", format!("Bearer {secret}"));
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                axum::body::Body::from(v.to_string())
            }
            None => axum::body::Body::empty(),
        };
        b.body(body).unwrap()
    };
    let ip = common::CLIENT_IP.parse().unwrap();
    for (m, path, body) in [
        (Method::GET, "/api/v1/subscribers".to_string(), None),
        (
            Method::GET,
            format!("/api/v1/subscribers/{}", fx.a.subscriber),
            None,
        ),
        (
            Method::POST,
            "/api/v1/subscribers".to_string(),
            Some(json!({ "username": "x1", "password": "p" })),
        ),
        (
            Method::PATCH,
            format!("/api/v1/subscribers/{}", fx.a.subscriber),
            Some(json!({ "status": "suspended" })),
        ),
        (
            Method::POST,
            "/api/v1/subscribers/bulk".to_string(),
            Some(json!({ "action": "suspend", "ids": [fx.a.subscriber] })),
        ),
        (Method::GET, "/api/v1/sites".to_string(), None),
        (Method::GET, "/api/v1/nas".to_string(), None),
        (Method::GET, "/api/v1/resellers".to_string(), None),
        (Method::GET, "/api/v1/users".to_string(), None),
        (Method::GET, "/api/v1/audit".to_string(), None),
    ] {
        let (s, _, b) = fx.send(call(m.clone(), path.clone(), body), ip).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{m} {path}: {b}");
        assert_eq!(error_code(&b), "permission_denied");
    }
    let (s, _, me) = fx
        .send(call(Method::GET, "/api/v1/me".into(), None), ip)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["permissions"], json!([]));
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM subscribers WHERE status = 'suspended'"),
        0
    );
}

#[tokio::test]
async fn managers_grant_only_what_they_hold_and_presets_are_plain_sets() {
    let fx = Fixture::new();
    let m = fx.user_id(Who::M);
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/users/{m}"),
        json!({ "permissions": ["view_customers", "manage_staff"] }),
    )
    .await;
    let new = |email: &str, perms: Value| json!({ "email": email, "name": "Sub manager", "password": "manager-password", "kind": "manager", "permissions": perms });
    let (s, b) = fx
        .call(
            Who::M,
            Method::POST,
            "/api/v1/users",
            Some(new("ok@a.test", json!(["view_customers"]))),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = fx
        .call(
            Who::M,
            Method::POST,
            "/api/v1/users",
            Some(new("esc@a.test", json!(["view_customers", "manage_sites"]))),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("manage_sites"),
        "{b}"
    );
    // Nor may it raise its own grants, or make reseller logins.
    let (s, _) = fx
        .patch(
            Who::M,
            &format!("/api/v1/users/{m}"),
            json!({ "permissions": ["view_customers", "manage_staff", "manage_sites"] }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = fx.post(Who::M, "/api/v1/users", json!({ "email": "own@a.test", "name": "x", "password": "password-123", "kind": "reseller" })).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A manager of A cannot be placed in A1 by A's manager (outside its tenant).
    let mut body = new("a1@a.test", json!(["view_customers"]));
    body["tenant_id"] = json!(3);
    let (s, _) = fx
        .call(Who::M, Method::POST, "/api/v1/users", Some(body))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Presets expand to their permission list.
    let (s, b) = fx.post(Who::A, "/api/v1/users", json!({ "email": "col@a.test", "name": "Collector", "password": "collector-pass", "kind": "manager", "preset": "collector" })).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        b["permissions"],
        json!(["view_customers", "record_payments", "view_invoices"])
    );
    // Only operator staff create operator staff.
    let (s, _) = fx.post(Who::A, "/api/v1/users", json!({ "email": "op2@a.test", "name": "x", "password": "password-123", "kind": "operator" })).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn status_needs_suspend_permission_and_fields_need_edit() {
    let fx = Fixture::new();
    let path = format!("/api/v1/subscribers/{}", fx.a.subscriber);
    let b = fx
        .patch_ok(Who::M, &path, json!({ "status": "suspended" }))
        .await;
    assert_eq!(b["status"], "suspended");
    let (s, _) = fx
        .patch(Who::M, &path, json!({ "status": "active", "notes": "x" }))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = fx.patch(Who::M, &path, json!({})).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "an empty patch still needs edit rights"
    );
}

#[tokio::test]
async fn ppp_passwords_and_nas_secrets_only_where_they_belong() {
    let fx = Fixture::new();
    let (_, list) = fx.get(Who::A, "/api/v1/subscribers").await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s.get("password").is_none()),
        "{list}"
    );
    let path = format!("/api/v1/subscribers/{}", fx.a.subscriber);
    let (_, one) = fx.get(Who::A, &path).await;
    assert_eq!(one["password"], "ppp-a");
    let (_, one) = fx.get(Who::M, &path).await;
    assert!(
        one.get("password").is_none(),
        "a manager without edit rights sees no password: {one}"
    );
    let (_, nas) = fx.get(Who::A, "/api/v1/nas").await;
    assert!(
        nas["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n.get("secret").is_none())
    );
    let (_, n) = fx.get(Who::A, &format!("/api/v1/nas/{}", fx.a.nas)).await;
    assert_eq!(n["secret"], "radius-secret");
    // At rest they are sealed: the clear text is nowhere in the database file.
    let raw = std::fs::read(fx.dir.path().join("controller.db")).unwrap();
    let wal = std::fs::read(fx.dir.path().join("controller.db-wal")).unwrap_or_default();
    for needle in [b"ppp-a".as_slice(), b"radius-secret".as_slice()] {
        assert!(!raw.windows(needle.len()).any(|w| w == needle));
        assert!(!wal.windows(needle.len()).any(|w| w == needle));
    }
    // And never in the audit log.
    fx.patch_ok(Who::A, &path, json!({ "password": "new-ppp-secret" }))
        .await;
    let (_, audit) = fx
        .get(Who::A, "/api/v1/audit?action=subscriber.update")
        .await;
    assert_eq!(audit["items"][0]["after"]["password"], "[redacted]");
    assert!(!audit.to_string().contains("new-ppp-secret"));
}

#[tokio::test]
async fn audit_entries_are_visible_to_their_tenants_subtree_only() {
    let fx = Fixture::new();
    for (who, sub) in [
        (Who::A1, fx.a1.subscriber),
        (Who::B, fx.b.subscriber),
        (Who::A, fx.a.subscriber),
    ] {
        fx.patch_ok(
            who,
            &format!("/api/v1/subscribers/{sub}"),
            json!({ "notes": "n" }),
        )
        .await;
    }
    let seen = |v: &Value| -> BTreeSet<i64> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["tenant_id"].as_i64().unwrap())
            .collect()
    };
    let (_, a) = fx.get(Who::A, "/api/v1/audit").await;
    assert_eq!(seen(&a), [2, 3].into_iter().collect());
    let (_, a1) = fx.get(Who::A1, "/api/v1/audit").await;
    assert_eq!(seen(&a1), [3].into_iter().collect());
    let (_, b) = fx.get(Who::B, "/api/v1/audit").await;
    assert_eq!(seen(&b), [4].into_iter().collect());
    let (_, op) = fx.get(Who::Op, "/api/v1/audit").await;
    assert_eq!(seen(&op), [2, 3, 4].into_iter().collect());
    // Filters: by actor, by action prefix, by target, by time.
    let (_, f) = fx
        .call(
            Who::A,
            Method::GET,
            &format!("/api/v1/audit?actor_user_id={}", fx.user_id(Who::A1)),
            None,
        )
        .await;
    assert_eq!(f["items"].as_array().unwrap().len(), 1);
    let (_, f) = fx.get(Who::Op, "/api/v1/audit?action=subscriber.").await;
    assert_eq!(f["items"].as_array().unwrap().len(), 3);
    let (_, f) = fx
        .call(
            Who::Op,
            Method::GET,
            &format!(
                "/api/v1/audit?target_kind=subscriber&target_id={}",
                fx.b.subscriber
            ),
            None,
        )
        .await;
    assert_eq!(f["items"][0]["actor_user_id"], fx.user_id(Who::B));
    let (_, f) = fx
        .get(
            Who::Op,
            "/api/v1/audit?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z",
        )
        .await;
    assert_eq!(f["items"], json!([]));
    let (s, b) = fx.get(Who::Op, "/api/v1/audit?since=yesterday").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // Paging newest-first with a cursor.
    let (_, p1) = fx.get(Who::Op, "/api/v1/audit?limit=2").await;
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = fx
        .get(Who::Op, &format!("/api/v1/audit?limit=2&cursor={cursor}"))
        .await;
    assert!(p2["items"][0]["id"].as_i64().unwrap() < p1["items"][1]["id"].as_i64().unwrap());
}
