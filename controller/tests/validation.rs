//! Bad input gets a clear error in the one error body, and loses nothing: malformed JSON,
//! unknown fields, out-of-range limits, duplicates, bad CIDRs and friends. Plus limits,
//! depth, paging and search.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::{Fixture, Who, assert_error, error_code};
use serde_json::json;

fn counts(fx: &Fixture) -> (i64, i64, i64, i64) {
    (
        fx.query_i64("SELECT count(*) FROM subscribers"),
        fx.query_i64("SELECT count(*) FROM tenants"),
        fx.query_i64("SELECT count(*) FROM users"),
        fx.query_i64("SELECT count(*) FROM audit_log"),
    )
}

async fn raw(
    fx: &Fixture,
    who: Who,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut b = Request::builder().method(method).uri(path).header(
        header::AUTHORIZATION,
        format!("Bearer {}", fx.secret(who).unwrap()),
    );
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    let (s, _, v) = fx
        .send(
            b.body(Body::from(body.to_string())).unwrap(),
            common::CLIENT_IP.parse().unwrap(),
        )
        .await;
    (s, v)
}

#[tokio::test]
async fn malformed_and_mistyped_bodies_are_refused_with_the_error_body() {
    let fx = Fixture::new();
    let before = counts(&fx);
    const JSON: Option<&str> = Some("application/json");
    let cases = [
        (
            Method::POST,
            "/api/v1/subscribers",
            JSON,
            "{\"username\": \"x\",",
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            Method::POST,
            "/api/v1/subscribers",
            JSON,
            r#"{"username":"x","password":"p","speed":9}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/api/v1/subscribers",
            JSON,
            r#"{"username":"x","password":5}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/api/v1/subscribers",
            None,
            r#"{"username":"x","password":"p"}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Method::GET,
            "/api/v1/subscribers/abc",
            None,
            "",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            Method::GET,
            "/api/v1/subscribers?cursor=zzz",
            None,
            "",
            StatusCode::BAD_REQUEST,
            "bad_cursor",
        ),
        (
            Method::GET,
            "/api/v1/subscribers?limit=0",
            None,
            "",
            StatusCode::BAD_REQUEST,
            "bad_limit",
        ),
        (
            Method::GET,
            "/api/v1/subscribers?colour=red",
            None,
            "",
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            Method::GET,
            "/api/v1/no-such-thing",
            None,
            "",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (method, path, content_type, body, status, code) in cases {
        let (s, b) = raw(&fx, Who::A, method.clone(), path, content_type, body).await;
        assert_eq!(
            (s, error_code(&b).as_str()),
            (status, code),
            "{method} {path} {body}: {b}"
        );
        if body.contains("speed") {
            assert!(
                b["error"]["message"].as_str().unwrap().contains("speed"),
                "names the unknown field: {b}"
            );
        }
    }
    assert_eq!(counts(&fx), before, "a refused request wrote something");
}

#[tokio::test]
async fn field_rules_name_the_field_and_write_nothing() {
    let fx = Fixture::new();
    let before = counts(&fx);
    let cases = [
        (
            "/api/v1/resellers",
            json!({ "name": "X", "limits": { "max_subscribers": -1 } }),
            "limits.max_subscribers",
        ),
        (
            "/api/v1/resellers",
            json!({ "name": "X", "limits": { "max_sites": 10_000_001 } }),
            "limits.max_sites",
        ),
        (
            "/api/v1/resellers",
            json!({ "name": "X", "allowed_ips": ["198.51.100.0/24", "10.0.0.300/8"] }),
            "allowed_ips[1]",
        ),
        (
            "/api/v1/resellers",
            json!({ "name": "X", "allowed_ips": ["office"] }),
            "allowed_ips[0]",
        ),
        (
            "/api/v1/resellers",
            json!({ "name": "X", "custom_domain": "not a domain" }),
            "custom_domain",
        ),
        ("/api/v1/resellers", json!({ "name": "   " }), "name"),
        (
            "/api/v1/subscribers",
            json!({ "username": "has space", "password": "p" }),
            "username",
        ),
        (
            "/api/v1/subscribers",
            json!({ "username": "ok1", "password": "p", "mac": "00:11:22" }),
            "mac",
        ),
        (
            "/api/v1/subscribers",
            json!({ "username": "ok2", "password": "p", "static_ipv4": "300.1.1.1", "site_id": 2 }),
            "static_ipv4",
        ),
        (
            "/api/v1/subscribers",
            json!({ "username": "ok3", "password": "p", "static_ipv4": "192.0.2.5" }),
            "site_id",
        ),
        (
            "/api/v1/subscribers",
            json!({ "username": "ok4", "password": "p", "expires_at": "next tuesday" }),
            "expires_at",
        ),
        (
            "/api/v1/subscribers",
            json!({ "username": "ok5", "password": "p", "status": "expired" }),
            "status",
        ),
        (
            "/api/v1/users",
            json!({ "email": "not-an-email", "name": "x", "password": "long-enough-1", "kind": "manager" }),
            "email",
        ),
        (
            "/api/v1/users",
            json!({ "email": "x@y.test", "name": "x", "password": "short", "kind": "manager" }),
            "password",
        ),
        (
            "/api/v1/users",
            json!({ "email": "x@y.test", "name": "x", "password": "long-enough-1", "kind": "reseller", "permissions": ["view_customers"] }),
            "permissions",
        ),
        (
            "/api/v1/nas",
            json!({ "name": "n", "site_id": 2, "ip": "192.0.2.1", "secret": "short", "kind": "mikrotik" }),
            "secret",
        ),
        (
            "/api/v1/nas",
            json!({ "name": "n", "site_id": 2, "ip": "192.0.2.1", "secret": "long-secret", "kind": "mikrotik", "coa_port": 0 }),
            "coa_port",
        ),
    ];
    // A site outside the owner's part of the tree is a row it cannot see: 404, naming it.
    let (s, b) = fx
        .call(
            Who::A,
            Method::POST,
            "/api/v1/subscribers",
            Some(json!({ "username": "ok6", "password": "p", "site_id": 7 })),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "site_unavailable");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("site_id"),
        "{b}"
    );
    for (path, body, field) in cases {
        let (s, b) = fx
            .call(Who::A, Method::POST, path, Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}: {b}");
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(field),
            "{path} {body}: message {msg:?} does not name {field}"
        );
    }
    // Types serde rejects also answer 422, naming what was expected.
    let (s, b) = fx.post(Who::A, "/api/v1/nas", json!({ "name": "n", "site_id": 2, "ip": "nope", "secret": "long-secret", "kind": "mikrotik" })).await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    let (s, _) = fx.post(Who::A, "/api/v1/nas", json!({ "name": "n", "site_id": 2, "ip": "192.0.2.1", "secret": "long-secret", "kind": "cisco" })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(counts(&fx), before);
}

#[tokio::test]
async fn duplicates_are_conflicts() {
    let fx = Fixture::new();
    let (s, b) = fx
        .post(
            Who::A,
            "/api/v1/subscribers",
            json!({ "username": "SUB-B", "password": "p" }),
        )
        .await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::CONFLICT, "duplicate"),
        "usernames are unique across tenants, ignoring case"
    );
    assert!(b["error"]["message"].as_str().unwrap().contains("username"));
    let (s, b) = fx.post(Who::A, "/api/v1/users", json!({ "email": "B@fixture.test", "name": "x", "password": "long-enough-1", "kind": "manager" })).await;
    assert_error(s, &b, StatusCode::CONFLICT, "duplicate");
    let (s, _) = fx.post(Who::A, "/api/v1/subscribers", json!({ "username": "s1", "password": "p", "site_id": fx.a.site, "static_ipv4": "100.64.0.9" })).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, b) = fx.post(Who::A, "/api/v1/subscribers", json!({ "username": "s2", "password": "p", "site_id": fx.a.site, "static_ipv4": "100.64.0.9" })).await;
    assert_error(s, &b, StatusCode::CONFLICT, "duplicate");
    fx.patch_ok(
        Who::Op,
        "/api/v1/resellers/2",
        json!({ "custom_domain": "panel.a.example" }),
    )
    .await;
    let (s, b) = fx
        .patch(
            Who::Op,
            "/api/v1/resellers/4",
            json!({ "custom_domain": "PANEL.a.example" }),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "duplicate");
    let (s, r) = fx
        .patch(
            Who::Op,
            "/api/v1/resellers/2",
            json!({ "custom_domain": null }),
        )
        .await;
    assert_eq!((s, r["custom_domain"].is_null()), (StatusCode::OK, true));
    let (s, b) = fx.post(Who::A, "/api/v1/nas", json!({ "name": "dup", "site_id": fx.a.site, "ip": "198.51.100.2", "secret": "long-secret", "kind": "generic" })).await;
    assert_error(s, &b, StatusCode::CONFLICT, "duplicate");
}

#[tokio::test]
async fn limits_count_the_whole_subtree_and_refuse_clearly() {
    let fx = Fixture::new();
    // A holds 2 subscribers (its own and A1's).
    fx.patch_ok(Who::Op, "/api/v1/resellers/2", json!({ "limits": { "max_subscribers": 3, "max_sub_resellers": 1, "max_managers": 2, "max_sites": 2 } })).await;
    let (_, r) = fx.get(Who::Op, "/api/v1/resellers/2").await;
    assert_eq!(
        r["usage"],
        json!({ "subscribers": 2, "sub_resellers": 1, "managers": 2, "sites": 2 })
    );
    let (s, _) = fx
        .post(
            Who::A1,
            "/api/v1/subscribers",
            json!({ "username": "third", "password": "p" }),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "A1's subscriber is the third of A's"
    );
    let (s, b) = fx
        .post(
            Who::A,
            "/api/v1/subscribers",
            json!({ "username": "fourth", "password": "p" }),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "limit_reached");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 3 subscribers"),
        "{b}"
    );
    let (s, b) = fx
        .post(
            Who::A1,
            "/api/v1/subscribers",
            json!({ "username": "fifth", "password": "p" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "A's limit binds A1 too: {b}");
    let (s, b) = fx
        .post(
            Who::A,
            "/api/v1/resellers",
            json!({ "name": "second child" }),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "limit_reached");
    let (s, b) = fx.post(Who::A, "/api/v1/users", json!({ "email": "m3@a.test", "name": "x", "password": "long-enough-1", "kind": "manager" })).await;
    assert_error(s, &b, StatusCode::CONFLICT, "limit_reached");
    let (s, b) = fx
        .post(Who::A1, "/api/v1/sites", json!({ "name": "third site" }))
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "limit_reached");
    // A reseller cannot raise its own limits: it cannot edit its own record.
    let (s, _) = fx
        .patch(Who::A, "/api/v1/resellers/2", json!({ "limits": {} }))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_child_gets_only_features_its_parent_has() {
    let fx = Fixture::new();
    // The fixture's resellers have rebranding; take it from A first.
    fx.patch_ok(
        Who::Op,
        "/api/v1/resellers/2",
        json!({ "rebrand_enabled": false }),
    )
    .await;
    let (s, b) = fx
        .post(
            Who::A,
            "/api/v1/resellers",
            json!({ "name": "Brand", "rebrand_enabled": true }),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "feature_not_held");
    let (s, b) = fx
        .patch(
            Who::A,
            "/api/v1/resellers/3",
            json!({ "wan_check_enabled": true }),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "feature_not_held");
    fx.patch_ok(
        Who::Op,
        "/api/v1/resellers/2",
        json!({ "rebrand_enabled": true, "wan_check_enabled": true }),
    )
    .await;
    fx.patch_ok(
        Who::A,
        "/api/v1/resellers/3",
        json!({ "wan_check_enabled": true, "rebrand_enabled": true }),
    )
    .await;
}

#[tokio::test]
async fn cursor_paging_walks_everything_once_and_search_filters() {
    let fx = Fixture::new();
    for i in 0..23 {
        let (s, _) = fx.post(Who::B, "/api/v1/subscribers", json!({ "username": format!("page{i:02}"), "password": "p", "name": if i % 5 == 0 { "Zora Quill" } else { "Someone" } })).await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/subscribers?limit=10&cursor={c}"),
            None => "/api/v1/subscribers?limit=10".to_string(),
        };
        let (s, p) = fx.get(Who::B, &path).await;
        assert_eq!(s, StatusCode::OK);
        pages += 1;
        seen.extend(
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_i64().unwrap()),
        );
        match p["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(
        (pages, seen.len()),
        (3, 24),
        "B's own fixture subscriber plus 23"
    );
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len());
    let (_, found) = fx.get(Who::B, "/api/v1/subscribers?q=zora").await;
    assert_eq!(found["items"].as_array().unwrap().len(), 5);
    // Search never crosses the tree: A searching B's names finds nothing.
    let (_, found) = fx.get(Who::A, "/api/v1/subscribers?q=zora").await;
    assert_eq!(found["items"], json!([]));
    let (_, susp) = fx.get(Who::B, "/api/v1/subscribers?status=suspended").await;
    assert_eq!(susp["items"], json!([]));
}

#[tokio::test]
async fn whole_numbers_written_as_floats_are_integers_and_fractions_are_refused() {
    let fx = Fixture::new();
    let (s, b) = fx
        .call(
            Who::A,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "float days", "expires_in_days": 30.0 })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = fx
        .call(
            Who::A,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "half days", "expires_in_days": 30.5 })),
        )
        .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expires_in_days"),
        "the message names the field: {b}"
    );
}

/// The list's search reads candidates from the trigram index (three characters or more)
/// and still checks each with `instr`: it finds what it found before, in any case,
/// follows edits, treats FTS syntax in the query as plain text, and never crosses the
/// tree.
#[tokio::test]
async fn search_finds_the_same_through_the_index_and_follows_edits() {
    let fx = Fixture::new();
    let (s, b) = fx
        .post(
            Who::A,
            "/api/v1/subscribers",
            json!({ "username": "search-me", "password": "pw-123456", "name": "Ona O'Brien \"Quote\"",
                    "phone": "+44 20 7946 0001", "mac": "AA:BB:CC:DD:EE:01" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let id = b["id"].as_i64().unwrap();
    let found = |who: Who, q: &'static str| {
        let fx = &fx;
        async move {
            let q = q
                .replace(' ', "%20")
                .replace('"', "%22")
                .replace('+', "%2B");
            let (s, p) = fx.get(who, &format!("/api/v1/subscribers?q={q}")).await;
            assert_eq!(s, StatusCode::OK, "{q}: {p}");
            let ids: Vec<i64> = p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_i64().unwrap())
                .collect();
            ids
        }
    };
    for q in [
        "search-me",
        "SEARCH",
        "o'brien",
        "\"quote\"",
        "7946 0001",
        "aa:bb:cc:dd:ee:01",
        "ch-m",
        "se",
    ] {
        assert_eq!(found(Who::A, q).await, vec![id], "{q}");
    }
    // FTS5 syntax is text here: no error, and nothing matches it.
    for q in ["a\" OR \"b", "NEAR(x y)", "zz", "*"] {
        assert!(found(Who::A, q).await.is_empty(), "{q}");
    }
    // Another reseller's users never find it.
    assert!(found(Who::B, "search-me").await.is_empty());
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/subscribers/{id}"),
        json!({ "name": "Renamed Person" }),
    )
    .await;
    assert!(found(Who::A, "o'brien").await.is_empty());
    assert_eq!(found(Who::A, "renamed").await, vec![id]);
}
