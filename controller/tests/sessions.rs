//! Sessions, API tokens, throttling, allowed IPs, trusted proxies, disabled tenants,
//! password changes and impersonation.

mod common;

use std::net::IpAddr;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use common::{Fixture, PASSWORD, Who, assert_error, error_code};
use outpost_testkit::api::cookie_of;
use serde_json::{Value, json};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn login(
    fx: &Fixture,
    email: &str,
    password: &str,
    from: &str,
) -> (StatusCode, HeaderMap, Value) {
    let req = Request::post("/api/v1/session")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "sessions-test")
        .body(Body::from(
            json!({ "email": email, "password": password }).to_string(),
        ))
        .unwrap();
    fx.send(req, ip(from)).await
}

async fn with_cookie(
    fx: &Fixture,
    cookie: &str,
    method: Method,
    path: &str,
    from: &str,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    let (s, _, v) = fx.send(req, ip(from)).await;
    (s, v)
}

async fn with_bearer(fx: &Fixture, secret: &str, path: &str, from: &str) -> StatusCode {
    let req = Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {secret}"))
        .body(Body::empty())
        .unwrap();
    fx.send(req, ip(from)).await.0
}

const HOME: &str = common::CLIENT_IP;

#[tokio::test]
async fn login_sets_a_strict_httponly_cookie_and_stores_only_a_hash() {
    let fx = Fixture::new();
    let (s, h, me) = login(&fx, "A@fixture.test", PASSWORD, HOME).await; // email is case-insensitive
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["email"], "a@fixture.test");
    assert_eq!(me["tenant"]["id"], 2);
    let set = h.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(set.contains("Path=/"), "{set}");
    let cookie = cookie_of(&h);
    let token = cookie.split_once('=').unwrap().1.to_string();
    assert!(token.starts_with("ops_") && token.len() > 40);
    let (s, me) = with_cookie(&fx, &cookie, Method::GET, "/api/v1/me", HOME).await;
    assert_eq!(
        (s, me["user"]["id"].as_i64()),
        (StatusCode::OK, Some(fx.user_id(Who::A)))
    );
    // Only the SHA-256 of the token is in the database.
    let raw = std::fs::read(fx.dir.path().join("controller.db")).unwrap();
    let wal = std::fs::read(fx.dir.path().join("controller.db-wal")).unwrap_or_default();
    for bytes in [&raw, &wal] {
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "the clear token is stored"
        );
    }
    let hash = outpost_controller::crypto::sha256(token.as_bytes());
    let found = fx
        .state
        .db
        .write_blocking(move |tx| {
            Ok(tx.query_row(
                "SELECT count(*) FROM sessions WHERE token_hash = ?1",
                [hash],
                |r| r.get::<_, i64>(0),
            )?)
        })
        .unwrap();
    assert_eq!(found, 1);
    // Logout ends it.
    let (s, _) = with_cookie(&fx, &cookie, Method::DELETE, "/api/v1/session", HOME).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = with_cookie(&fx, &cookie, Method::GET, "/api/v1/me", HOME).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn api_tokens_work_as_bearer_are_hashed_and_revocable() {
    let fx = Fixture::new();
    let (s, t) = fx
        .post(Who::B, "/api/v1/tokens", json!({ "name": "billing sync" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let secret = t["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("opt_"));
    assert_eq!(
        with_bearer(&fx, &secret, "/api/v1/subscribers", HOME).await,
        StatusCode::OK
    );
    let (_, list) = fx.get(Who::B, "/api/v1/tokens").await;
    assert!(
        !list.to_string().contains(&secret),
        "a listed token shows its secret"
    );
    let id = t["id"].as_i64().unwrap();
    let (s, _) = fx
        .call(
            Who::B,
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        with_bearer(&fx, &secret, "/api/v1/subscribers", HOME).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        with_bearer(&fx, "opt_forged", "/api/v1/subscribers", HOME).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        with_bearer(&fx, "garbage", "/api/v1/subscribers", HOME).await,
        StatusCode::UNAUTHORIZED
    );
    let (s, b) = fx
        .post(
            Who::B,
            "/api/v1/tokens",
            json!({ "name": "x", "expires_in_days": 0 }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
}

#[tokio::test]
async fn repeated_failures_are_throttled_and_recorded() {
    let fx = Fixture::new();
    for _ in 0..5 {
        let (s, _, b) = login(&fx, "a@fixture.test", "wrong-password", HOME).await;
        assert_error(s, &b, StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    // Even the right password is refused now, with a Retry-After.
    let (s, h, b) = login(&fx, "a@fixture.test", PASSWORD, HOME).await;
    assert_error(s, &b, StatusCode::TOO_MANY_REQUESTS, "throttled");
    let wait: u64 = h
        .get(header::RETRY_AFTER)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&wait));
    assert_eq!(
        fx.query_i64(
            "SELECT count(*) FROM audit_log WHERE security = 1 AND action = 'security.login_failed'"
        ),
        5
    );
    assert_eq!(fx.query_i64("SELECT count(*) FROM audit_log WHERE security = 1 AND action = 'security.login_throttled'"), 1);
    // Another account is unaffected; an unknown email fails the same way as a wrong password.
    let (s, _, _) = login(&fx, "b@fixture.test", PASSWORD, HOME).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, b) = login(&fx, "nobody@fixture.test", PASSWORD, HOME).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "invalid_credentials");
}

#[tokio::test]
async fn one_address_spraying_many_accounts_is_throttled() {
    let fx = Fixture::with_config(|c| c.auth.max_failures_per_ip = 4);
    for i in 0..4 {
        let (s, _, _) = login(
            &fx,
            &format!("user{i}@fixture.test"),
            "wrong-password",
            "192.0.2.50",
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, _, _) = login(&fx, "b@fixture.test", PASSWORD, "192.0.2.50").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let (s, _, _) = login(&fx, "b@fixture.test", PASSWORD, "192.0.2.51").await;
    assert_eq!(s, StatusCode::OK, "another address is not throttled");
}

#[tokio::test]
async fn allowed_ips_bind_the_reseller_and_everything_below_it() {
    let fx = Fixture::new();
    let (s, r) = fx
        .patch(
            Who::Op,
            "/api/v1/resellers/2",
            json!({ "allowed_ips": ["198.51.100.0/24", "2001:db8::/32"] }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    // A's user, A1's user (a descendant) and A's manager are all bound; B is not.
    for email in ["a@fixture.test", "a1@fixture.test", "m@fixture.test"] {
        let (s, _, b) = login(&fx, email, PASSWORD, "203.0.113.99").await;
        assert_eq!(
            (s, error_code(&b).as_str()),
            (StatusCode::FORBIDDEN, "ip_not_allowed"),
            "{email}"
        );
        let (s, _, _) = login(&fx, email, PASSWORD, "198.51.100.7").await;
        assert_eq!(s, StatusCode::OK, "{email} from an allowed address");
    }
    let (s, _, _) = login(&fx, "b@fixture.test", PASSWORD, "203.0.113.99").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM audit_log WHERE security = 1 AND action = 'security.ip_not_allowed'"),
        3
    );
}

#[tokio::test]
async fn a_session_that_moves_to_a_refused_address_is_cut() {
    let fx = Fixture::new();
    fx.patch_ok(
        Who::Op,
        "/api/v1/resellers/2",
        json!({ "allowed_ips": ["198.51.100.0/24"] }),
    )
    .await;
    let (s, h, _) = login(&fx, "a1@fixture.test", PASSWORD, "198.51.100.7").await;
    assert_eq!(s, StatusCode::OK);
    let cookie = cookie_of(&h);
    assert_eq!(
        with_cookie(&fx, &cookie, Method::GET, "/api/v1/me", "198.51.100.8")
            .await
            .0,
        StatusCode::OK
    );
    let (s, b) = with_cookie(&fx, &cookie, Method::GET, "/api/v1/me", "192.0.2.1").await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "ip_not_allowed");
    // The session is gone, even back at an allowed address.
    assert_eq!(
        with_cookie(&fx, &cookie, Method::GET, "/api/v1/me", "198.51.100.7")
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let last = fx.audit_tail().1.unwrap();
    assert_eq!(
        (last.0, last.1.as_str(), last.2),
        (Some(fx.user_id(Who::A1)), "security.ip_not_allowed", true)
    );
}

#[tokio::test]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    let fx =
        Fixture::with_config(|c| c.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]);
    fx.patch_ok(
        Who::Op,
        "/api/v1/resellers/4",
        json!({ "allowed_ips": ["198.51.100.0/24"] }),
    )
    .await;
    let req = |xff: &str| {
        Request::post("/api/v1/session")
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-forwarded-for", xff)
            .body(Body::from(
                json!({ "email": "b@fixture.test", "password": PASSWORD }).to_string(),
            ))
            .unwrap()
    };
    // Through the trusted proxy, the forwarded client address is the one checked.
    assert_eq!(
        fx.send(req("198.51.100.9"), ip("127.0.0.1")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        fx.send(req("192.0.2.9"), ip("127.0.0.1")).await.0,
        StatusCode::FORBIDDEN
    );
    // From anyone else the header is ignored: a forged allowed address does not help.
    assert_eq!(
        fx.send(req("198.51.100.9"), ip("192.0.2.9")).await.0,
        StatusCode::FORBIDDEN
    );
    let (_, audit) = fx
        .get(Who::Op, "/api/v1/audit?action=security.ip_not_allowed")
        .await;
    let ips: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, vec!["192.0.2.9", "192.0.2.9"]);
}

#[tokio::test]
async fn disabling_a_reseller_locks_out_its_whole_subtree() {
    let fx = Fixture::new();
    fx.patch_ok(
        Who::Op,
        "/api/v1/resellers/2",
        json!({ "status": "disabled" }),
    )
    .await;
    for who in [Who::A, Who::A1, Who::M] {
        let (s, b) = fx.get(who, "/api/v1/me").await;
        assert_eq!(
            (s, error_code(&b).as_str()),
            (StatusCode::FORBIDDEN, "account_disabled"),
            "{who:?}"
        );
    }
    let (s, _, b) = login(&fx, "a1@fixture.test", PASSWORD, HOME).await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "account_disabled");
    assert_eq!(fx.get(Who::B, "/api/v1/me").await.0, StatusCode::OK);
    fx.patch_ok(
        Who::Op,
        "/api/v1/resellers/2",
        json!({ "status": "active" }),
    )
    .await;
    assert_eq!(fx.get(Who::A1, "/api/v1/me").await.0, StatusCode::OK);
}

#[tokio::test]
async fn disabling_a_user_or_resetting_its_password_ends_its_sessions() {
    let fx = Fixture::new();
    let m = fx.user_id(Who::M);
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/users/{m}"),
        json!({ "password": "reset-password-1" }),
    )
    .await;
    assert_eq!(
        fx.get(Who::M, "/api/v1/me").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, _, _) = login(&fx, "m@fixture.test", "reset-password-1", HOME).await;
    assert_eq!(s, StatusCode::OK);
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/users/{m}"),
        json!({ "status": "disabled" }),
    )
    .await;
    let (s, _, b) = login(&fx, "m@fixture.test", "reset-password-1", HOME).await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "account_disabled");
    // Nobody disables themselves by accident.
    let (s, _) = fx
        .call(
            Who::A,
            Method::PATCH,
            &format!("/api/v1/users/{}", fx.user_id(Who::A)),
            Some(json!({ "status": "disabled" })),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn changing_your_password_keeps_this_session_and_ends_the_others() {
    let fx = Fixture::new();
    let (_, h, _) = login(&fx, "b@fixture.test", PASSWORD, HOME).await;
    let other = cookie_of(&h);
    let (s, b) = fx
        .call(
            Who::B,
            Method::PUT,
            "/api/v1/me/password",
            Some(json!({ "current_password": "nope-nope-nope", "new_password": "brand-new-pass" })),
        )
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "wrong_password");
    let (s, _) = fx
        .call(
            Who::B,
            Method::PUT,
            "/api/v1/me/password",
            Some(json!({ "current_password": PASSWORD, "new_password": "short" })),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = fx
        .call(
            Who::B,
            Method::PUT,
            "/api/v1/me/password",
            Some(json!({ "current_password": PASSWORD, "new_password": "brand-new-pass" })),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(fx.get(Who::B, "/api/v1/me").await.0, StatusCode::OK);
    assert_eq!(
        with_cookie(&fx, &other, Method::GET, "/api/v1/me", HOME)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&fx, "b@fixture.test", PASSWORD, HOME).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&fx, "b@fixture.test", "brand-new-pass", HOME).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn impersonation_is_recorded_on_every_entry() {
    let fx = Fixture::new();
    let target = fx.a.manager;
    let (s, h, me) = {
        let req = Request::post(format!("/api/v1/users/{target}/impersonate"))
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", fx.secret(Who::A).unwrap()),
            )
            .body(Body::empty())
            .unwrap();
        fx.send(req, ip(HOME)).await
    };
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["id"], target);
    assert!(
        me["impersonator"]
            .as_str()
            .unwrap()
            .contains("a@fixture.test")
    );
    let cookie = cookie_of(&h);
    // The impersonated manager has suspend/reconnect: use it, then read the entry.
    let req = Request::patch(format!("/api/v1/subscribers/{}", fx.a.subscriber))
        .header(header::COOKIE, &cookie)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "status": "suspended" }).to_string()))
        .unwrap();
    assert_eq!(fx.send(req, ip(HOME)).await.0, StatusCode::OK);
    let (actor, _, _, imp) = fx.audit_tail().1.unwrap();
    assert_eq!((actor, imp), (Some(target), Some(fx.user_id(Who::A))));
    // An impersonated session cannot impersonate further, nor change the password.
    let (s, _) = with_cookie(
        &fx,
        &cookie,
        Method::POST,
        &format!("/api/v1/users/{}/impersonate", fx.a1.manager),
        HOME,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Nobody impersonates operator staff.
    let (s, _) = fx
        .call(
            Who::Op,
            Method::POST,
            &format!("/api/v1/users/{}/impersonate", fx.user_id(Who::Op)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

/// Sends `n` logins at once straight to the router; returns the statuses.
async fn concurrent_logins(
    app: &axum::Router,
    n: usize,
    attempt: impl Fn(usize) -> (String, String, String),
) -> Vec<u16> {
    use tower::ServiceExt;
    let mut tasks = Vec::new();
    for i in 0..n {
        let (email, password, from) = attempt(i);
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut req = Request::post("/api/v1/session")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({ "email": email, "password": password }).to_string(),
                ))
                .unwrap();
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(std::net::SocketAddr::new(
                    ip(&from),
                    40000,
                )));
            app.oneshot(req).await.unwrap().status().as_u16()
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn count(statuses: &[u16], s: u16) -> usize {
    statuses.iter().filter(|x| **x == s).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_passwords_cannot_outrun_the_throttle() {
    let fx = Fixture::new();
    // 200 at once for one account from one address: exactly the limit is judged.
    let one = concurrent_logins(&fx.app, 200, |_| {
        (
            "a@fixture.test".into(),
            "wrong-password".into(),
            "192.0.2.60".into(),
        )
    })
    .await;
    assert_eq!(count(&one, 401), 5, "{one:?}");
    assert_eq!(
        count(&one, 401) + count(&one, 429) + count(&one, 503),
        200,
        "{one:?}"
    );
    // 200 at once from one address over many accounts: the address's limit.
    let spray = concurrent_logins(&fx.app, 200, |i| {
        (
            format!("nobody{i}@fixture.test"),
            "wrong-password".into(),
            "192.0.2.61".into(),
        )
    })
    .await;
    assert_eq!(count(&spray, 401), 20, "{spray:?}");
    assert_eq!(
        count(&spray, 401) + count(&spray, 429) + count(&spray, 503),
        200
    );
}

#[tokio::test]
async fn a_guesser_elsewhere_does_not_lock_the_owner_out() {
    let fx = Fixture::new();
    // The owner has logged in from home before.
    let (s, _, _) = login(&fx, "a@fixture.test", PASSWORD, "203.0.113.10").await;
    assert_eq!(s, StatusCode::OK);
    // A guesser from one address, then from many, until every counter is past its limit.
    for i in 0..60 {
        login(
            &fx,
            "a@fixture.test",
            "wrong-password",
            &format!("198.51.100.{}", i / 5),
        )
        .await;
    }
    let (s, _, _) = login(&fx, "a@fixture.test", PASSWORD, "198.51.100.0").await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "the guesser's address stays held back"
    );
    let (s, _, _) = login(&fx, "a@fixture.test", PASSWORD, "192.0.2.200").await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "a new address for the attacked account waits"
    );
    let (s, _, b) = login(&fx, "a@fixture.test", PASSWORD, "203.0.113.10").await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the owner at a known address gets in: {b}"
    );
}

#[tokio::test]
async fn a_noisy_neighbour_does_not_lock_out_known_users_behind_the_same_address() {
    let fx = Fixture::with_config(|c| c.auth.max_failures_per_ip = 4);
    let nat = "192.0.2.70";
    let (s, _, _) = login(&fx, "b@fixture.test", PASSWORD, nat).await;
    assert_eq!(s, StatusCode::OK);
    for i in 0..8 {
        login(&fx, &format!("user{i}@fixture.test"), "wrong-password", nat).await;
    }
    let (s, _, _) = login(&fx, "a1@fixture.test", PASSWORD, nat).await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "an account new to the address waits"
    );
    let (s, _, b) = login(&fx, "b@fixture.test", PASSWORD, nat).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a user known at the address gets in: {b}"
    );
}

#[tokio::test]
async fn the_throttle_survives_a_restart() {
    let fx = Fixture::new();
    for _ in 0..5 {
        login(&fx, "a@fixture.test", "wrong-password", "192.0.2.80").await;
    }
    // A second controller on the same data directory: what a restart sees.
    let state = outpost_controller::bootstrap::open(common::test_config(fx.dir.path())).unwrap();
    let restarted = outpost_controller::app(state);
    let statuses = concurrent_logins(&restarted, 1, |_| {
        (
            "a@fixture.test".into(),
            PASSWORD.into(),
            "192.0.2.80".into(),
        )
    })
    .await;
    assert_eq!(statuses, [429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_checks_in_flight_are_bounded() {
    // One check at a time, two waiting, and a cost that makes checks overlap.
    let fx = Fixture::with_config(|c| {
        c.auth.max_concurrent_password_checks = 1;
        c.auth.max_queued_password_checks = 2;
        c.auth.argon2_memory_kib = 32 * 1024;
        c.auth.argon2_iterations = 2;
    });
    let statuses = concurrent_logins(&fx.app, 40, |i| {
        (
            format!("nobody{i}@fixture.test"),
            "wrong-password".into(),
            format!("198.51.100.{i}"),
        )
    })
    .await;
    assert!(count(&statuses, 503) > 0, "{statuses:?}");
    assert_eq!(
        count(&statuses, 401) + count(&statuses, 503),
        40,
        "{statuses:?}"
    );
    // Refused attempts were not counted: each address may still try.
    let (s, _, _) = login(&fx, "a@fixture.test", PASSWORD, "198.51.100.1").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let fx = Fixture::new();
    let secret = fx.secret(Who::A).unwrap();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let req = Request::get("/api/v1/me")
            .header(header::AUTHORIZATION, format!("{scheme} {secret}"))
            .body(Body::empty())
            .unwrap();
        let (s, _, b) = fx.send(req, ip("203.0.113.10")).await;
        assert_eq!(s, StatusCode::OK, "{scheme}: {b}");
    }
    let req = Request::get("/api/v1/me")
        .header(header::AUTHORIZATION, format!("Basic {secret}"))
        .body(Body::empty())
        .unwrap();
    let (s, _, _) = fx.send(req, ip("203.0.113.10")).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "another scheme is not a bearer"
    );
}

#[tokio::test]
async fn revoking_a_revoked_token_answers_the_same_and_is_recorded_once() {
    let fx = Fixture::new();
    let id = fx.tokens[&Who::A];
    let path = format!("/api/v1/tokens/{id}");
    let (s1, _) = fx.call(Who::A, Method::DELETE, &path, None).await;
    let entries = fx.query_i64("SELECT count(*) FROM audit_log WHERE action = 'api_token.revoke'");
    let (s2, _) = fx.call(Who::A, Method::DELETE, &path, None).await;
    assert_eq!((s1, s2), (StatusCode::NO_CONTENT, StatusCode::NO_CONTENT));
    assert_eq!(entries, 1);
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM audit_log WHERE action = 'api_token.revoke'"),
        1,
        "no second entry"
    );
}

#[tokio::test]
async fn a_wrong_method_and_an_oversized_body_answer_the_error_body() {
    let fx = Fixture::new();
    let (s, b) = fx.call(Who::A, Method::PUT, "/api/v1/me", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&b), "method_not_allowed");
    let big = "x".repeat(3 * 1024 * 1024);
    let (s, b) = fx
        .call(
            Who::A,
            Method::PATCH,
            &format!("/api/v1/subscribers/{}", fx.a.subscriber),
            Some(json!({ "notes": big })),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert_eq!(error_code(&b), "body_too_large");
}
