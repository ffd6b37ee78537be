//! The subscriber portal over HTTP (no browser): logging in with the PPPoE credential on
//! the reseller's domain, the home page scoped to that one subscriber (tried with the
//! ids and data of others), the password change reaching the feed, CSRF, throttling and
//! audit. The browser test is `tests/tests/portal_browser.rs`.

mod common;

use std::net::IpAddr;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use common::{Fixture, Who};
use serde_json::{Value, json};

const A_DOMAIN: &str = "my.skylink.example";
const B_DOMAIN: &str = "my.blue.example";

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

/// A browser's cookie jar and Host, against the fixture's app.
struct Browser<'a> {
    fx: &'a Fixture,
    host: &'a str,
    cookies: Vec<(String, String)>,
}

impl<'a> Browser<'a> {
    fn new(fx: &'a Fixture, host: &'a str) -> Self {
        Browser {
            fx,
            host,
            cookies: vec![],
        }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        form: Option<&[(&str, &str)]>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.host)
            .header(header::USER_AGENT, "portal-tests");
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            b = b.header(header::COOKIE, c.join("; "));
        }
        let req = match form {
            Some(fields) => {
                let body: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                    .collect();
                b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(body.join("&")))
                    .unwrap()
            }
            None => b.body(Body::empty()).unwrap(),
        };
        let (status, headers, v) = self.fx.send(req, ip()).await;
        for c in headers.get_all(header::SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            assert!(attrs.contains("HttpOnly"), "{c}");
            assert!(attrs.contains("Path=/portal"), "{c}");
            self.cookies.retain(|(n, _)| n != k);
            if !attrs.contains("Max-Age=0") {
                assert!(attrs.contains("SameSite=Strict"), "{c}");
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
        let text = match v {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        };
        (status, headers, text)
    }

    async fn get(&mut self, path: &str) -> (StatusCode, String) {
        let (s, _, t) = self.send(Method::GET, path, None).await;
        (s, t)
    }

    /// Posts a form with the CSRF token of the page at `from`.
    async fn post(
        &mut self,
        from: &str,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let (_, html) = self.get(from).await;
        let csrf = csrf_of(&html);
        let mut all = form.to_vec();
        all.push(("csrf", &csrf));
        self.send(Method::POST, path, Some(&all)).await
    }

    async fn login(&mut self, username: &str, password: &str) -> (StatusCode, String) {
        let (s, h, t) = self
            .post(
                "/portal/login",
                "/portal/login",
                &[("username", username), ("password", password)],
            )
            .await;
        if s == StatusCode::SEE_OTHER {
            assert_eq!(h[header::LOCATION], "/portal");
        }
        (s, t)
    }

    fn session(&self) -> Option<String> {
        self.cookies
            .iter()
            .find(|(k, _)| k == "outpost_portal")
            .map(|(_, v)| v.clone())
    }
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no CSRF field in {html}"));
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// A's and B's custom domains and brands, a renewal, payment, usage and a notice for
/// each of A's and B's subscribers: the data a leak would show.
async fn seeded() -> Fixture {
    let fx = Fixture::new();
    for (id, domain, name) in [(2, A_DOMAIN, "Skylink"), (4, B_DOMAIN, "Blue Net")] {
        fx.patch_ok(
            Who::Op,
            &format!("/api/v1/resellers/{id}"),
            json!({ "custom_domain": domain }),
        )
        .await;
        let (s, v) = fx
            .call(
                Who::Op,
                Method::PUT,
                &format!("/api/v1/resellers/{id}/brand"),
                Some(json!({ "name": name, "color": "#0a7d32", "contact": format!("help@{domain}") })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    for (who, h) in [(Who::A, fx.a), (Who::B, fx.b)] {
        fx.money_ok(
            who,
            &format!("/api/v1/subscribers/{}/renew", h.subscriber),
            json!({ "periods": 1 }),
        )
        .await;
        let (s, v) = fx
            .money(
                who,
                &format!("/api/v1/subscribers/{}/payments", h.subscriber),
                json!({ "amount": if who == Who::A { "22.50" } else { "77.70" }, "method": "cash", "reference": format!("R-{who:?}") }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let title = format!("Maintenance for {who:?} customers");
        let (s, v) = fx
            .post(
                who,
                "/api/v1/notices",
                json!({ "title": title, "body": "Tower work on Tuesday.",
                    "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z" }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let today = &outpost_controller::db::rfc3339(outpost_controller::db::now())[..10];
    fx.state
        .db
        .write_blocking(|tx| {
            for (sub, n) in [(fx.a.subscriber, 3_000_000_000_i64), (fx.b.subscriber, 9_000_000_000)] {
                tx.execute(
                    "INSERT INTO usage_daily (subscriber_id, day, input_octets, output_octets) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![sub, today, n / 10, n],
                )?;
            }
            Ok(())
        })
        .unwrap();
    fx
}

#[tokio::test]
async fn a_subscriber_logs_in_with_its_ppp_password_on_its_resellers_domain_and_sees_only_its_own_data()
 {
    let fx = seeded().await;
    let mut br = Browser::new(&fx, A_DOMAIN);
    let (s, html) = br.get("/portal").await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{html}");
    let (s, html) = br.get("/portal/login").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("Skylink"), "the domain's brand before login");
    let (s, html) = br.login("sub-a", "ppp-a").await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{html}");
    let (s, html) = br.get("/portal").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    for want in [
        "Skylink",
        "help@my.skylink.example",
        r#"id="username">sub-a<"#,
        "a-home",
        "20 Mbit/s down / 5 Mbit/s up",
        "Maintenance for A customers",
        "22.50",
        "30.00", // a-home's retail price, renewed once
        "3.3 GB used",
        "<svg class=\"chart\"",
        r#"data-status="active""#,
    ] {
        assert!(html.contains(want), "home page lacks {want}:\n{html}");
    }
    // Nothing of anyone else's: B's subscriber, notice and payment, A1's subscriber.
    for leak in [
        "sub-b",
        "Maintenance for B",
        "77.70",
        "sub-a1",
        "Customer b",
        "9.9 GB",
    ] {
        assert!(!html.contains(leak), "home page shows {leak}");
    }
    // No route takes an id: others' ids change nothing or are not found.
    for path in [
        format!("/portal?subscriber_id={}", fx.b.subscriber),
        format!("/portal?id={}", fx.a1.subscriber),
    ] {
        let (s, html) = br.get(&path).await;
        assert_eq!(s, StatusCode::OK);
        assert!(html.contains(r#"id="username">sub-a<"#) && !html.contains("sub-b"));
    }
    for path in [
        format!("/portal/subscribers/{}", fx.b.subscriber),
        format!("/portal/{}", fx.a1.subscriber),
        "/portal/usage".to_string(),
    ] {
        let (s, html) = br.get(&path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        assert!(!html.contains("sub-b"));
    }
    // The portal session opens neither the API nor the panel.
    let secret = br.session().unwrap();
    let (s, _) = fx
        .request(Some(&secret), ip(), Method::GET, "/api/v1/me", None, &[])
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Audited, under the subscriber's owner.
    let n = fx.query_i64(&format!(
        "SELECT count(*) FROM audit_log WHERE action = 'portal.login' AND tenant_id = 2 AND target_id = {}",
        fx.a.subscriber
    ));
    assert_eq!(n, 1);

    // A sub-reseller's subscriber logs in on A's domain too (A's subtree), with A's brand.
    let mut br1 = Browser::new(&fx, A_DOMAIN);
    let (s, html) = br1.login("sub-a1", "ppp-a1").await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{html}");
    let (_, html) = br1.get("/portal").await;
    assert!(html.contains(r#"id="username">sub-a1<"#) && html.contains("Skylink"));
    assert!(
        html.contains("Maintenance for A customers"),
        "A's notice is for its subtree"
    );
    assert!(
        !html.contains("22.50"),
        "A's subscriber's payment is not A1's"
    );
}

#[tokio::test]
async fn another_resellers_subscriber_staff_and_wrong_passwords_do_not_get_in() {
    let fx = seeded().await;
    let before = fx.query_i64("SELECT count(*) FROM portal_sessions");
    // B's subscriber, right password, on A's domain: refused and recorded.
    let mut br = Browser::new(&fx, A_DOMAIN);
    let (s, html) = br.login("sub-b", "ppp-b").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{html}");
    assert!(html.contains("does not log in at this address"));
    assert!(br.session().is_none());
    let n = fx.query_i64(
        "SELECT count(*) FROM audit_log WHERE action = 'security.portal_login_wrong_domain' AND security = 1",
    );
    assert_eq!(n, 1);
    // On its own domain it gets in; a cookie carried to A's domain is nobody there.
    let mut bb = Browser::new(&fx, B_DOMAIN);
    assert_eq!(bb.login("sub-b", "ppp-b").await.0, StatusCode::SEE_OTHER);
    let (_, html) = bb.get("/portal").await;
    assert!(html.contains("Blue Net") && html.contains(r#"id="username">sub-b<"#));
    let mut carried = Browser::new(&fx, A_DOMAIN);
    carried.cookies = bb.cookies.clone();
    let (s, _) = carried.get("/portal").await;
    assert_eq!(
        s,
        StatusCode::SEE_OTHER,
        "B's session on A's domain is not logged in"
    );

    // Staff credentials are not subscriber credentials, and a staff session is nobody here.
    let mut br = Browser::new(&fx, A_DOMAIN);
    let (s, _) = br.login("a@fixture.test", common::PASSWORD).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    br.cookies
        .push(("outpost_session".into(), fx.secret(Who::A).unwrap()));
    assert_eq!(br.get("/portal").await.0, StatusCode::SEE_OTHER);

    // A wrong password: 401 on the form; the sixth in a row from one address: throttled.
    let mut br = Browser::new(&fx, A_DOMAIN);
    for _ in 0..5 {
        let (s, html) = br.login("sub-a", "not-it").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{html}");
        assert!(html.contains("username or password is incorrect"));
    }
    let (s, html) = br.login("sub-a", "ppp-a").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{html}");
    assert!(html.contains("too many failed logins"));

    // Without the login form's CSRF cookie and token: refused before anything is counted.
    let mut br = Browser::new(&fx, A_DOMAIN);
    let (s, _, _) = br
        .send(
            Method::POST,
            "/portal/login",
            Some(&[
                ("username", "sub-a1"),
                ("password", "ppp-a1"),
                ("csrf", "forged"),
            ]),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Only B's own login made a session.
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM portal_sessions"),
        before + 1
    );
}

#[tokio::test]
async fn a_password_change_is_checked_reaches_the_sites_feed_and_ends_other_sessions() {
    let fx = seeded().await;
    let (agent_cred, site) = (fx.agents[&fx.a.site].1.clone(), fx.a.site);
    let head = |fx: &Fixture| {
        fx.query_i64(&format!(
            "SELECT coalesce(max(revision), 0) FROM site_changes WHERE site_id = {site}"
        ))
    };
    let mut br = Browser::new(&fx, A_DOMAIN);
    assert_eq!(br.login("sub-a", "ppp-a").await.0, StatusCode::SEE_OTHER);
    let mut other = Browser::new(&fx, A_DOMAIN);
    assert_eq!(other.login("sub-a", "ppp-a").await.0, StatusCode::SEE_OTHER);
    let rev = head(&fx);
    let audit_before = fx.audit_tail().0;

    // Refusals change nothing: wrong current password, confirmation differs, a control
    // character, the same password, a forged CSRF token.
    for (current, new, confirm, want, text) in [
        (
            "wrong",
            "new-pass-1",
            "new-pass-1",
            StatusCode::UNPROCESSABLE_ENTITY,
            "current password is not right",
        ),
        (
            "ppp-a",
            "new-pass-1",
            "new-pass-2",
            StatusCode::UNPROCESSABLE_ENTITY,
            "confirmation differ",
        ),
        (
            "ppp-a",
            "new\u{1}pass",
            "new\u{1}pass",
            StatusCode::UNPROCESSABLE_ENTITY,
            "without control characters",
        ),
        (
            "ppp-a",
            "ppp-a",
            "ppp-a",
            StatusCode::UNPROCESSABLE_ENTITY,
            "must differ",
        ),
        (
            "ppp-a",
            &"x".repeat(129),
            &"x".repeat(129),
            StatusCode::UNPROCESSABLE_ENTITY,
            "1 to 128",
        ),
    ] {
        let (s, _, html) = br
            .post(
                "/portal",
                "/portal/password",
                &[
                    ("current_password", current),
                    ("new_password", new),
                    ("confirm_password", confirm),
                ],
            )
            .await;
        assert_eq!(s, want, "{html}");
        assert!(html.contains(text), "{text}: {html}");
    }
    let (s, _, _) = br
        .send(
            Method::POST,
            "/portal/password",
            Some(&[
                ("current_password", "ppp-a"),
                ("new_password", "n-1"),
                ("confirm_password", "n-1"),
                ("csrf", "forged"),
            ]),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(head(&fx), rev, "nothing reached the feed");
    // Only the wrong current password was recorded (a security event).
    assert_eq!(fx.audit_tail().0, audit_before + 1);

    let (s, h, html) = br
        .post(
            "/portal",
            "/portal/password",
            &[
                ("current_password", "ppp-a"),
                ("new_password", "Fresh pass 2"),
                ("confirm_password", "Fresh pass 2"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{html}");
    assert_eq!(h[header::LOCATION], "/portal?notice=password");
    let (_, html) = br.get("/portal?notice=password").await;
    assert!(html.contains("Your password is changed"));

    // The site's feed carries the new password to the agent.
    let (s, v) = fx
        .request(
            Some(&agent_cred),
            ip(),
            Method::GET,
            &format!("/agent/v1/state?since={rev}"),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["kind"], "delta");
    let sub = v["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["username"] == "sub-a")
        .unwrap_or_else(|| panic!("sub-a not in the delta: {v}"));
    assert_eq!(sub["password"], "Fresh pass 2");

    // The other session is over; the old password no longer logs in, the new one does.
    assert_eq!(other.get("/portal").await.0, StatusCode::SEE_OTHER);
    assert_eq!(
        br.get("/portal").await.0,
        StatusCode::OK,
        "this session goes on"
    );
    let mut again = Browser::new(&fx, A_DOMAIN);
    assert_eq!(
        again.login("sub-a", "ppp-a").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        again.login("sub-a", "Fresh pass 2").await.0,
        StatusCode::SEE_OTHER
    );
    // The staff API reads the new one too (one credential).
    let v = fx
        .get_ok(Who::A, &format!("/api/v1/subscribers/{}", fx.a.subscriber))
        .await;
    assert_eq!(v["password"], "Fresh pass 2");
    // Audited without the password.
    let (after, body): (String, String) = fx
        .state
        .db
        .write_blocking(|tx| {
            Ok(tx.query_row(
                "SELECT action, coalesce(after, '') FROM audit_log WHERE action = 'subscriber.password_change'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .unwrap();
    assert_eq!(after, "subscriber.password_change");
    assert!(!body.contains("Fresh pass 2"), "{body}");

    // Logging out ends the session.
    let (s, h, _) = br.post("/portal", "/portal/logout", &[]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/portal/login");
    assert_eq!(br.get("/portal").await.0, StatusCode::SEE_OTHER);
}
