//! The panel over HTTP (no browser): every panel route in an authorization matrix like
//! the API's, CSRF refusals, idempotent money forms, "log in as" and back, and branding
//! by Host. The browser tests are in `tests/tests/panel_browser.rs`.

mod common;

use std::net::IpAddr;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use common::{ACTORS, Fixture, PASSWORD, Target, Who, holdings};
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

/// A page as the holder of `session`.
async fn view(
    fx: &Fixture,
    session: Option<String>,
    path: &str,
) -> (StatusCode, HeaderMap, String) {
    let o = Opts {
        session,
        ..Default::default()
    };
    page(fx, Method::GET, path, o).await
}

/// A form posted by the holder of `session`, with that session's CSRF token.
async fn post_form(
    fx: &Fixture,
    session: Option<String>,
    path: &str,
    form: Vec<(&str, String)>,
) -> (StatusCode, HeaderMap, String) {
    let o = Opts {
        session,
        form: Some(form),
        ..Default::default()
    };
    page(fx, Method::POST, path, o).await
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
    ("POST", "/panel/subscribers",                     [[303, 303], [303, 403], [303, 403], [303, 403], [303, 403], [401, 401]]),
    ("GET", "/panel/subscribers/new",                  [[200, 0],   [200, 0],   [200, 0],   [200, 0],   [200, 0],   [303, 0]]),
    ("POST", "/panel/subscribers/bulk",                [[303, 303], [303, 404], [303, 404], [303, 404], [303, 404], [401, 401]]),
    ("GET", "/panel/subscribers/{id}",                 [[200, 200], [200, 404], [200, 404], [200, 404], [200, 404], [303, 303]]),
    ("POST", "/panel/subscribers/{id}",                [[303, 303], [303, 404], [303, 404], [403, 403], [303, 404], [401, 401]]),
    ("GET", "/panel/subscribers/{id}/edit",            [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [303, 303]]),
    ("POST", "/panel/subscribers/{id}/status",         [[303, 303], [303, 404], [303, 404], [303, 404], [303, 404], [401, 401]]),
    ("POST", "/panel/subscribers/{id}/renew",          [[303, 303], [303, 404], [303, 404], [403, 403], [303, 404], [401, 401]]),
    ("POST", "/panel/subscribers/{id}/payments",       [[303, 303], [303, 404], [303, 404], [403, 403], [303, 404], [401, 401]]),
    ("GET", "/panel/plans",                            [[200, 0],   [200, 0],   [200, 0],   [200, 0],   [200, 0],   [303, 0]]),
    ("POST", "/panel/plans",                           [[303, 303], [303, 403], [303, 403], [403, 403], [303, 403], [401, 401]]),
    ("GET", "/panel/plans/new",                        [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [303, 0]]),
    ("POST", "/panel/plans/{id}",                      [[303, 303], [303, 404], [303, 404], [403, 403], [303, 404], [401, 401]]),
    ("GET", "/panel/plans/{id}/edit",                  [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [303, 303]]),
    ("POST", "/panel/plans/{id}/status",               [[303, 303], [303, 404], [303, 404], [403, 403], [303, 404], [401, 401]]),
    // A1 is as deep as the tree goes: a reseller below it is refused for depth (422).
    ("POST", "/panel/resellers",                       [[303, 303], [303, 403], [422, 403], [403, 403], [303, 403], [401, 401]]),
    ("GET", "/panel/resellers/new",                    [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [303, 0]]),
    // Own: sub-reseller A1 (A and the operator manage it; nobody manages itself); other: B.
    ("GET", "/panel/resellers/{id}",                   [[200, 200], [200, 404], [404, 404], [403, 403], [404, 404], [303, 303]]),
    ("POST", "/panel/resellers/{id}",                  [[303, 303], [303, 404], [404, 404], [403, 403], [404, 404], [401, 401]]),
    // Only a reseller's own parent moves its balance: not the operator, for A1.
    ("POST", "/panel/resellers/{id}/balance",          [[403, 303], [303, 404], [404, 404], [403, 403], [404, 404], [401, 401]]),
    ("GET", "/panel/resellers/{id}/statement",         [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [303, 303]]),
    ("GET", "/panel/ledger",                           [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [303, 0]]),
    ("GET", "/panel/resellers/{id}/rate-card",         [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [303, 303]]),
    // Own: sub-reseller A1's card (A and the operator manage it); other: B's.
    ("POST", "/panel/resellers/{id}/rate-card",        [[303, 303], [303, 404], [404, 404], [403, 403], [404, 404], [401, 401]]),
    ("GET", "/panel/sites",                            [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [303, 0]]),
    ("POST", "/panel/sites",                           [[303, 303], [303, 403], [303, 403], [403, 403], [303, 403], [401, 401]]),
    ("GET", "/panel/sites/{id}",                       [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [303, 303]]),
    ("POST", "/panel/sites/{id}/nas",                  [[303, 303], [303, 404], [303, 404], [403, 403], [303, 404], [401, 401]]),
    ("GET", "/panel/sites/{id}/edit",                  [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [303, 303]]),
    ("POST", "/panel/sites/{id}",                      [[303, 303], [303, 404], [303, 404], [403, 403], [303, 404], [401, 401]]),
    ("GET", "/panel/nas/{id}/edit",                    [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [303, 303]]),
    ("POST", "/panel/nas/{id}",                        [[303, 303], [303, 404], [303, 404], [403, 403], [303, 404], [401, 401]]),
    // An unused token of the cell's site, made for the cell.
    ("POST", "/panel/enrollment-tokens/{id}/revoke",   [[303, 303], [303, 404], [303, 404], [403, 403], [303, 404], [401, 401]]),
    // The brand of the cell's tenant: the actor's own or one below it (the API's read).
    ("GET", "/panel/resellers/{id}/brand",             [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [303, 303]]),
    ("POST", "/panel/resellers/{id}/brand",            [[303, 303], [303, 404], [303, 404], [403, 403], [303, 404], [401, 401]]),
    // The answer is the page showing the new token's secret once, not a redirect.
    ("POST", "/panel/sites/{id}/enrollment-tokens",    [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("GET", "/panel/users",                            [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [303, 0]]),
    ("POST", "/panel/users",                           [[303, 303], [303, 403], [303, 403], [403, 403], [303, 403], [401, 401]]),
    ("GET", "/panel/users/new",                        [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [303, 0]]),
    ("POST", "/panel/users/{id}",                      [[303, 303], [303, 404], [303, 404], [403, 403], [303, 404], [401, 401]]),
    ("GET", "/panel/users/{id}/edit",                  [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [303, 303]]),
    ("GET", "/panel/resellers",                        [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [303, 0]]),
    ("GET", "/panel/audit",                            [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [303, 0]]),
    ("GET", "/panel/wan",                              [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [303, 0]]),
    ("GET", "/panel/reports",                          [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [303, 303]]),
    ("GET", "/panel/reports.csv",                      [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [303, 303]]),
    ("POST", "/panel/users/{id}/impersonate",          [[303, 303], [303, 404], [303, 404], [403, 403], [303, 404], [401, 401]]),
    ("POST", "/panel/impersonation/end",               [[422, 0],   [422, 0],   [422, 0],   [422, 0],   [422, 0],   [401, 0]]),
    ("GET", "/panel/assets/{hash}/{file}",             [[200, 404], [200, 404], [200, 404], [200, 404], [200, 404], [200, 404]]),
];

/// The bulk form's field that ticks subscriber `id` (leaked: the forms' keys are
/// `&'static str`, and a test makes a handful).
fn pick(id: i64) -> &'static str {
    Box::leak(format!("pick.{id}").into_boxed_str())
}

/// The rate card a cell changes, and a plan of its holder's parent for it: A1's (which
/// A and the operator manage) or B's (only the operator).
fn card_target(fx: &Fixture, t: Target) -> (i64, i64) {
    match t {
        Target::Own => (fx.a1.tenant, fx.a1.card_plan.unwrap()),
        Target::Other => (fx.b.tenant, fx.b.card_plan.unwrap()),
    }
}

/// An unused enrollment token of `site`, made directly in the store; its id.
fn unused_token(fx: &Fixture, site: i64) -> i64 {
    let by = fx.user_id(Who::Op);
    fx.state
        .db
        .write_blocking(|tx| {
            let secret = outpost_controller::crypto::new_bearer("ope_");
            outpost_controller::db::agent::create_token(tx, site, by, 3600, &secret)
        })
        .unwrap()
        .id
}

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
        // A new subscriber owned by the cell's tenant (another's: out of scope).
        ("POST", "/panel/subscribers") => Some(vec![
            ("username", "made-by-form".into()),
            ("password", "ppp-secret".into()),
            ("tenant_id", h.tenant.to_string()),
            ("max_sessions", "1".into()),
        ]),
        ("POST", "/panel/subscribers/bulk") => Some(vec![
            ("action", "suspend".into()),
            (pick(h.subscriber), "1".into()),
        ]),
        ("POST", "/panel/plans") => Some(vec![
            ("name", "Form plan".into()),
            ("tenant_id", h.tenant.to_string()),
            (
                "parent_plan_id",
                h.card_plan.map(|p| p.to_string()).unwrap_or_default(),
            ),
            ("download_kbps", "1000".into()),
            ("upload_kbps", "500".into()),
            ("price", "50.00".into()),
        ]),
        ("POST", "/panel/plans/{id}") => Some(vec![
            ("name", "Renamed plan".into()),
            ("download_kbps", "1000".into()),
            ("upload_kbps", "500".into()),
            ("price", "50.00".into()),
        ]),
        ("POST", "/panel/plans/{id}/status") => Some(vec![("status", "archived".into())]),
        ("POST", "/panel/resellers/{id}/rate-card") => Some(vec![
            ("plan_id", card_target(fx, t).1.to_string()),
            ("wholesale_price", "16.00".into()),
        ]),
        ("POST", "/panel/resellers") => Some(vec![
            ("name", "Form Reseller".into()),
            ("parent_id", h.tenant.to_string()),
        ]),
        ("POST", "/panel/resellers/{id}") => Some(vec![
            ("name", "Renamed Reseller".into()),
            ("status", "active".into()),
            ("credit_limit", "0.00".into()),
        ]),
        ("POST", "/panel/resellers/{id}/balance") => Some(vec![
            ("key", key.clone()),
            ("kind", "top_up".into()),
            ("amount", "5.00".into()),
        ]),
        ("POST", "/panel/users") => Some(vec![
            ("kind", "manager".into()),
            ("email", "form-made@fixture.test".into()),
            ("name", "Form Made".into()),
            ("password", "form-password-1".into()),
            ("tenant_id", h.tenant.to_string()),
            ("perm.view_customers", "1".into()),
        ]),
        ("POST", "/panel/users/{id}") => Some(vec![
            ("kind", "manager".into()),
            ("name", "Renamed Manager".into()),
            ("status", "active".into()),
            ("perm.view_customers", "1".into()),
        ]),
        ("POST", "/panel/sites") => Some(vec![
            ("name", "form-site".into()),
            ("tenant_id", h.tenant.to_string()),
        ]),
        ("POST", "/panel/sites/{id}/nas") => Some(vec![
            ("name", "form-nas".into()),
            ("ip", "192.0.2.77".into()),
            ("secret", "radius-secret-2".into()),
            ("kind", "mikrotik".into()),
        ]),
        ("POST", "/panel/sites/{id}") => Some(vec![
            ("name", "renamed-site".into()),
            ("location", "Grain silo".into()),
        ]),
        ("POST", "/panel/nas/{id}") => Some(vec![
            ("name", "renamed-nas".into()),
            ("ip", "192.0.2.78".into()),
            ("secret", "".into()),
            ("kind", "accel-ppp".into()),
            ("coa_port", "1700".into()),
        ]),
        ("POST", "/panel/resellers/{id}/brand") => Some(vec![
            ("name", "Skylink".into()),
            ("color", "#0a7d32".into()),
        ]),
        ("POST", "/panel/subscribers/{id}") => Some(vec![
            ("username", "renamed-by-form".into()),
            ("max_sessions", "2".into()),
            ("name", "Renamed".into()),
        ]),
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
        r if r.starts_with("/panel/users/{id}") => r.replace("{id}", &h.manager.to_string()),
        r if r.starts_with("/panel/plans/") => r.replace("{id}", &h.plan.to_string()),
        r if r.starts_with("/panel/sites/") => r.replace("{id}", &h.site.to_string()),
        r if r.starts_with("/panel/nas/") => r.replace("{id}", &h.nas.to_string()),
        "/panel/enrollment-tokens/{id}/revoke" => {
            route.replace("{id}", &unused_token(fx, h.site).to_string())
        }
        "/panel/resellers/{id}/brand" => route.replace("{id}", &h.tenant.to_string()),
        "/panel/resellers/{id}/rate-card" if method == "POST" => {
            route.replace("{id}", &card_target(fx, t).0.to_string())
        }
        "/panel/resellers/{id}" | "/panel/resellers/{id}/balance" => {
            route.replace("{id}", &card_target(fx, t).0.to_string())
        }
        "/panel/resellers/{id}/statement" => route.replace("{id}", &h.tenant.to_string()),
        "/panel/resellers/{id}/rate-card" => route.replace("{id}", &h.tenant.to_string()),
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
                    // A form's own refusal (bad input) is the form again, its errors shown.
                    let page = body.contains(&format!("data-status=\"{want}\""))
                        || (want == 422 && body.contains("id=\"form-error\""));
                    if !html.starts_with("text/html") || !page {
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
    common::assert_matrix(cells, 100, &failures);
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
    let manager = ok_page(&fx, Who::M, "/panel").await;
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
    let (_, _, reseller) = view(&fx, as_who(&fx, Who::A), "/panel").await;
    assert!(menu(&reseller).contains("/panel/users"));
    let (s, _, body) = view(&fx, as_who(&fx, Who::M), "/panel/users").await;
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
    let post =
        |form: Vec<(&'static str, String)>| post_form(&fx, as_who(&fx, Who::A), &renew_path, form);
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
        accepted(
            &fx,
            Who::A,
            &format!("/panel/subscribers/{sub}/payments"),
            pay.clone(),
        )
        .await;
    }
    assert_eq!(
        fx.query_i64(&format!(
            "SELECT count(*) FROM ledger WHERE subscriber_id = {sub} AND kind = 'payment'"
        )),
        1
    );
    let (_, _, html) = view(
        &fx,
        as_who(&fx, Who::A),
        &format!("/panel/subscribers/{sub}"),
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
    let (s, h, body) = post_form(
        &fx,
        Some(own.clone()),
        &format!("/panel/users/{target}/impersonate"),
        vec![],
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
        let (_, _, html) = view(&fx, Some(imp.clone()), &p).await;
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
    let (s, _, _) = view(&fx, Some(imp.clone()), "/panel").await;
    assert_eq!(
        s,
        StatusCode::SEE_OTHER,
        "the impersonation session still works"
    );
    let (_, _, html) = view(&fx, Some(own), "/panel").await;
    assert!(!html.contains("id=\"impersonation\""));
    // A return cookie that is not the impersonator's own session does not log anyone in.
    let (s, h, body) = post_form(
        &fx,
        fx.secret(Who::A),
        &format!("/panel/users/{target}/impersonate"),
        vec![],
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
    let (_, h, _) = post_form(
        &fx,
        Some(own.clone()),
        &format!("/panel/users/{}/impersonate", fx.b.manager),
        vec![],
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
        let (s, _, _) = view(&fx, Some(secret), "/panel").await;
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
            let (s, _, html) =
                view(fx, fx.secret(Who::A), &format!("/panel/subscribers?{q}")).await;
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
    let (s, _, _) = view(&fx, fx.secret(Who::A), "/panel/subscribers?status=sleeping").await;
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
    view(fx, as_who(fx, who), &path).await
}

/// The reseller tree and the audit log list only the actor's part of the tree, through
/// the API's lists; the log's filters narrow it.
#[tokio::test]
async fn the_tree_and_the_audit_log_stay_in_scope() {
    let fx = Fixture::new();
    let html = ok_page(&fx, Who::Op, "/panel/resellers").await;
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
        let (s, _, _) = post_form(
            &fx,
            as_who(&fx, who),
            &format!("/panel/subscribers/{sub}/status"),
            vec![("status", "suspended".into())],
        )
        .await;
        assert_eq!(s, StatusCode::SEE_OTHER);
    }
    let html = ok_page(&fx, Who::A, "/panel/audit?action=subscriber.").await;
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
    let (s, _, html) = view(&fx, fx.secret(Who::A), "/panel/login").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("id=\"login\""));
    let (s, _, _) = view(&fx, fx.secret(Who::A), "/panel").await;
    assert_eq!(
        s,
        StatusCode::SEE_OTHER,
        "the refused session was not ended"
    );
    // Another of A's sessions, on a page: the 403 page saying why.
    let (s, _, html) = view(&fx, fx.secret(Who::M), "/panel").await;
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
    let html = ok_page(&fx, Who::A, "/panel/wan").await;
    assert!(html.contains("100.64.0.77"), "A sees its CPE down: {html}");
    assert!(
        html.contains(&format!("href=\"/panel/subscribers/{}\"", fx.a.subscriber)),
        "{html}"
    );
    assert!(
        html.contains("WAN checks</a>"),
        "and the menu entry: {html}"
    );
    let html = ok_page(&fx, Who::B, "/panel/wan").await;
    assert!(!html.contains("100.64.0.77"), "B does not: {html}");
    let (s, _, html) = get(&fx, Who::M, "/panel/wan".into()).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a manager without reports: {html}"
    );
}

/// The value a named input of a page holds (`name="…" value="…"`).
fn input_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_string())
}

/// A subscriber made through the new-subscriber form: the form carries the CSRF token,
/// the subscriber lands with what was typed (as the API reads it) and shows in the list.
#[tokio::test]
async fn a_subscriber_created_through_the_form_is_in_the_list() {
    let fx = Fixture::new();
    let html = ok_page(&fx, Who::A, "/panel/subscribers/new").await;
    let csrf = csrf_token(&fx.secret(Who::A).unwrap());
    assert!(html.contains(&format!("value=\"{csrf}\"")), "no CSRF token");
    assert!(
        html.contains(&format!("<option value=\"{}\"", fx.a.plan)),
        "{html}"
    );
    let (s, h, body) = post_form(
        &fx,
        fx.secret(Who::A),
        "/panel/subscribers",
        vec![
            ("username", "new-customer".into()),
            ("password", "ppp-new".into()),
            ("tenant_id", fx.a.tenant.to_string()),
            ("plan_id", fx.a.plan.to_string()),
            ("site_id", fx.a.site.to_string()),
            ("static_ipv4", "198.51.100.200".into()),
            ("mac", "02005e0000aa".into()),
            ("expires_at", "2031-05-31".into()),
            ("max_sessions", "2".into()),
            ("name", "New Customer".into()),
            ("phone", "+1 555 0199".into()),
            ("email", "new@customer.example".into()),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    let to = h[header::LOCATION].to_str().unwrap().to_string();
    assert!(to.ends_with("?notice=created"), "{to}");
    let id: i64 = to["/panel/subscribers/".len()..to.find('?').unwrap()]
        .parse()
        .unwrap();
    let v = fx
        .get_ok(Who::A, &format!("/api/v1/subscribers/{id}"))
        .await;
    assert_eq!(v["mac"], "02:00:5E:00:00:AA");
    assert_eq!(v["static_ipv4"], "198.51.100.200");
    assert_eq!(v["plan_id"], fx.a.plan);
    assert_eq!(v["site_id"], fx.a.site);
    assert_eq!(v["expires_at"], "2031-05-31T23:59:59Z");
    assert_eq!(v["max_sessions"], 2);
    assert_eq!(v["password"], "ppp-new");
    assert_eq!(v["phone"], "+1 555 0199");
    let (_, last) = fx.audit_tail();
    assert_eq!(last.unwrap().1, "subscriber.create");
    let (_, _, list) = get(&fx, Who::A, "/panel/subscribers?q=new-customer".into()).await;
    assert!(list.contains(">new-customer<"), "{list}");
    let (_, _, detail) = get(&fx, Who::A, to).await;
    assert!(detail.contains("Subscriber created."), "{detail}");
}

/// Bad input comes back as the form, filled in as it was typed, each error beside its
/// field, with nothing created; a clash (a taken username) too, as a 409.
#[tokio::test]
async fn a_refused_form_comes_back_filled_in_with_its_errors() {
    let fx = Fixture::new();
    let count = || fx.query_i64("SELECT count(*) FROM subscribers");
    let before = count();
    let (audit_before, _) = fx.audit_tail();
    let typed = |username: &str, mac: &str, ip: &str, password: &str| {
        vec![
            ("username", username.to_string()),
            ("password", password.to_string()),
            ("site_id", fx.a.site.to_string()),
            ("static_ipv4", ip.to_string()),
            ("mac", mac.to_string()),
            ("expires_at", "not-a-day".into()),
            ("max_sessions", "1".into()),
            ("name", "Kept Name".into()),
            ("phone", "+1 555 0123".into()),
        ]
    };
    // The panel's own parsing: the missing password and the day.
    let (s, _, html) = post_form(
        &fx,
        fx.secret(Who::A),
        "/panel/subscribers",
        typed("fresh-one", "02:00:5e:00:00:01", "198.51.100.9", ""),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"e-password\""), "{html}");
    assert!(html.contains("id=\"e-expires_at\""), "{html}");
    assert_eq!(input_value(&html, "name").as_deref(), Some("Kept Name"));
    assert_eq!(input_value(&html, "phone").as_deref(), Some("+1 555 0123"));
    assert_eq!(input_value(&html, "username").as_deref(), Some("fresh-one"));
    assert_eq!(
        input_value(&html, "expires_at").as_deref(),
        Some("not-a-day")
    );
    assert!(html.contains("id=\"form-errors\""), "{html}");
    // The operation's refusal, beside the field it names.
    let mut form = typed("fresh-one", "zz:zz", "198.51.100.9", "pw");
    form.retain(|(k, _)| *k != "expires_at");
    let (s, _, html) = post_form(&fx, fx.secret(Who::A), "/panel/subscribers", form).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"e-mac\""), "{html}");
    assert!(!html.contains("id=\"e-username\""), "{html}");
    assert_eq!(input_value(&html, "mac").as_deref(), Some("zz:zz"));
    // A taken username: a clash, against the username.
    let mut form = typed("sub-a", "02:00:5e:00:00:01", "198.51.100.9", "pw");
    form.retain(|(k, _)| *k != "expires_at");
    let (s, _, html) = post_form(&fx, fx.secret(Who::A), "/panel/subscribers", form).await;
    assert_eq!(s, StatusCode::CONFLICT, "{html}");
    assert!(
        html.contains("id=\"e-username\"") && html.contains("already exists"),
        "{html}"
    );
    assert_eq!(count(), before, "a refused form created a subscriber");
    assert_eq!(
        fx.audit_tail().0,
        audit_before,
        "a refused form was audited"
    );
    // Another reseller's site is not offered, and choosing it anyway is refused there.
    let (s, _, html) = post_form(
        &fx,
        fx.secret(Who::A),
        "/panel/subscribers",
        vec![
            ("username", "fresh-two".into()),
            ("password", "pw".into()),
            ("site_id", fx.b.site.to_string()),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{html}");
    assert!(html.contains("id=\"e-site_id\""), "{html}");
    assert_eq!(count(), before);
}

/// The edit form comes filled with the subscriber, saves through the API's update, and
/// keeps what the form does not show (the password when left empty, the expiry's time).
#[tokio::test]
async fn the_edit_form_saves_and_keeps_the_rest() {
    let fx = Fixture::new();
    let sub = fx.a.subscriber;
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/subscribers/{sub}"),
        json!({ "expires_at": "2030-01-15T08:30:00Z", "phone": "+1 555 0001" }),
    )
    .await;
    let html = ok_page(&fx, Who::A, &format!("/panel/subscribers/{sub}/edit")).await;
    assert_eq!(input_value(&html, "username").as_deref(), Some("sub-a"));
    assert_eq!(
        input_value(&html, "expires_at").as_deref(),
        Some("2030-01-15")
    );
    assert_eq!(input_value(&html, "password").as_deref(), Some(""));
    let mut form: Vec<(&str, String)> = ["username", "max_sessions", "expires_at", "phone"]
        .into_iter()
        .map(|k| (k, input_value(&html, k).unwrap()))
        .collect();
    form.push(("name", "Renamed Customer".into()));
    form.push(("site_id", fx.a.site.to_string()));
    form.push(("plan_id", fx.a.plan.to_string()));
    form.push(("password", String::new()));
    let path = format!("/panel/subscribers/{sub}");
    let (s, h, body) = post_form(&fx, fx.secret(Who::A), &path, form.clone()).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    assert!(
        h[header::LOCATION]
            .to_str()
            .unwrap()
            .ends_with("notice=saved")
    );
    let v = fx
        .get_ok(Who::A, &format!("/api/v1/subscribers/{sub}"))
        .await;
    assert_eq!(v["name"], "Renamed Customer");
    assert_eq!(v["phone"], "+1 555 0001");
    assert_eq!(v["expires_at"], "2030-01-15T08:30:00Z", "the time was lost");
    assert_eq!(v["password"], "ppp-a", "an empty password field changed it");
    // A bad change: the form again, as typed, and nothing saved.
    let mut bad = form.clone();
    bad.retain(|(k, _)| *k != "name");
    bad.push(("name", "Not Saved".into()));
    bad.push(("static_ipv4", "224.0.0.1".into()));
    let (s, _, html) = post_form(&fx, fx.secret(Who::A), &path, bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"e-static_ipv4\""), "{html}");
    assert_eq!(input_value(&html, "name").as_deref(), Some("Not Saved"));
    let v = fx
        .get_ok(Who::A, &format!("/api/v1/subscribers/{sub}"))
        .await;
    assert_eq!(v["name"], "Renamed Customer");
    // Another reseller's subscriber: the 404 page, for the form and its post.
    let other = format!("/panel/subscribers/{}", fx.b.subscriber);
    let (s, _, _) = get(&fx, Who::A, format!("{other}/edit")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = post_form(&fx, fx.secret(Who::A), &other, form).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

fn status_of(fx: &Fixture, id: i64) -> i64 {
    fx.query_i64(&format!(
        "SELECT status = 'suspended' FROM subscribers WHERE id = {id}"
    ))
}

/// The list's bulk actions: the API's rules (all or none, an id out of scope is a 404,
/// a move only inside the actor's subtree), and a renewal of many charged once per form.
#[tokio::test]
async fn bulk_actions_follow_the_api_rules() {
    let fx = Fixture::new();
    let (a, a1, b) = (fx.a.subscriber, fx.a1.subscriber, fx.b.subscriber);
    let bulk = |who: Who, form: Vec<(&'static str, String)>| {
        let fx = &fx;
        async move { post_form(fx, fx.secret(who), "/panel/subscribers/bulk", form).await }
    };
    let (_, _, html) = get(&fx, Who::A, "/panel/subscribers".into()).await;
    assert!(
        html.contains(&format!("name=\"pick.{a}\"")) && html.contains("id=\"bulk\""),
        "{html}"
    );
    // One of B's among A's: nothing changes.
    let (s, _, html) = bulk(
        Who::A,
        vec![
            ("action", "suspend".into()),
            (pick(a), "1".into()),
            (pick(b), "1".into()),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{html}");
    assert_eq!((status_of(&fx, a), status_of(&fx, b)), (0, 0));
    let (s, h, _) = bulk(
        Who::A,
        vec![
            ("action", "suspend".into()),
            (pick(a), "1".into()),
            (pick(a1), "1".into()),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let to = h[header::LOCATION].to_str().unwrap().to_string();
    assert!(to.contains("changed=2"), "{to}");
    assert_eq!((status_of(&fx, a), status_of(&fx, a1)), (1, 1));
    let (_, _, html) = get(&fx, Who::A, to).await;
    assert!(html.contains("Suspended 2 subscriber(s)"), "{html}");
    // A move to B is outside A's tree: 403, nothing moved.
    let owner = |id: i64| {
        fx.query_i64(&format!(
            "SELECT tenant_id FROM subscribers WHERE id = {id}"
        ))
    };
    let (s, _, _) = bulk(
        Who::A,
        vec![
            ("action", "set_reseller".into()),
            ("tenant_id", fx.b.tenant.to_string()),
            (pick(a), "1".into()),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(owner(a), fx.a.tenant);
    let to_a1 = || {
        vec![
            ("action", "set_reseller".to_string()),
            ("tenant_id", fx.a1.tenant.to_string()),
            (pick(a), "1".into()),
        ]
    };
    // Its plan is one A1 does not sell: the API's rule refuses the move (409).
    let (s, _, body) = bulk(Who::A, to_a1()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("does not sell"), "{body}");
    assert_eq!(owner(a), fx.a.tenant);
    // On the plan A sells A1 (its rate card), it moves.
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/subscribers/{a}"),
        json!({ "plan_id": fx.a1.card_plan.unwrap() }),
    )
    .await;
    let (s, _, body) = bulk(Who::A, to_a1()).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(owner(a), fx.a1.tenant);
    // Renewing many: once per form key.
    let renewals = || {
        fx.query_i64(&format!(
            "SELECT count(*) FROM renewals WHERE subscriber_id IN ({a}, {a1})"
        ))
    };
    let form = vec![
        ("action", "renew".to_string()),
        ("key", "bulk-renew-1".into()),
        (pick(a), "1".into()),
        (pick(a1), "1".into()),
    ];
    let (s, h, body) = bulk(Who::A1, form.clone()).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    assert!(h[header::LOCATION].to_str().unwrap().contains("changed=2"));
    assert_eq!(renewals(), 2);
    assert_eq!(
        (status_of(&fx, a), status_of(&fx, a1)),
        (0, 0),
        "renewal reconnects"
    );
    let (s, h, _) = bulk(Who::A1, form).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(h[header::LOCATION].to_str().unwrap().contains("changed=0"));
    assert_eq!(renewals(), 2, "the second submit renewed again");
    // The manager may suspend but not renew.
    let (s, _, _) = bulk(
        Who::M,
        vec![
            ("action", "renew".into()),
            ("key", "m-1".into()),
            (pick(fx.a.subscriber), "1".into()),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = bulk(Who::A, vec![("action", "suspend".into())]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "nothing ticked");
}

/// A method a panel path does not answer is the 405 page, not the API's JSON.
#[tokio::test]
async fn a_wrong_method_is_a_page() {
    let fx = Fixture::new();
    for (m, path) in [
        (Method::PUT, "/panel/subscribers".to_string()),
        (
            Method::DELETE,
            format!("/panel/subscribers/{}", fx.a.subscriber),
        ),
        (Method::GET, "/panel/subscribers/bulk".to_string()),
    ] {
        let (s, h, html) = page(
            &fx,
            m.clone(),
            &path,
            Opts {
                session: fx.secret(Who::A),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}: {html}");
        assert!(
            h[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
                && html.contains("data-status=\"405\"")
                && html.contains("id=\"menu\""),
            "{m} {path}: {html}"
        );
    }
}

/// A reseller's plans: created through the form on a plan of its card (a speed above
/// that plan's comes back beside the field), listed with what it pays for its card's
/// plans, edited and archived through the API's update.
#[tokio::test]
async fn plans_are_made_edited_and_archived_through_their_forms() {
    let fx = Fixture::new();
    let html = ok_page(&fx, Who::A, "/panel/plans").await;
    // op-basic is on A's card at 10.00; a-home is A's own.
    let row = |html: &str, id: i64| {
        html.split(&format!("<tr id=\"plan-{id}\">"))
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or("")
            .to_string()
    };
    let basic = row(&html, fx.a.card_plan.unwrap());
    assert!(
        basic.contains("10.00") && !basic.contains("Edit"),
        "{basic}"
    );
    assert!(row(&html, fx.a.plan).contains("Edit"), "{html}");
    let form = |down: &str| {
        vec![
            ("name", "Sky Max".to_string()),
            ("parent_plan_id", fx.a.card_plan.unwrap().to_string()),
            ("download_kbps", down.to_string()),
            ("upload_kbps", "2000".into()),
            ("price", "35.00".into()),
        ]
    };
    let (s, _, html) = post_form(&fx, fx.secret(Who::A), "/panel/plans", form("90000")).await;
    assert!(s.is_client_error(), "{s} {html}");
    assert!(html.contains("id=\"e-download_kbps\""), "{html}");
    assert_eq!(input_value(&html, "name").as_deref(), Some("Sky Max"));
    let (s, _, html) = post_form(&fx, fx.secret(Who::A), "/panel/plans", form("fast")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("id=\"e-download_kbps\""), "{html}");
    let (s, h, body) = post_form(&fx, fx.secret(Who::A), "/panel/plans", form("15000")).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    assert!(
        h[header::LOCATION]
            .to_str()
            .unwrap()
            .ends_with("notice=created")
    );
    let id = fx.query_i64("SELECT id FROM plans WHERE name = 'Sky Max'");
    assert_eq!(
        fx.query_i64(&format!("SELECT tenant_id FROM plans WHERE id = {id}")),
        fx.a.tenant
    );
    // Edit: the form comes filled, a new price is saved.
    let html = ok_page(&fx, Who::A, &format!("/panel/plans/{id}/edit")).await;
    assert_eq!(input_value(&html, "price").as_deref(), Some("35.00"));
    accepted(
        &fx,
        Who::A,
        &format!("/panel/plans/{id}"),
        vec![
            ("name", "Sky Max".into()),
            ("download_kbps", "15000".into()),
            ("upload_kbps", "2000".into()),
            ("price", "39.50".into()),
        ],
    )
    .await;
    assert_eq!(
        fx.query_i64(&format!("SELECT price FROM plans WHERE id = {id}")),
        3950
    );
    accepted(
        &fx,
        Who::A,
        &format!("/panel/plans/{id}/status"),
        vec![("status", "archived".into())],
    )
    .await;
    let (_, _, html) = get(&fx, Who::A, "/panel/plans".into()).await;
    assert!(row(&html, id).contains("archived"), "{html}");
    // B sees neither the plan nor its form.
    let (_, _, html) = get(&fx, Who::B, "/panel/plans".into()).await;
    assert!(!html.contains("Sky Max"));
    let (s, _, _) = get(&fx, Who::B, format!("/panel/plans/{id}/edit")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A reseller's rate card: its parent puts a plan on it at a wholesale price (a bad
/// price comes back beside the field), the card's holder sees it and may not change it.
#[tokio::test]
async fn a_rate_card_is_set_by_the_parent_and_read_by_its_holder() {
    let fx = Fixture::new();
    let path = format!("/panel/resellers/{}/rate-card", fx.a1.tenant);
    let html = ok_page(&fx, Who::A, &path.clone()).await;
    assert!(
        html.contains("id=\"card-form\"") && html.contains("a-home"),
        "{html}"
    );
    let set = |price: &str| {
        vec![
            ("plan_id", fx.a.plan.to_string()),
            ("wholesale_price", price.to_string()),
        ]
    };
    let (s, _, html) = post_form(&fx, fx.secret(Who::A), &path, set("cheap")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("id=\"e-wholesale_price\""), "{html}");
    assert_eq!(
        input_value(&html, "wholesale_price").as_deref(),
        Some("cheap")
    );
    accepted(&fx, Who::A, &path, set("12.50")).await;
    let (_, last) = fx.audit_tail();
    assert_eq!(last.unwrap().1, "rate_card.set");
    let html = ok_page(&fx, Who::A1, &path.clone()).await;
    let line = html
        .split(&format!("<tr id=\"card-{}\">", fx.a.plan))
        .nth(1)
        .unwrap_or("");
    assert!(line.contains("12.50"), "{html}");
    assert!(
        !html.contains("id=\"card-form\""),
        "the holder may not change its own card"
    );
    let (s, _, _) = post_form(&fx, fx.secret(Who::A1), &path, set("1.00")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Off the card.
    accepted(
        &fx,
        Who::A,
        &path,
        vec![("plan_id", fx.a.plan.to_string()), ("remove", "1".into())],
    )
    .await;
    let (_, _, html) = get(&fx, Who::A1, path).await;
    assert!(
        !html.contains(&format!("<tr id=\"card-{}\">", fx.a.plan)),
        "{html}"
    );
}

/// Sites: the list shows each agent's sync state; a site and a NAS are made through
/// their forms (bad input beside its field); an enrollment token's secret is shown on
/// the answer once, never again, and enrolls an agent.
#[tokio::test]
async fn sites_nas_and_enrollment_tokens_through_the_pages() {
    let fx = Fixture::new();
    let html = ok_page(&fx, Who::A, "/panel/sites").await;
    assert!(
        html.contains("site-a") && html.contains("site-a1") && !html.contains("site-b"),
        "{html}"
    );
    assert!(html.contains(&format!("bng-{}", fx.a.site)), "{html}");
    // A taken name: the form again, beside the name.
    let (s, _, html) = post_form(
        &fx,
        fx.secret(Who::A),
        "/panel/sites",
        vec![("name", "site-a".into()), ("location", "Hilltop".into())],
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{html}");
    assert!(html.contains("id=\"e-name\""), "{html}");
    assert_eq!(input_value(&html, "location").as_deref(), Some("Hilltop"));
    let (s, h, _) = post_form(
        &fx,
        fx.secret(Who::A),
        "/panel/sites",
        vec![
            ("name", "Hilltop tower".into()),
            ("location", "Hilltop".into()),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let to = h[header::LOCATION].to_str().unwrap().to_string();
    let html = ok_page(&fx, Who::A, &to.clone()).await;
    assert!(html.contains("id=\"no-agent\""), "{html}");
    let site: i64 = to["/panel/sites/".len()..to.find('?').unwrap()]
        .parse()
        .unwrap();
    // A NAS: a bad address, then a good one.
    let nas = |ip: &str| {
        vec![
            ("name", "core-1".to_string()),
            ("ip", ip.to_string()),
            ("secret", "radius-secret-9".into()),
            ("kind", "accel-ppp".into()),
        ]
    };
    let nas_path = format!("/panel/sites/{site}/nas");
    let (s, _, html) = post_form(&fx, fx.secret(Who::A), &nas_path, nas("192.0.2.300")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("id=\"e-ip\""), "{html}");
    assert_eq!(input_value(&html, "name").as_deref(), Some("core-1"));
    accepted(&fx, Who::A, &nas_path, nas("192.0.2.30")).await;
    let (_, _, html) = get(&fx, Who::A, format!("/panel/sites/{site}")).await;
    assert!(
        html.contains("192.0.2.30") && html.contains("accel-ppp"),
        "{html}"
    );
    // The token: on the answer, not cached, not shown again.
    let (s, h, html) = post_form(
        &fx,
        fx.secret(Who::A),
        &format!("/panel/sites/{site}/enrollment-tokens"),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    let secret = html
        .split("<span id=\"token-secret\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap()
        .to_string();
    assert!(secret.starts_with("ope_"), "{secret}");
    let (_, _, again) = get(&fx, Who::A, format!("/panel/sites/{site}")).await;
    assert!(!again.contains(&secret), "the secret was shown twice");
    let body = json!({ "token": secret, "wireguard_public_key": common::TEST_WG_KEY, "hostname": "hilltop-bng",
                       "agent_version": "0.9.1", "protocol_version": outpost_protocol::PROTOCOL_VERSION });
    let req = Request::post("/agent/v1/enroll")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (s, _, r) = fx.send(req, ip()).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (_, _, html) = get(&fx, Who::A, format!("/panel/sites/{site}")).await;
    assert!(
        html.contains("hilltop-bng") && html.contains("id=\"agent-version\">0.9.1<"),
        "{html}"
    );
    assert!(html.contains("id=\"sync\""), "{html}");
    // B reaches none of it.
    let (s, _, _) = get(&fx, Who::B, format!("/panel/sites/{site}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A login made through the form: a manager with a preset and ticked functions (only
/// those the creator holds are offered), refusals beside their fields without the
/// password sent back, and the edit form changing its functions.
#[tokio::test]
async fn staff_and_managers_through_their_forms() {
    let fx = Fixture::new();
    let html = ok_page(&fx, Who::A, "/panel/users/new").await;
    assert!(html.contains("name=\"perm.manage_plans\""), "{html}");
    assert!(
        html.contains("data-perms=\"view_customers record_payments view_invoices\""),
        "{html}"
    );
    assert!(
        !html.contains("value=\"operator\""),
        "a reseller cannot make operator staff"
    );
    let form = |email: &str, password: &str| {
        vec![
            ("kind", "manager".to_string()),
            ("email", email.to_string()),
            ("name", "Desk Two".into()),
            ("password", password.to_string()),
            ("preset", "collector".into()),
            ("perm.suspend_reconnect", "1".into()),
        ]
    };
    let (s, _, html) = post_form(
        &fx,
        fx.secret(Who::A),
        "/panel/users",
        form("not-an-email", "short"),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"e-email\""), "{html}");
    assert_eq!(input_value(&html, "name").as_deref(), Some("Desk Two"));
    assert_eq!(
        input_value(&html, "password").as_deref(),
        Some(""),
        "the password came back"
    );
    assert!(
        html.contains("name=\"perm.suspend_reconnect\" value=\"1\" checked"),
        "{html}"
    );
    let (s, _, html) = post_form(
        &fx,
        fx.secret(Who::A),
        "/panel/users",
        form("desk2@a.test", "short"),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("id=\"e-password\""), "{html}");
    accepted(
        &fx,
        Who::A,
        "/panel/users",
        form("desk2@a.test", "a-long-password-1"),
    )
    .await;
    let id = fx.query_i64("SELECT id FROM users WHERE email = 'desk2@a.test'");
    let v = fx.get_ok(Who::A, &format!("/api/v1/users/{id}")).await;
    assert_eq!(
        v["permissions"],
        json!([
            "view_customers",
            "record_payments",
            "suspend_reconnect",
            "view_invoices"
        ]),
        "{v}"
    );
    assert_eq!(v["tenant_id"], fx.a.tenant);
    // The manager M may not grant what it lacks: the form does not offer it.
    let (_, _, html) = get(&fx, Who::M, "/panel/users/new".into()).await;
    assert!(
        html.contains("data-status=\"403\""),
        "M lacks manage_staff: {html}"
    );
    // Edit: functions replaced, disabled.
    let html = ok_page(&fx, Who::A, &format!("/panel/users/{id}/edit")).await;
    assert!(
        html.contains("name=\"perm.record_payments\" value=\"1\" checked"),
        "{html}"
    );
    accepted(
        &fx,
        Who::A,
        &format!("/panel/users/{id}"),
        vec![
            ("kind", "manager".into()),
            ("name", "Desk Two".into()),
            ("status", "disabled".into()),
            ("perm.view_customers", "1".into()),
        ],
    )
    .await;
    let v = fx.get_ok(Who::A, &format!("/api/v1/users/{id}")).await;
    assert_eq!(v["permissions"], json!(["view_customers"]));
    assert_eq!(v["status"], "disabled");
    // B's users are not A's to see.
    let (s, _, _) = get(&fx, Who::B, format!("/panel/users/{id}/edit")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A reseller run by its parent: a sub-reseller made through the form, its page saying
/// what disabling cuts, settings saved (bad limits beside their fields), a top-up run
/// once per form key, a refund without its reason refused, and the statement with the
/// API's CSV export.
#[tokio::test]
async fn a_parent_runs_its_reseller_through_the_pages() {
    let fx = Fixture::new();
    let (s, h, body) = post_form(
        &fx,
        fx.secret(Who::A),
        "/panel/resellers",
        vec![("name", "Sky East".into()), ("rebrand_enabled", "1".into())],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    assert!(
        h[header::LOCATION]
            .to_str()
            .unwrap()
            .ends_with("notice=created")
    );
    assert_eq!(
        fx.query_i64("SELECT parent_id FROM tenants WHERE name = 'Sky East'"),
        fx.a.tenant
    );
    let a1 = fx.a1.tenant;
    let path = format!("/panel/resellers/{a1}");
    let html = ok_page(&fx, Who::A, &path.clone()).await;
    let impact = html.split("id=\"disable-impact\"").nth(1).unwrap_or("");
    assert!(
        impact.contains("<strong>1</strong> subscriber(s)"),
        "{html}"
    );
    assert!(impact.contains("<strong>1</strong> site(s)"), "{html}");
    // Settings: a bad limit comes back beside it; then saved, disabled.
    let settings = |max: &str, status: &str| {
        vec![
            ("name", "Sub-reseller A1".to_string()),
            ("status", status.to_string()),
            ("credit_limit", "25.00".into()),
            ("max_subscribers", max.to_string()),
        ]
    };
    let (s, _, html) = post_form(&fx, fx.secret(Who::A), &path, settings("many", "active")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("id=\"e-max_subscribers\""), "{html}");
    assert_eq!(input_value(&html, "credit_limit").as_deref(), Some("25.00"));
    accepted(&fx, Who::A, &path, settings("50", "disabled")).await;
    let v = fx.get_ok(Who::A, &format!("/api/v1/resellers/{a1}")).await;
    assert_eq!(
        (
            v["status"].as_str(),
            v["limits"]["max_subscribers"].as_i64()
        ),
        (Some("disabled"), Some(50))
    );
    assert_eq!(v["credit_limit"], "25.00");
    // Money: a top-up twice with one key moves the balance once.
    let before = (balance(&fx, a1), balance(&fx, fx.a.tenant));
    let money = format!("{path}/balance");
    let top_up = vec![
        ("key", "top-up-key-1".to_string()),
        ("kind", "top_up".into()),
        ("amount", "5.00".into()),
    ];
    for want in ["notice=money", "notice=replayed"] {
        let (s, h, body) = post_form(&fx, fx.secret(Who::A), &money, top_up.clone()).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
        assert!(h[header::LOCATION].to_str().unwrap().ends_with(want));
    }
    assert_eq!(
        (balance(&fx, a1), balance(&fx, fx.a.tenant)),
        (before.0 + 500, before.1 - 500),
        "a transfer from A to A1, once"
    );
    let (s, _, html) = post_form(
        &fx,
        fx.secret(Who::A),
        &money,
        vec![
            ("key", "refund-key-1".into()),
            ("kind", "refund".into()),
            ("amount", "2.00".into()),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("id=\"e-note\""), "{html}");
    assert_eq!(
        input_value(&html, "key").as_deref(),
        Some("refund-key-1"),
        "the key was lost"
    );
    assert_eq!(balance(&fx, a1), before.0 + 500);
    // The statement, and its CSV from the API with the panel's session.
    let html = ok_page(&fx, Who::A, &format!("{path}/statement")).await;
    assert!(
        html.contains("5.00") && html.contains("id=\"csv\""),
        "{html}"
    );
    let req = Request::builder()
        .uri(format!("/api/v1/resellers/{a1}/statement?format=csv"))
        .header(
            header::COOKIE,
            format!("outpost_session={}", fx.secret(Who::A).unwrap()),
        )
        .body(Body::empty())
        .unwrap();
    let (s, h, csv) = fx.send(req, ip()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(csv.as_str().unwrap_or_default().contains(",5.00,"), "{csv}");
    let html = ok_page(&fx, Who::A, "/panel/ledger").await;
    assert!(
        html.contains("id=\"ledger\"") && html.contains("5.00"),
        "{html}"
    );
}

/// The dashboard: sessions online now from the sites' accounting (each tenant its own),
/// and the sites with their agents' sync state.
#[tokio::test]
async fn the_dashboard_shows_sessions_online_and_the_sites_sync() {
    let fx = Fixture::new();
    let version = outpost_protocol::PROTOCOL_VERSION.to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let start = json!({ "events": [{ "seq": 1, "at": now, "type": "accounting",
        "status": "start", "username": "sub-a", "session_id": "s1", "nas_ip": "198.51.100.2",
        "framed_ip": "100.64.0.7", "calling_station_id": "AA:BB:CC:DD:EE:01", "session_time": 0,
        "input_octets": 0, "output_octets": 0, "terminate_cause": null }] });
    let (s, v) = fx
        .request(
            Some(&fx.agents[&fx.a.site].1),
            ip(),
            Method::POST,
            "/agent/v1/events",
            Some(start),
            &[(outpost_protocol::PROTOCOL_HEADER, &version)],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let count = |html: &str| {
        html.split("id=\"online-count\">")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .map(str::to_string)
    };
    let (_, _, html) = get(&fx, Who::A, "/panel".into()).await;
    assert_eq!(count(&html).as_deref(), Some("1"), "{html}");
    let sync = html.split("id=\"site-sync\"").nth(1).unwrap_or("");
    assert!(
        sync.contains("site-a") && sync.contains("class=\"sync"),
        "{html}"
    );
    let (_, _, html) = get(&fx, Who::B, "/panel".into()).await;
    assert_eq!(
        count(&html).as_deref(),
        Some("0"),
        "B counts A's session: {html}"
    );
    // A manager without manage sites sees the count but no sites.
    let (_, _, html) = get(&fx, Who::M, "/panel".into()).await;
    assert_eq!(count(&html).as_deref(), Some("1"));
    assert!(!html.contains("id=\"site-sync\""));
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
    let html = ok_page(&fx, Who::A, "/panel/reports?period=day").await;
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

/// A page that must answer 200 to `who`; its HTML.
async fn ok_page(fx: &Fixture, who: Who, path: &str) -> String {
    let (s, _, html) = view(fx, as_who(fx, who), path).await;
    assert_eq!(s, StatusCode::OK, "{path}: {html}");
    html
}

/// A form `who` posts that must be accepted (a 303); where it sends the browser.
async fn accepted(fx: &Fixture, who: Who, path: &str, form: Vec<(&str, String)>) -> String {
    let (s, h, html) = post_form(fx, as_who(fx, who), path, form).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{path}: {html}");
    h[header::LOCATION].to_str().unwrap().to_string()
}

/// A form `who` posts that must be refused with `want`, the error beside `field` (or,
/// with no field, the error page); the page.
async fn refused(
    fx: &Fixture,
    who: Who,
    path: &str,
    form: Vec<(&str, String)>,
    want: StatusCode,
    field: Option<&str>,
) -> String {
    let (s, _, html) = post_form(fx, as_who(fx, who), path, form).await;
    assert_eq!(s, want, "{path}: {html}");
    match field {
        Some(f) => assert!(html.contains(&format!("id=\"e-{f}\"")), "{path}: {html}"),
        None => assert!(
            html.contains(&format!("data-status=\"{}\"", want.as_u16())),
            "{path}: {html}"
        ),
    }
    html
}

/// Owned form fields from borrowed pairs.
fn fields<'a>(pairs: &[(&'a str, &str)]) -> Vec<(&'a str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// The subscribers-by-status CSV as `who` downloads it.
async fn status_csv(fx: &Fixture, who: Who, query: &str) -> String {
    let path = format!("/panel/reports.csv?report=statuses{query}");
    let (s, h, csv) = view(fx, as_who(fx, who), &path).await;
    assert_eq!(s, StatusCode::OK, "{csv}");
    let file = h[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(file.contains("statuses-daily"), "{file}");
    assert_eq!(
        csv.lines().next(),
        Some("day,active,suspended,expired,disabled")
    );
    csv
}

/// Subscribers by status over time: the sweep loop's daily snapshot, the same rows when
/// taken twice in a day, drawn and exported per reseller subtree; B never sees A's counts.
#[tokio::test]
async fn the_status_history_is_taken_daily_and_read_in_scope() {
    let fx = Fixture::new();
    // A's subtree gets a suspended subscriber; B has none.
    let path = format!("/panel/subscribers/{}/status", fx.a.subscriber);
    accepted(&fx, Who::A, &path, fields(&[("status", "suspended")])).await;
    let first = outpost_controller::jobs::snapshot_statuses(&fx.state)
        .await
        .unwrap();
    let again = outpost_controller::jobs::snapshot_statuses(&fx.state)
        .await
        .unwrap();
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let rows = fx.query_i64(&format!(
        "SELECT count(*) FROM subscriber_status_days WHERE day = '{today}'"
    ));
    assert_eq!((first, again, rows), (first, first, first as i64));
    let line = |tenants: &str| {
        let n = |status: &str| {
            fx.query_i64(&format!(
                "SELECT count(*) FROM subscribers WHERE tenant_id IN ({tenants}) AND status = '{status}'"
            ))
        };
        format!(
            "{today},{},{},{},{}",
            n("active"),
            n("suspended"),
            n("expired"),
            n("disabled")
        )
    };
    let (a_line, b_line) = (line("2, 3"), line("4"));
    assert_ne!(a_line, b_line);
    let a = status_csv(&fx, Who::A, "").await;
    assert!(a.lines().any(|l| l == a_line), "{a} want {a_line}");
    let b = status_csv(&fx, Who::B, "").await;
    assert!(b.lines().any(|l| l == b_line), "{b} want {b_line}");
    assert!(!b.lines().any(|l| l == a_line), "B saw A's counts: {b}");
    let op_b = status_csv(&fx, Who::Op, "&tenant_id=4").await;
    assert_eq!(op_b, b);
    let (s, _, _) = view(
        &fx,
        as_who(&fx, Who::B),
        "/panel/reports.csv?report=statuses&tenant_id=2",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = view(
        &fx,
        as_who(&fx, Who::M),
        "/panel/reports.csv?report=statuses",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The chart and table of the reports page.
    let suspended = a_line.split(',').nth(2).unwrap();
    let html = ok_page(&fx, Who::A, "/panel/reports").await;
    assert!(html.contains("id=\"chart-history\""), "{html}");
    assert!(
        html.contains(&format!("<title>{today} · suspended: {suspended}</title>")),
        "{html}"
    );
    let html = ok_page(&fx, Who::B, "/panel/reports").await;
    assert!(
        html.contains(&format!("<title>{today} · suspended: 0</title>")),
        "{html}"
    );
}

/// A site and a NAS edited through their forms: a NAS's secret is replaced (sealed at
/// rest, audited as `[changed]`), never shown back, kept when left empty; bad input
/// changes nothing; another reseller's are the 404 page.
#[tokio::test]
async fn sites_and_nas_are_edited_through_their_forms() {
    let fx = Fixture::new();
    let site = format!("/panel/sites/{}", fx.a.site);
    let html = ok_page(&fx, Who::A, &format!("{site}/edit")).await;
    assert_eq!(input_value(&html, "name").as_deref(), Some("site-a"));
    let to = accepted(
        &fx,
        Who::A,
        &site,
        fields(&[("name", "site-a-north"), ("location", "Grain silo")]),
    )
    .await;
    assert_eq!(to, format!("{site}?notice=saved"));
    let html = ok_page(&fx, Who::A, &to).await;
    assert!(
        html.contains("site-a-north") && html.contains("Site saved."),
        "{html}"
    );
    let name = || {
        fx.query_i64(&format!(
            "SELECT name = 'site-a-north' FROM sites WHERE id = {}",
            fx.a.site
        ))
    };
    refused(
        &fx,
        Who::A,
        &site,
        fields(&[("name", "")]),
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("name"),
    )
    .await;
    assert_eq!(name(), 1, "a refused form changed the site");
    let (s, _, _) = view(&fx, as_who(&fx, Who::B), &format!("{site}/edit")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    refused(
        &fx,
        Who::B,
        &site,
        fields(&[("name", "taken-over")]),
        StatusCode::NOT_FOUND,
        None,
    )
    .await;
    assert_eq!(name(), 1);

    let nas = format!("/panel/nas/{}", fx.a.nas);
    let api = format!("/api/v1/nas/{}", fx.a.nas);
    let old = fx.get_ok(Who::A, &api).await["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let html = ok_page(&fx, Who::A, &format!("{nas}/edit")).await;
    assert!(!html.contains(&old), "the stored secret was shown: {html}");
    assert_eq!(input_value(&html, "secret").as_deref(), Some(""));
    let form = |ip: &str, secret: &str| {
        fields(&[
            ("name", "core-1"),
            ("ip", ip),
            ("secret", secret),
            ("kind", "accel-ppp"),
            ("coa_port", "1700"),
        ])
    };
    let html = refused(
        &fx,
        Who::A,
        &nas,
        form("192.0.2.300", "typed-secret-1"),
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("ip"),
    )
    .await;
    assert!(
        !html.contains("typed-secret-1"),
        "a typed secret came back: {html}"
    );
    assert_eq!(fx.get_ok(Who::A, &api).await["secret"], old.as_str());
    let to = accepted(&fx, Who::A, &nas, form("192.0.2.31", "new-radius-secret-7")).await;
    assert_eq!(to, format!("/panel/sites/{}?notice=nas_saved", fx.a.site));
    let v = fx.get_ok(Who::A, &api).await;
    assert_eq!(
        (
            v["secret"].as_str(),
            v["ip"].as_str(),
            v["coa_port"].as_i64()
        ),
        (Some("new-radius-secret-7"), Some("192.0.2.31"), Some(1700))
    );
    let clear = |table: &str, col: &str| {
        fx.query_i64(&format!("SELECT count(*) FROM {table} WHERE instr(CAST({col} AS BLOB), CAST('new-radius-secret-7' AS BLOB)) > 0"))
    };
    assert_eq!(
        (clear("nas", "secret_sealed"), clear("audit_log", "after")),
        (0, 0),
        "the secret is stored or audited in clear"
    );
    // The change is audited, its secret redacted.
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM audit_log WHERE action = 'nas.update' AND instr(after, '\"secret\":\"[redacted]\"') > 0"),
        1
    );
    // Left empty, the secret stays.
    accepted(&fx, Who::A, &nas, form("192.0.2.31", "")).await;
    assert_eq!(
        fx.get_ok(Who::A, &api).await["secret"],
        "new-radius-secret-7"
    );
    let (s, _, _) = view(&fx, as_who(&fx, Who::B), &format!("{nas}/edit")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    refused(
        &fx,
        Who::B,
        &nas,
        form("192.0.2.99", "stolen-secret-1"),
        StatusCode::NOT_FOUND,
        None,
    )
    .await;
    assert_eq!(fx.get_ok(Who::A, &api).await["ip"], "192.0.2.31");
}

/// The secret shown once on the page that made a token.
fn token_secret(html: &str) -> String {
    html.split("<span id=\"token-secret\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap()
        .to_string()
}

/// An unused enrollment token revoked from the site's page enrols nothing; another
/// reseller can revoke it neither through the panel nor the API; a used one or one
/// revoked already is a conflict.
#[tokio::test]
async fn an_unused_enrollment_token_is_revoked_and_enrols_nothing() {
    let fx = Fixture::new();
    let site = format!("/panel/sites/{}", fx.a.site);
    let (s, _, html) = post_form(
        &fx,
        as_who(&fx, Who::A),
        &format!("{site}/enrollment-tokens"),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let secret = token_secret(&html);
    let id = fx.query_i64("SELECT max(id) FROM enrollment_tokens");
    let revoke = format!("/panel/enrollment-tokens/{id}/revoke");
    assert!(html.contains(&format!("action=\"{revoke}\"")), "{html}");
    let revoked = || {
        fx.query_i64(&format!(
            "SELECT revoked_at IS NOT NULL FROM enrollment_tokens WHERE id = {id}"
        ))
    };
    refused(&fx, Who::B, &revoke, vec![], StatusCode::NOT_FOUND, None).await;
    let (s, _) = fx
        .call(
            Who::B,
            Method::DELETE,
            &format!("/api/v1/enrollment-tokens/{id}"),
            None,
        )
        .await;
    assert_eq!((s, revoked()), (StatusCode::NOT_FOUND, 0));
    let to = accepted(&fx, Who::A, &revoke, vec![]).await;
    assert_eq!(to, format!("{site}?notice=revoked"));
    let html = ok_page(&fx, Who::A, &to).await;
    assert!(
        html.contains("revoked ") && !html.contains(&format!("id=\"revoke-{id}\"")),
        "{html}"
    );
    assert_eq!(fx.query_i64(&format!("SELECT count(*) FROM audit_log WHERE action = 'enrollment_token.revoke' AND target_id = {id}")), 1);
    let body = json!({ "token": secret, "wireguard_public_key": common::TEST_WG_KEY, "hostname": "bng",
                       "agent_version": "1", "protocol_version": outpost_protocol::PROTOCOL_VERSION });
    let req = Request::post("/agent/v1/enroll")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (s, _, r) = fx.send(req, ip()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a revoked token enrolled: {r}");
    refused(&fx, Who::A, &revoke, vec![], StatusCode::CONFLICT, None).await;
    let used = fx.query_i64(&format!(
        "SELECT id FROM enrollment_tokens WHERE site_id = {} AND used_at IS NOT NULL",
        fx.a.site
    ));
    let (s, v) = fx
        .call(
            Who::A,
            Method::DELETE,
            &format!("/api/v1/enrollment-tokens/{used}"),
            None,
        )
        .await;
    common::assert_error(s, &v, StatusCode::CONFLICT, "token_used");
}

/// A parent sets its reseller's custom domain, allowed IPs and brand through the pages
/// (the API's operations and audit); bad input is refused beside its field and changes
/// nothing; the brand shows on the login page of the custom domain; B reaches none of it.
#[tokio::test]
async fn a_parent_sets_its_resellers_domain_allowed_ips_and_brand() {
    let fx = Fixture::new();
    let path = "/panel/resellers/3";
    let html = ok_page(&fx, Who::A, path).await;
    assert!(html.contains("/panel/resellers/3/brand"), "{html}");
    let form = |ips: &str| {
        let mut f = fields(&[
            ("status", "active"),
            ("credit_limit", "0.00"),
            ("custom_domain", "a1.example.net"),
            ("rebrand_enabled", "1"),
        ]);
        f.push(("name", input_value(&html, "name").unwrap()));
        f.push(("allowed_ips", ips.to_string()));
        f
    };
    let domain = || {
        fx.query_i64(
            "SELECT count(*) FROM tenants WHERE id = 3 AND custom_domain = 'a1.example.net'",
        )
    };
    refused(
        &fx,
        Who::A,
        path,
        form("203.0.113.0/33"),
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("allowed_ips"),
    )
    .await;
    assert_eq!(domain(), 0, "a refused form changed the reseller");
    accepted(&fx, Who::A, path, form("203.0.113.0/24, 198.51.100.7")).await;
    assert_eq!(domain(), 1);
    let html = ok_page(&fx, Who::A, path).await;
    assert_eq!(
        input_value(&html, "custom_domain").as_deref(),
        Some("a1.example.net")
    );
    assert!(
        input_value(&html, "allowed_ips")
            .unwrap()
            .contains("203.0.113.0/24"),
        "{html}"
    );
    let brand = "/panel/resellers/3/brand";
    ok_page(&fx, Who::A, brand).await;
    refused(
        &fx,
        Who::A,
        brand,
        fields(&[("name", "Skylink"), ("color", "green")]),
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("color"),
    )
    .await;
    let to = accepted(
        &fx,
        Who::A,
        brand,
        fields(&[
            ("name", "Skylink"),
            ("color", "#0a7d32"),
            ("tagline", "Fast in the hills"),
        ]),
    )
    .await;
    assert_eq!(to, format!("{brand}?notice=saved"));
    assert_eq!(
        fx.query_i64(&format!("SELECT count(*) FROM audit_log WHERE action = 'reseller.brand' AND target_id = 3 AND actor_user_id = {}", fx.user_id(Who::A))),
        1
    );
    let o = Opts {
        host: Some("a1.example.net"),
        ..Default::default()
    };
    let (s, _, login) = page(&fx, Method::GET, "/panel/login", o).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        login.contains("Skylink") && login.contains("Fast in the hills"),
        "{login}"
    );
    let (s, _, _) = view(&fx, as_who(&fx, Who::B), brand).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    refused(
        &fx,
        Who::B,
        brand,
        fields(&[("name", "Hijacked")]),
        StatusCode::NOT_FOUND,
        None,
    )
    .await;
    refused(
        &fx,
        Who::M,
        brand,
        fields(&[("name", "Hijacked")]),
        StatusCode::FORBIDDEN,
        None,
    )
    .await;
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM tenants WHERE brand_name = 'Hijacked'"),
        0
    );
}

/// A statement from and until given days, and its CSV link over the same days.
#[tokio::test]
async fn a_statement_is_filtered_by_date_and_its_csv_follows() {
    let fx = Fixture::new();
    fx.money_ok(
        Who::A,
        "/api/v1/resellers/3/balance",
        json!({ "amount": "5.00", "note": "dated top-up" }),
    )
    .await;
    let today = time::OffsetDateTime::now_utc().date();
    let tomorrow = today.next_day().unwrap();
    let base = "/panel/resellers/3/statement";
    let html = ok_page(&fx, Who::A, &format!("{base}?since={today}&until={today}")).await;
    assert!(html.contains("dated top-up"), "{html}");
    assert_eq!(input_value(&html, "since"), Some(today.to_string()));
    let csv = html
        .split("href=\"")
        .find_map(|r| {
            r.split_once("\" id=\"csv\"")
                .map(|(h, _)| h.replace("&#38;", "&").replace("&amp;", "&"))
        })
        .unwrap();
    assert!(
        csv.ends_with(&format!(
            "since={today}T00:00:00Z&until={tomorrow}T00:00:00Z"
        )),
        "{csv}"
    );
    let body = ok_page(&fx, Who::A, &csv).await;
    assert!(body.contains("dated top-up"), "{body}");
    let html = ok_page(&fx, Who::A, &format!("{base}?since={tomorrow}")).await;
    assert!(
        !html.contains("dated top-up") && html.contains("No entries."),
        "{html}"
    );
    let (s, _, body) = view(
        &fx,
        as_who(&fx, Who::A),
        &format!("{base}?until=31-12-2026"),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (s, _, _) = view(&fx, as_who(&fx, Who::B), &format!("{base}?since={today}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// The dashboard lists the first sites, says how many there are in all, and links to
/// the paged list.
#[tokio::test]
async fn the_dashboard_counts_every_site_and_links_to_the_list() {
    let fx = Fixture::new();
    let html = ok_page(&fx, Who::A, "/panel").await;
    assert!(!html.contains("id=\"sites-more\""), "{html}");
    for i in 0..20 {
        let (s, v) = fx
            .post(
                Who::A,
                "/api/v1/sites",
                json!({ "name": format!("extra-{i:02}") }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let n = fx.query_i64("SELECT count(*) FROM sites WHERE tenant_id IN (2, 3)");
    let html = ok_page(&fx, Who::A, "/panel").await;
    assert!(
        html.contains(&format!("The first 20 of {n} sites.")),
        "{html}"
    );
    assert!(
        html.contains("<a href=\"/panel/sites\">All sites →</a>"),
        "{html}"
    );
    let list = ok_page(&fx, Who::A, "/panel/sites").await;
    assert!(list.contains("extra-19"), "{list}");
}

/// The subscriber list filtered by the reseller owning them: A sees its sub-reseller's
/// alone; B asking for A's gets nothing of A's.
#[tokio::test]
async fn the_subscriber_list_filters_by_reseller_in_scope() {
    let fx = Fixture::new();
    let username = |id: i64| {
        let v = fx.state.db.write_blocking(|tx| {
            Ok(tx.query_row(
                "SELECT username FROM subscribers WHERE id = ?1",
                [id],
                |r| r.get::<_, String>(0),
            )?)
        });
        v.unwrap()
    };
    let (a, a1, b) = (
        username(fx.a.subscriber),
        username(fx.a1.subscriber),
        username(fx.b.subscriber),
    );
    let html = ok_page(&fx, Who::A, "/panel/subscribers?tenant_id=3").await;
    assert!(
        html.contains(&format!(">{a1}<")) && !html.contains(&format!(">{a}<")),
        "{html}"
    );
    assert!(html.contains("<option value=\"3\" selected>"), "{html}");
    let html = ok_page(&fx, Who::B, "/panel/subscribers?tenant_id=2").await;
    assert!(
        !html.contains(&format!(">{a}<")) && !html.contains(&format!(">{b}<")),
        "{html}"
    );
    let (s, _, _) = view(&fx, as_who(&fx, Who::A), "/panel/subscribers?tenant_id=x").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Issue 10's "expiring" filter: active subscribers whose expiry falls within the days
/// asked, in the panel and the API alike, never outside the actor's part of the tree.
#[tokio::test]
async fn the_subscriber_list_filters_by_expiry_in_scope() {
    let fx = Fixture::new();
    let day = 86_400;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let at = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    for (id, expires) in [
        (fx.a.subscriber, now + 3 * day),
        (fx.a1.subscriber, now + 60 * day),
        (fx.b.subscriber, now + 2 * day),
    ] {
        fx.patch_ok(
            Who::Op,
            &format!("/api/v1/subscribers/{id}"),
            json!({ "expires_at": at(expires), "status": "active" }),
        )
        .await;
    }
    let ids = |v: &serde_json::Value| -> Vec<i64> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_i64().unwrap())
            .collect()
    };
    let a_week = fx
        .get_ok(Who::A, "/api/v1/subscribers?expiring_days=7")
        .await;
    assert_eq!(ids(&a_week), vec![fx.a.subscriber], "{a_week}");
    let a_quarter = ids(&fx
        .get_ok(Who::A, "/api/v1/subscribers?expiring_days=90")
        .await);
    assert!(a_quarter.contains(&fx.a1.subscriber) && !a_quarter.contains(&fx.b.subscriber));
    let op_week = ids(&fx
        .get_ok(Who::Op, "/api/v1/subscribers?expiring_days=7")
        .await);
    assert!(op_week.contains(&fx.a.subscriber) && op_week.contains(&fx.b.subscriber));
    assert!(!op_week.contains(&fx.a1.subscriber));
    // A suspended subscriber is not "expiring": it is already cut off.
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/subscribers/{}", fx.a.subscriber),
        json!({ "status": "suspended" }),
    )
    .await;
    assert!(
        ids(&fx
            .get_ok(Who::A, "/api/v1/subscribers?expiring_days=7")
            .await)
        .is_empty()
    );
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/subscribers/{}", fx.a.subscriber),
        json!({ "status": "active" }),
    )
    .await;
    let (s, b) = fx
        .get(Who::A, "/api/v1/subscribers?expiring_days=400")
        .await;
    assert!(s.is_client_error(), "{s} {b}");

    let username = |id: i64| {
        fx.state
            .db
            .write_blocking(|tx| {
                Ok(tx.query_row(
                    "SELECT username FROM subscribers WHERE id = ?1",
                    [id],
                    |r| r.get::<_, String>(0),
                )?)
            })
            .unwrap()
    };
    let (a, a1, b) = (
        username(fx.a.subscriber),
        username(fx.a1.subscriber),
        username(fx.b.subscriber),
    );
    let html = ok_page(&fx, Who::A, "/panel/subscribers?expiring=7").await;
    assert!(html.contains(&format!(">{a}<")), "{html}");
    assert!(
        !html.contains(&format!(">{a1}<")) && !html.contains(&format!(">{b}<")),
        "{html}"
    );
    assert!(html.contains("<option value=\"7\" selected>"), "{html}");
    let dashboard = ok_page(&fx, Who::A, "/panel").await;
    assert!(
        dashboard.contains("/panel/subscribers?expiring=7"),
        "{dashboard}"
    );
    let (s, _, _) = view(&fx, as_who(&fx, Who::A), "/panel/subscribers?expiring=soon").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}
