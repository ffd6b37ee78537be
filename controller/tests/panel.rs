//! The panel over HTTP (no browser): every panel route in an authorization matrix like
//! the API's, CSRF refusals, idempotent money forms, "log in as" and back, and branding
//! by Host. The browser tests are in `tests/tests/panel_browser.rs`.

mod common;

use std::net::IpAddr;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use common::{ACTORS, Fixture, Holdings, PASSWORD, Who};
use outpost_controller::panel::{self, LOGIN_CSRF_COOKIE, csrf_token};
use serde_json::json;

fn ip() -> IpAddr {
    common::CLIENT_IP.parse().unwrap()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How a request is made.
#[derive(Default)]
struct Opts<'a> {
    /// The session cookie's secret.
    session: Option<String>,
    /// The form fields (a POST), without the CSRF token.
    form: Option<Vec<(&'a str, String)>>,
    /// The CSRF token to send: `None` = the session's own.
    csrf: Option<Option<String>>,
    host: Option<&'a str>,
    cookies: Vec<(String, String)>,
}

/// Sends one panel request; status, headers and the body as text.
async fn page(
    fx: &Fixture,
    method: Method,
    path: &str,
    o: Opts<'_>,
) -> (StatusCode, HeaderMap, String) {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::USER_AGENT, "panel-tests");
    if let Some(h) = o.host {
        b = b.header(header::HOST, h);
    }
    let mut cookies = o.cookies.clone();
    if let Some(s) = &o.session {
        cookies.push(("outpost_session".into(), s.clone()));
    }
    if !cookies.is_empty() {
        let c: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        b = b.header(header::COOKIE, c.join("; "));
    }
    let req = match &o.form {
        Some(fields) => {
            let csrf = match &o.csrf {
                Some(c) => c.clone(),
                None => o.session.as_deref().map(csrf_token),
            };
            let mut all: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                .collect();
            if let Some(c) = csrf {
                all.push(format!("csrf={}", enc(&c)));
            }
            b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(all.join("&")))
                .unwrap()
        }
        None => b.body(Body::empty()).unwrap(),
    };
    let (status, headers, v) = fx.send(req, ip()).await;
    let text = match v {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    (status, headers, text)
}

fn as_who(fx: &Fixture, who: Who) -> Option<String> {
    fx.secret(who)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Own,
    Other,
}

fn holdings(fx: &Fixture, who: Who, t: Target) -> Holdings {
    match (who, t) {
        (Who::Op | Who::A | Who::M | Who::Anon, Target::Own) => fx.a,
        (Who::A1, Target::Own) => fx.a1,
        (Who::B, Target::Own) => fx.b,
        (Who::Op | Who::A | Who::Anon, Target::Other) => fx.b,
        (Who::A1 | Who::B, Target::Other) => fx.a,
        // A manager of A must not reach its sub-reseller's rows.
        (Who::M, Target::Other) => fx.a1,
    }
}

type Cells = [[u16; 2]; 6];

/// Expected statuses per actor, `[own, other]`, as in `authz_matrix.rs` (0 = no such
/// cell). Actor order: operator staff, reseller A, sub-reseller A1, manager of A
/// (view/create customers, suspend/reconnect), reseller B, anonymous. Pages answer
/// 200; a form that worked redirects (303); an anonymous page visit is sent to the login
/// form (303), an anonymous form is a 401 page.
#[rustfmt::skip]
const MATRIX: &[(&str, &str, Cells)] = &[
    //                                                   Op          A           A1          M(of A)     B           anon
    ("GET", "/panel",                                  [[200, 200], [200, 404], [200, 404], [200, 404], [200, 404], [303, 303]]),
    ("GET", "/panel/login",                            [[303, 0],   [303, 0],   [303, 0],   [303, 0],   [303, 0],   [200, 0]]),
    ("POST", "/panel/login",                           [[303, 401], [303, 401], [303, 401], [303, 401], [303, 401], [303, 401]]),
    ("POST", "/panel/logout",                          [[303, 0],   [303, 0],   [303, 0],   [303, 0],   [303, 0],   [401, 0]]),
    ("GET", "/panel/subscribers",                      [[200, 0],   [200, 0],   [200, 0],   [200, 0],   [200, 0],   [303, 0]]),
    ("GET", "/panel/subscribers/{id}",                 [[200, 200], [200, 404], [200, 404], [200, 404], [200, 404], [303, 303]]),
    ("POST", "/panel/subscribers/{id}/status",         [[303, 303], [303, 404], [303, 404], [303, 404], [303, 404], [401, 401]]),
    ("POST", "/panel/subscribers/{id}/renew",          [[303, 303], [303, 404], [303, 404], [403, 403], [303, 404], [401, 401]]),
    ("POST", "/panel/subscribers/{id}/payments",       [[303, 303], [303, 404], [303, 404], [403, 403], [303, 404], [401, 401]]),
    ("GET", "/panel/users",                            [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [303, 0]]),
    ("GET", "/panel/resellers",                        [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [303, 0]]),
    ("GET", "/panel/audit",                            [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [303, 0]]),
    ("GET", "/panel/wan",                              [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [303, 0]]),
    ("GET", "/panel/reports",                          [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [303, 303]]),
    ("GET", "/panel/reports.csv",                      [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [303, 303]]),
    ("POST", "/panel/users/{id}/impersonate",          [[303, 303], [303, 404], [303, 404], [403, 403], [303, 404], [401, 401]]),
    ("POST", "/panel/impersonation/end",               [[422, 0],   [422, 0],   [422, 0],   [422, 0],   [422, 0],   [401, 0]]),
    ("GET", "/panel/assets/{hash}/{file}",             [[200, 404], [200, 404], [200, 404], [200, 404], [200, 404], [200, 404]]),
];

/// Builds one cell's path and form. `Other` of the asset route is a stale hash.
fn cell(
    fx: &Fixture,
    method: &str,
    route: &str,
    who: Who,
    t: Target,
) -> (String, Option<Vec<(&'static str, String)>>) {
    let h = holdings(fx, who, t);
    let key = outpost_controller::crypto::new_bearer("pk_");
    let form: Option<Vec<(&'static str, String)>> = match (method, route) {
        ("POST", "/panel/login") => {
            let email = fx
                .emails
                .get(&who)
                .cloned()
                .unwrap_or_else(|| fx.emails[&Who::A].clone());
            let pw = if t == Target::Own {
                PASSWORD
            } else {
                "wrong-password"
            };
            Some(vec![("email", email), ("password", pw.to_string())])
        }
        ("POST", "/panel/subscribers/{id}/status") => Some(vec![("status", "suspended".into())]),
        ("POST", "/panel/subscribers/{id}/renew") => {
            Some(vec![("key", key), ("periods", "1".into())])
        }
        ("POST", "/panel/subscribers/{id}/payments") => Some(vec![
            ("key", key),
            ("amount", "25.00".into()),
            ("method", "cash".into()),
            ("reference", "R-1".into()),
        ]),
        ("POST", _) => Some(vec![]),
        _ => None,
    };
    let path = match route {
        "/panel" | "/panel/reports" | "/panel/reports.csv" => {
            format!("{route}?tenant_id={}", h.tenant)
        }
        "/panel/assets/{hash}/{file}" => {
            if t == Target::Own {
                panel::css_url()
            } else {
                "/panel/assets/000000000000/panel.css".into()
            }
        }
        "/panel/users/{id}/impersonate" => route.replace("{id}", &h.manager.to_string()),
        r => r.replace("{id}", &h.subscriber.to_string()),
    };
    (path, form)
}

#[tokio::test]
async fn panel_authorization_matrix() {
    let mut failures = Vec::new();
    let mut cells = 0;
    for (method, route, expect) in MATRIX {
        for (wi, who) in ACTORS.into_iter().enumerate() {
            for (ti, t) in [Target::Own, Target::Other].into_iter().enumerate() {
                let want = expect[wi][ti];
                if want == 0 {
                    continue;
                }
                cells += 1;
                let fx = Fixture::new();
                let (path, form) = cell(&fx, method, route, who, t);
                let login = *route == "/panel/login" && *method == "POST";
                // The login form is posted without a session, with its double-submit cookie.
                let opts = if login {
                    Opts {
                        form,
                        csrf: Some(Some("login-csrf-1".into())),
                        cookies: vec![(LOGIN_CSRF_COOKIE.into(), "login-csrf-1".into())],
                        ..Default::default()
                    }
                } else {
                    Opts {
                        session: as_who(&fx, who),
                        form,
                        ..Default::default()
                    }
                };
                let (before, _) = fx.audit_tail();
                let m = Method::from_bytes(method.as_bytes()).unwrap();
                let (status, headers, body) = page(&fx, m.clone(), &path, opts).await;
                let name = format!("{method} {path} as {who:?} ({t:?})");
                if status.as_u16() != want {
                    failures.push(format!(
                        "{name}: want {want}, got {} {}",
                        status.as_u16(),
                        &body[..body.len().min(300)]
                    ));
                    continue;
                }
                // Refusals are pages in the panel's frame, never the API's JSON.
                // (A refused login is the login form again, with the reason and the status.)
                if status.is_client_error() && !route.starts_with("/panel/assets") && !login {
                    let html = headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if !html.starts_with("text/html")
                        || !body.contains(&format!("data-status=\"{want}\""))
                    {
                        failures.push(format!(
                            "{name}: the refusal is not an error page: {html} {body}"
                        ));
                    }
                }
                let (after, last) = fx.audit_tail();
                let delta = after - before;
                let expected_actor = if login {
                    fx.users.get(&who).or(fx.users.get(&Who::A)).map(|u| u.0)
                } else {
                    fx.users.get(&who).map(|u| u.0)
                };
                if m == Method::POST && status == StatusCode::SEE_OTHER {
                    let (actor, action, _, _) = last.clone().unwrap();
                    if delta != 1 || actor != expected_actor {
                        failures.push(format!("{name}: want 1 audit entry by {expected_actor:?}, got {delta} (last {action} by {actor:?})"));
                    }
                } else if m == Method::GET && delta != 0 {
                    failures.push(format!("{name}: a page view wrote {delta} audit entries"));
                }
            }
        }
    }
    assert!(cells > 100, "matrix ran only {cells} cells");
    assert!(
        failures.is_empty(),
        "{} of {cells} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every panel route has a matrix row, and every row is a panel route.
#[test]
fn panel_matrix_covers_every_panel_route() {
    let rows: std::collections::BTreeSet<(&str, &str)> =
        MATRIX.iter().map(|(m, p, _)| (*m, *p)).collect();
    let routes: std::collections::BTreeSet<(&str, &str)> = panel::ROUTES.iter().copied().collect();
    assert_eq!(rows.len(), MATRIX.len(), "a duplicate row");
    assert_eq!(rows, routes);
}

/// A manager's menu holds only what it was granted, and the page it lacks is a 403 page.
#[tokio::test]
async fn the_menu_shows_only_granted_functions() {
    let fx = Fixture::new();
    let (s, _, manager) = page(
        &fx,
        Method::GET,
        "/panel",
        Opts {
            session: as_who(&fx, Who::M),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let menu = |html: &str| {
        html.split("<nav id=\"menu\">")
            .nth(1)
            .and_then(|r| r.split("</nav>").next())
            .unwrap_or("")
            .to_string()
    };
    let m = menu(&manager);
    assert!(m.contains("/panel/subscribers"), "{m}");
    assert!(!m.contains("/panel/users"), "{m}");
    let (_, _, reseller) = page(
        &fx,
        Method::GET,
        "/panel",
        Opts {
            session: as_who(&fx, Who::A),
            ..Default::default()
        },
    )
    .await;
    assert!(menu(&reseller).contains("/panel/users"));
    let (s, _, body) = page(
        &fx,
        Method::GET,
        "/panel/users",
        Opts {
            session: as_who(&fx, Who::M),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body.contains("manage_staff"), "{body}");
}

/// A form without its token, or with another session's, is refused with a 403 page and
/// changes nothing.
#[tokio::test]
async fn forms_without_their_csrf_token_are_refused() {
    let fx = Fixture::new();
    let path = format!("/panel/subscribers/{}/status", fx.a.subscriber);
    let form = || Some(vec![("status", "suspended".to_string())]);
    let (before, _) = fx.audit_tail();
    for csrf in [
        None,
        Some(csrf_token(&fx.secret(Who::B).unwrap())),
        Some(String::new()),
    ] {
        let (s, _, body) = page(
            &fx,
            Method::POST,
            &path,
            Opts {
                session: as_who(&fx, Who::A),
                form: form(),
                csrf: Some(csrf),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("data-status=\"403\""), "{body}");
    }
    assert_eq!(
        fx.audit_tail().0,
        before,
        "a refused form changed something"
    );
    let (s, _, _) = page(
        &fx,
        Method::POST,
        &path,
        Opts {
            session: as_who(&fx, Who::A),
            form: form(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    // The login form without its double-submit cookie.
    let (s, _, _) = page(
        &fx,
        Method::POST,
        "/panel/login",
        Opts {
            form: Some(vec![
                ("email", fx.emails[&Who::A].clone()),
                ("password", PASSWORD.into()),
            ]),
            csrf: Some(Some("made-up".into())),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

fn balance(fx: &Fixture, tenant: i64) -> i64 {
    fx.query_i64(&format!("SELECT balance FROM tenants WHERE id = {tenant}"))
}

/// Submitting the same renewal form twice charges once; the detail page shows the
/// owner's balance moving.
#[tokio::test]
async fn a_double_submitted_renewal_charges_once() {
    let fx = Fixture::new();
    let sub = fx.a.subscriber;
    let before = balance(&fx, 2);
    let renewals = || {
        fx.query_i64(&format!(
            "SELECT count(*) FROM renewals WHERE subscriber_id = {sub}"
        ))
    };
    let form = vec![("key", "form-key-1".to_string()), ("periods", "1".into())];
    let renew_path = format!("/panel/subscribers/{sub}/renew");
    let post = |form: Vec<(&'static str, String)>| {
        page(
            &fx,
            Method::POST,
            &renew_path,
            Opts {
                session: as_who(&fx, Who::A),
                form: Some(form),
                ..Default::default()
            },
        )
    };
    let (s, h, _) = post(form.clone()).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(
        h[header::LOCATION]
            .to_str()
            .unwrap()
            .ends_with("notice=renewed")
    );
    let after_one = balance(&fx, 2);
    assert!(after_one < before, "{before} → {after_one}");
    let (s, h, _) = post(form.clone()).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(
        h[header::LOCATION]
            .to_str()
            .unwrap()
            .ends_with("notice=replayed")
    );
    assert_eq!(
        balance(&fx, 2),
        after_one,
        "the second submit charged again"
    );
    assert_eq!(renewals(), 1);
    // The same key for another request is refused.
    let (s, _, body) = post(vec![
        ("key", "form-key-1".to_string()),
        ("periods", "2".into()),
    ])
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    // A payment form twice: one payment.
    let pay = vec![
        ("key", "pay-key-1".to_string()),
        ("amount", "25.00".into()),
        ("method", "cash".into()),
    ];
    for _ in 0..2 {
        let (s, _, _) = page(
            &fx,
            Method::POST,
            &format!("/panel/subscribers/{sub}/payments"),
            Opts {
                session: as_who(&fx, Who::A),
                form: Some(pay.clone()),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(s, StatusCode::SEE_OTHER);
    }
    assert_eq!(
        fx.query_i64(&format!(
            "SELECT count(*) FROM ledger WHERE subscriber_id = {sub} AND kind = 'payment'"
        )),
        1
    );
    let (_, _, html) = page(
        &fx,
        Method::GET,
        &format!("/panel/subscribers/{sub}"),
        Opts {
            session: as_who(&fx, Who::A),
            ..Default::default()
        },
    )
    .await;
    assert!(html.contains("id=\"owner-balance\""), "{html}");
}

fn set_cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap()[name.len() + 1..].to_string())
}

/// "Log in as": the banner names both on every page, actions are audited with the
/// impersonator, and one click returns to the impersonator's own session.
#[tokio::test]
async fn log_in_as_shows_the_banner_and_returns() {
    let fx = Fixture::new();
    let own = fx.secret(Who::A).unwrap();
    let target = fx.a.manager;
    let (s, h, body) = page(
        &fx,
        Method::POST,
        &format!("/panel/users/{target}/impersonate"),
        Opts {
            session: Some(own.clone()),
            form: Some(vec![]),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    let imp = set_cookie(&h, "outpost_session").expect("a new session cookie");
    let back = set_cookie(&h, panel::RETURN_COOKIE).expect("the way back");
    assert_eq!(back, own);
    let with = |extra: Vec<(&'static str, String)>| Opts {
        session: Some(imp.clone()),
        cookies: vec![(panel::RETURN_COOKIE.into(), back.clone())],
        form: Some(extra),
        ..Default::default()
    };
    for p in [
        "/panel".to_string(),
        "/panel/subscribers".into(),
        format!("/panel/subscribers/{}", fx.b.subscriber),
    ] {
        let (_, _, html) = page(
            &fx,
            Method::GET,
            &p,
            Opts {
                session: Some(imp.clone()),
                ..Default::default()
            },
        )
        .await;
        assert!(html.contains("id=\"impersonation\""), "{p}: no banner");
        assert!(
            html.contains("User A &#60;a@fixture.test&#62;") && html.contains("Manager a"),
            "{p}: {html}"
        );
    }
    // An action while impersonating is the manager's, with A as the impersonator.
    let (s, _, _) = page(
        &fx,
        Method::POST,
        &format!("/panel/subscribers/{}/status", fx.a.subscriber),
        with(vec![("status", "suspended".into())]),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, last) = fx.audit_tail();
    let (actor, action, _, impersonator) = last.unwrap();
    assert_eq!(
        (actor, action.as_str(), impersonator),
        (Some(target), "subscriber.update", Some(fx.user_id(Who::A)))
    );
    // Back: the impersonation session ends, A's own comes back.
    let (s, h, _) = page(&fx, Method::POST, "/panel/impersonation/end", with(vec![])).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(
        set_cookie(&h, "outpost_session").as_deref(),
        Some(own.as_str())
    );
    let (s, _, _) = page(
        &fx,
        Method::GET,
        "/panel",
        Opts {
            session: Some(imp.clone()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        s,
        StatusCode::SEE_OTHER,
        "the impersonation session still works"
    );
    let (_, _, html) = page(
        &fx,
        Method::GET,
        "/panel",
        Opts {
            session: Some(own),
            ..Default::default()
        },
    )
    .await;
    assert!(!html.contains("id=\"impersonation\""));
    // A return cookie that is not the impersonator's own session does not log anyone in.
    let (s, h, body) = page(
        &fx,
        Method::POST,
        &format!("/panel/users/{target}/impersonate"),
        Opts {
            session: fx.secret(Who::A),
            form: Some(vec![]),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    let imp = set_cookie(&h, "outpost_session").unwrap();
    let (_, h, _) = page(
        &fx,
        Method::POST,
        "/panel/impersonation/end",
        Opts {
            session: Some(imp),
            cookies: vec![(panel::RETURN_COOKIE.into(), fx.secret(Who::B).unwrap())],
            form: Some(vec![]),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(h[header::LOCATION], "/panel/login");
    // Logging out while logged in as someone else ends both sessions.
    let own = fx.secret(Who::B).unwrap();
    let (_, h, _) = page(
        &fx,
        Method::POST,
        &format!("/panel/users/{}/impersonate", fx.b.manager),
        Opts {
            session: Some(own.clone()),
            form: Some(vec![]),
            ..Default::default()
        },
    )
    .await;
    let imp = set_cookie(&h, "outpost_session").unwrap();
    let (s, _, _) = page(
        &fx,
        Method::POST,
        "/panel/logout",
        Opts {
            session: Some(imp.clone()),
            cookies: vec![(panel::RETURN_COOKIE.into(), own.clone())],
            form: Some(vec![]),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    for secret in [imp, own] {
        let (s, _, _) = page(
            &fx,
            Method::GET,
            "/panel",
            Opts {
                session: Some(secret),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(s, StatusCode::SEE_OTHER, "a session outlived the logout");
    }
}

/// The list's search finds a subscriber by MAC and by static IP too, and its filters
/// (status, plan) narrow it; a fragment request answers only the rows.
#[tokio::test]
async fn the_subscriber_search_covers_mac_and_ip() {
    let fx = Fixture::new();
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/subscribers/{}", fx.a.subscriber),
        json!({
            "mac": "02:00:5e:aa:bb:cc", "static_ipv4": "198.51.100.77",
        }),
    )
    .await;
    let list = |q: String| {
        let fx = &fx;
        async move {
            let (s, _, html) = page(
                fx,
                Method::GET,
                &format!("/panel/subscribers?{q}"),
                Opts {
                    session: fx.secret(Who::A),
                    ..Default::default()
                },
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{html}");
            html
        }
    };
    for q in [
        "q=5e%3Aaa%3Abb",
        "q=198.51.100.77",
        "q=sub-a&status=active",
        &format!("q=&plan_id={}", fx.a.plan),
    ] {
        let html = list(q.to_string()).await;
        assert!(html.contains(">sub-a<"), "{q}: {html}");
    }
    let html = list("q=5e%3Aaa&status=suspended".into()).await;
    assert!(html.contains("No subscribers match."), "{html}");
    let html = list("q=sub-a1".into()).await;
    assert!(
        html.contains(">sub-a1<") && !html.contains(">sub-b<"),
        "{html}"
    );
    let (_, _, frag) = page(
        &fx,
        Method::GET,
        "/panel/subscribers?q=sub-a",
        Opts {
            session: fx.secret(Who::A),
            cookies: vec![],
            ..Default::default()
        },
    )
    .await;
    assert!(frag.starts_with("<!doctype html>"));
    let req = Request::builder()
        .uri("/panel/subscribers?q=sub-a")
        .header(
            header::COOKIE,
            format!("outpost_session={}", fx.secret(Who::A).unwrap()),
        )
        .header("x-panel-fragment", "1")
        .body(Body::empty())
        .unwrap();
    let (_, _, v) = fx.send(req, ip()).await;
    let frag = v.as_str().unwrap_or_default().to_string();
    assert!(
        frag.starts_with("<div id=\"results\">") && frag.contains(">sub-a<"),
        "{frag}"
    );
    let (s, _, _) = page(
        &fx,
        Method::GET,
        "/panel/subscribers?status=sleeping",
        Opts {
            session: fx.secret(Who::A),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

/// The Host picks the brand: a reseller's custom domain shows its brand before and after
/// login, refuses another reseller's users, and never shows another's brand.
#[tokio::test]
async fn the_host_picks_the_brand() {
    let fx = Fixture::new();
    fx.patch_ok(
        Who::Op,
        "/api/v1/resellers/2",
        json!({ "custom_domain": "panel.skylink.example" }),
    )
    .await;
    fx.state
        .db
        .write_blocking(|tx| {
            outpost_controller::db::brand::set(
                tx,
                2,
                outpost_controller::db::brand::BrandSettings {
                    name: Some("Skylink".into()),
                    color: Some("#0a7d32".into()),
                    logo_url: None,
                    contact: Some("+1 555 0100".into()),
                    tagline: Some("Wireless for the valley".into()),
                },
            )?;
            outpost_controller::db::brand::set(
                tx,
                4,
                outpost_controller::db::brand::BrandSettings {
                    name: Some("Bravo Net".into()),
                    color: Some("#7d0a32".into()),
                    logo_url: None,
                    contact: None,
                    tagline: Some("Bravo's own line".into()),
                },
            )?;
            Ok(())
        })
        .unwrap();
    let host = Some("panel.skylink.example:8080");
    let (s, h, html) = page(
        &fx,
        Method::GET,
        "/panel/login",
        Opts {
            host,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("Skylink") && html.contains("#0a7d32"),
        "{html}"
    );
    assert!(!html.contains("Bravo Net"));
    assert!(
        html.contains(r#"<p class="tagline" id="brand-tagline">Wireless for the valley</p>"#),
        "the tagline before login: {html}"
    );
    assert!(!html.contains("own line"), "{html}");
    let csrf = set_cookie(&h, LOGIN_CSRF_COOKIE).unwrap();
    let login = |who: Who| {
        page(
            &fx,
            Method::POST,
            "/panel/login",
            Opts {
                host,
                form: Some(vec![
                    ("email", fx.emails[&who].clone()),
                    ("password", PASSWORD.into()),
                ]),
                csrf: Some(Some(csrf.clone())),
                cookies: vec![(LOGIN_CSRF_COOKIE.into(), csrf.clone())],
                ..Default::default()
            },
        )
    };
    // B's user on A's domain: refused on the form, under A's brand.
    let (s, _, html) = login(Who::B).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{html}");
    assert!(
        html.contains("Skylink") && !html.contains("Bravo Net"),
        "{html}"
    );
    // The operator's staff too: the domain is A's subtree's.
    let (s, _, _) = login(Who::Op).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, h, _) = login(Who::A1).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let session = set_cookie(&h, "outpost_session").unwrap();
    let (_, _, html) = page(
        &fx,
        Method::GET,
        "/panel",
        Opts {
            host,
            session: Some(session),
            ..Default::default()
        },
    )
    .await;
    assert!(html.contains("Skylink"), "{html}");
    // B's session presented on A's domain (a token can be) is refused there.
    let (s, _, html) = page(
        &fx,
        Method::GET,
        "/panel",
        Opts {
            host,
            session: fx.secret(Who::B),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(!html.contains("Bravo Net"));
    // Elsewhere: the operator's brand before login, the user's nearest after.
    let (_, _, html) = page(
        &fx,
        Method::GET,
        "/panel/login",
        Opts {
            host: Some("noc.isp.example"),
            ..Default::default()
        },
    )
    .await;
    assert!(
        !html.contains("Skylink") && !html.contains("Bravo Net"),
        "{html}"
    );
    let (_, _, html) = page(
        &fx,
        Method::GET,
        "/panel",
        Opts {
            host: Some("noc.isp.example"),
            session: fx.secret(Who::B),
            ..Default::default()
        },
    )
    .await;
    assert!(html.contains("Bravo Net"), "{html}");
}

/// A throttled login on the panel is the API's throttle: after the API's failures the
/// panel's form is refused too (429 page), and the other way round.
#[tokio::test]
async fn the_panel_login_shares_the_api_throttle() {
    let fx = Fixture::new();
    let email = fx.emails[&Who::A].clone();
    let mut last = 0;
    for _ in 0..20 {
        let (s, _) = fx
            .call(
                Who::Anon,
                Method::POST,
                "/api/v1/session",
                Some(json!({ "email": email, "password": "wrong-password" })),
            )
            .await;
        last = s.as_u16();
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429, "the API never throttled");
    let (s, h, html) = page(
        &fx,
        Method::POST,
        "/panel/login",
        Opts {
            form: Some(vec![
                ("email", email.clone()),
                ("password", PASSWORD.into()),
            ]),
            csrf: Some(Some("c1".into())),
            cookies: vec![(LOGIN_CSRF_COOKIE.into(), "c1".into())],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{html}");
    assert!(h.contains_key(header::RETRY_AFTER));
    assert!(html.contains("too many failed logins"), "{html}");
}

async fn get(fx: &Fixture, who: Who, path: String) -> (StatusCode, HeaderMap, String) {
    page(
        fx,
        Method::GET,
        &path,
        Opts {
            session: as_who(fx, who),
            ..Default::default()
        },
    )
    .await
}

/// The reseller tree and the audit log list only the actor's part of the tree, through
/// the API's lists; the log's filters narrow it.
#[tokio::test]
async fn the_tree_and_the_audit_log_stay_in_scope() {
    let fx = Fixture::new();
    let (s, _, html) = get(&fx, Who::Op, "/panel/resellers".into()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("Reseller A")
            && html.contains("Sub-reseller A1")
            && html.contains("Reseller B"),
        "{html}"
    );
    let (_, _, html) = get(&fx, Who::A, "/panel/resellers".into()).await;
    assert!(
        html.contains("Sub-reseller A1") && !html.contains("Reseller B"),
        "{html}"
    );
    assert!(html.contains("href=\"/panel?tenant_id=3\""), "{html}");
    // Something to find in the log: A and B each change one of their subscribers.
    for (who, sub) in [(Who::A, fx.a.subscriber), (Who::B, fx.b.subscriber)] {
        let (s, _, _) = page(
            &fx,
            Method::POST,
            &format!("/panel/subscribers/{sub}/status"),
            Opts {
                session: as_who(&fx, who),
                form: Some(vec![("status", "suspended".into())]),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(s, StatusCode::SEE_OTHER);
    }
    let (s, _, html) = get(&fx, Who::A, "/panel/audit?action=subscriber.".into()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains(&format!("subscriber {}", fx.a.subscriber)),
        "{html}"
    );
    assert!(
        !html.contains(&format!("subscriber {}<", fx.b.subscriber)),
        "B's entry in A's log: {html}"
    );
    let (_, _, html) = get(
        &fx,
        Who::A,
        format!(
            "/panel/audit?target_kind=subscriber&target_id={}",
            fx.b.subscriber
        ),
    )
    .await;
    assert!(html.contains("No entries match."), "{html}");
    let (_, _, html) = get(
        &fx,
        Who::Op,
        "/panel/audit?action=subscriber.update&since=2000-01-01&until=2000-01-02".into(),
    )
    .await;
    assert!(html.contains("No entries match."), "{html}");
    let (s, _, html) = get(&fx, Who::Op, "/panel/audit?since=yesterday".into()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    let (_, _, html) = get(
        &fx,
        Who::Op,
        format!(
            "/panel/audit?target_kind=subscriber&target_id={}",
            fx.b.subscriber
        ),
    )
    .await;
    assert!(html.contains("subscriber.update"), "{html}");
}

/// A session refused for its standing (here: its reseller no longer allows the address
/// it comes from) does not lock its holder out of the login form: the form shows, and
/// the session is ended as the API ends it.
#[tokio::test]
async fn a_refused_session_still_reaches_the_login_form() {
    let fx = Fixture::new();
    fx.patch_ok(
        Who::Op,
        "/api/v1/resellers/2",
        json!({ "allowed_ips": ["192.0.2.0/24"] }),
    )
    .await;
    let (s, _, html) = page(
        &fx,
        Method::GET,
        "/panel/login",
        Opts {
            session: fx.secret(Who::A),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("id=\"login\""));
    let (s, _, _) = page(
        &fx,
        Method::GET,
        "/panel",
        Opts {
            session: fx.secret(Who::A),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        s,
        StatusCode::SEE_OTHER,
        "the refused session was not ended"
    );
    // Another of A's sessions, on a page: the 403 page saying why.
    let (s, _, html) = page(
        &fx,
        Method::GET,
        "/panel",
        Opts {
            session: fx.secret(Who::M),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{html}");
    assert!(html.contains("not allowed from 203.0.113.10"), "{html}");
}

/// The WAN-checks page lists the outages of the actor's part of the tree only, from the
/// agents' transitions as the API reads them.
#[tokio::test]
async fn the_wan_page_shows_outages_in_scope() {
    let fx = Fixture::new();
    let version = outpost_protocol::PROTOCOL_VERSION.to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let down = serde_json::json!({ "events": [{ "seq": 1, "at": now - 120, "type": "wan_check",
        "subscriber_id": fx.a.subscriber, "tenant_id": 999, "address": "100.64.0.77",
        "probe": { "kind": "icmp" }, "state": "down", "previous_since": 0, "failures": 3,
        "rtt_us": null, "sent": 10, "lost": 3, "flaps": 1 }] });
    let (s, v) = fx
        .request(
            Some(&fx.agents[&fx.a.site].1),
            ip(),
            Method::POST,
            "/agent/v1/events",
            Some(down),
            &[(outpost_protocol::PROTOCOL_HEADER, &version)],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, html) = get(&fx, Who::A, "/panel/wan".into()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("100.64.0.77"), "A sees its CPE down: {html}");
    assert!(
        html.contains(&format!("href=\"/panel/subscribers/{}\"", fx.a.subscriber)),
        "{html}"
    );
    assert!(
        html.contains("WAN checks</a>"),
        "and the menu entry: {html}"
    );
    let (s, _, html) = get(&fx, Who::B, "/panel/wan".into()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!html.contains("100.64.0.77"), "B does not: {html}");
    let (s, _, html) = get(&fx, Who::M, "/panel/wan".into()).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a manager without reports: {html}"
    );
}

/// Reports: a renewal shows in its reseller's figures (page, chart and CSV) and in no
/// other reseller's; a manager without reports gets the 403 page; a bad period is the
/// form's error, not a server error.
#[tokio::test]
async fn reports_chart_and_export_the_figures_in_scope() {
    let fx = Fixture::new();
    let (s, v) = fx
        .money(
            Who::A,
            &format!("/api/v1/subscribers/{}/renew", fx.a.subscriber),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let (s, _, html) = get(&fx, Who::A, "/panel/reports?period=day".into()).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("<svg class=\"chart\""), "{html}");
    assert!(
        html.contains(&format!("<title>{today} · renewals: 1</title>")),
        "one renewal today: {html}"
    );
    assert!(
        html.contains(&format!("<tr><td>{today}</td><td>1</td>")),
        "{html}"
    );
    assert!(html.contains("Reports</a>"), "the menu entry: {html}");
    let (s, headers, csv) = get(
        &fx,
        Who::A,
        "/panel/reports.csv?report=revenue&period=day".into(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "period,renewals,renewal_value,cost,collected,balance_bought"
    );
    assert!(
        lines[1..]
            .iter()
            .any(|l| l.starts_with(&format!("{today},1,"))),
        "{csv}"
    );
    // B's figures hold nothing of A's.
    let (_, _, csv) = get(
        &fx,
        Who::B,
        "/panel/reports.csv?report=revenue&period=day".into(),
    )
    .await;
    assert!(
        csv.lines()
            .skip(1)
            .all(|l| l.split(',').nth(1) == Some("0")),
        "no renewal: {csv}"
    );
    let (s, _, _) = get(&fx, Who::M, "/panel/reports".into()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, html) = get(&fx, Who::A, "/panel/reports?period=week".into()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    let (s, _, csv) = get(&fx, Who::A, "/panel/reports.csv?report=usage".into()).await;
    assert_eq!(
        (s, csv.lines().next()),
        (StatusCode::OK, Some("day,download_octets,upload_octets"))
    );
}
