//! Notices over the API: posted for one's own subtree (all of it, a plan, a site), read
//! back in scope, refused with another reseller's ids (nothing saved), a manager's for
//! its own customers only, and carried by the sites' feed: only to the sites whose
//! subscribers they are for, only until they end.

mod common;

use std::net::IpAddr;

use axum::http::{Method, StatusCode};
use common::{Fixture, Who, assert_error};
use outpost_protocol as proto;
use serde_json::{Value, json};

fn ip() -> IpAddr {
    common::CLIENT_IP.parse().unwrap()
}

const NOW_TO_LATER: (&str, &str) = ("2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z");

fn notice(title: &str, extra: Value) -> Value {
    let mut v = json!({ "title": title, "body": "Line one\nline two",
        "starts_at": NOW_TO_LATER.0, "ends_at": NOW_TO_LATER.1 });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

async fn post(fx: &Fixture, who: Who, body: Value) -> Value {
    let (s, v) = fx.post(who, "/api/v1/notices", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

/// The state a site's agent gets since `since`.
async fn state(fx: &Fixture, site: i64, since: u64) -> proto::StateResponse {
    let cred = fx.agents[&site].1.clone();
    let (s, v) = fx
        .request(
            Some(&cred),
            ip(),
            Method::GET,
            &format!("/agent/v1/state?since={since}"),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    serde_json::from_value(v).unwrap()
}

fn titles(s: &proto::StateResponse) -> Vec<(String, Vec<i64>, Vec<i64>)> {
    s.notices
        .as_ref()
        .expect("the state carries the notices")
        .iter()
        .map(|n| {
            (
                n.title.clone(),
                n.tenant_ids.clone(),
                n.subscriber_ids.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_reseller_posts_for_its_subtree_a_plan_or_a_site_and_each_site_gets_only_its_own() {
    let fx = Fixture::new();
    let heads: Vec<u64> = [fx.a.site, fx.a1.site, fx.b.site]
        .iter()
        .map(|s| {
            fx.query_i64(&format!(
                "SELECT max(revision) FROM site_changes WHERE site_id = {s}"
            )) as u64
        })
        .collect();
    let all = post(&fx, Who::A, notice("Outage tonight", json!({}))).await;
    assert_eq!(all["tenant_id"], 2);
    assert_eq!(all["direct_customers_only"], false);
    assert_eq!(all["active"], true);
    let by_plan = post(
        &fx,
        Who::A,
        notice("Plan a-home doubles", json!({ "plan_id": fx.a.plan })),
    )
    .await;
    let by_site = post(
        &fx,
        Who::A,
        notice("A1 tower work", json!({ "site_id": fx.a1.site })),
    )
    .await;
    // Ended and future notices.
    post(
        &fx,
        Who::A,
        notice(
            "Long over",
            json!({ "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2020-01-02T00:00:00Z" }),
        ),
    )
    .await;
    let future = post(
        &fx,
        Who::A,
        notice("Next year", json!({ "starts_at": "2098-01-01T00:00:00Z" })),
    )
    .await;
    assert_eq!(future["active"], false);

    // Site a (A's subscriber): the subtree notice by tenant, the plan notice by
    // subscriber, the future one (the agent shows it when it starts), not the ended one,
    // not A1's site notice.
    let s = state(&fx, fx.a.site, heads[0]).await;
    assert_eq!(
        s.kind,
        proto::StateKind::Delta,
        "the notices are news for the site"
    );
    assert_eq!(
        titles(&s),
        vec![
            ("Outage tonight".into(), vec![2], vec![]),
            ("Plan a-home doubles".into(), vec![], vec![fx.a.subscriber]),
            ("Next year".into(), vec![2], vec![]),
        ]
    );
    // Site a1 (A1's subscriber, in A's subtree): the subtree and the site notice.
    let s = state(&fx, fx.a1.site, heads[1]).await;
    assert_eq!(
        titles(&s),
        vec![
            ("Outage tonight".into(), vec![3], vec![]),
            ("A1 tower work".into(), vec![3], vec![]),
            ("Next year".into(), vec![3], vec![]),
        ]
    );
    // Site b heard nothing: no change, and its snapshot holds no notice.
    let s = state(&fx, fx.b.site, heads[2]).await;
    assert_eq!(s.kind, proto::StateKind::Unchanged);
    assert!(
        s.notices.is_none(),
        "an unchanged answer leaves the agent's notices alone"
    );
    assert_eq!(titles(&state(&fx, fx.b.site, 0).await), vec![]);

    // Reads in scope: A sees its five, A1 none of A's, B none, the operator all.
    let list = fx.get_ok(Who::A, "/api/v1/notices").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 5);
    assert_eq!(list["items"][0]["title"], "Next year", "newest first");
    let list = fx.get_ok(Who::A, "/api/v1/notices?active=true").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    for who in [Who::A1, Who::B] {
        let list = fx.get_ok(who, "/api/v1/notices").await;
        assert!(
            list["items"].as_array().unwrap().is_empty(),
            "{who:?}: {list}"
        );
        let (s, v) = fx.get(who, &format!("/api/v1/notices/{}", all["id"])).await;
        assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(
        fx.get_ok(Who::Op, "/api/v1/notices").await["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    // A change and a deletion reach the site; each is audited.
    let rev = fx.query_i64(&format!(
        "SELECT max(revision) FROM site_changes WHERE site_id = {}",
        fx.a.site
    )) as u64;
    let v = fx
        .patch_ok(
            Who::A,
            &format!("/api/v1/notices/{}", by_plan["id"]),
            json!({ "title": "Plan a-home: faster" }),
        )
        .await;
    assert_eq!(v["title"], "Plan a-home: faster");
    let (s, _) = fx
        .call(
            Who::A,
            Method::DELETE,
            &format!("/api/v1/notices/{}", all["id"]),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let s = state(&fx, fx.a.site, rev).await;
    assert_eq!(
        titles(&s),
        vec![
            ("Plan a-home: faster".into(), vec![], vec![fx.a.subscriber]),
            ("Next year".into(), vec![2], vec![]),
        ]
    );
    for action in ["notice.create", "notice.update", "notice.delete"] {
        assert!(
            fx.query_i64(&format!(
                "SELECT count(*) FROM audit_log WHERE action = '{action}' AND actor_user_id = {}",
                fx.user_id(Who::A)
            )) >= 1,
            "{action} not audited"
        );
    }
    let _ = by_site;
}

#[tokio::test]
async fn another_resellers_ids_and_bad_input_are_refused_and_nothing_is_saved() {
    let fx = Fixture::new();
    let mine = post(&fx, Who::A, notice("A's notice", json!({}))).await;
    let count = || fx.query_i64("SELECT count(*) FROM notices");
    let audit = fx.audit_tail().0;
    // B names A's plan, site and tenant.
    for (body, status, code) in [
        (
            json!({ "plan_id": fx.a.plan }),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({ "site_id": fx.a.site }),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({ "plan_id": 999_999 }),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let (s, v) = fx
            .post(Who::B, "/api/v1/notices", notice("Hijack", body))
            .await;
        assert_error(s, &v, status, code);
    }
    let (s, v) = fx
        .post(
            Who::B,
            "/api/v1/notices",
            notice("Hijack", json!({ "tenant_id": 2 })),
        )
        .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "tenant_out_of_scope");
    // A1 names its parent A's plan and B's site.
    let (s, v) = fx
        .post(
            Who::A1,
            "/api/v1/notices",
            notice("Up", json!({ "site_id": fx.b.site })),
        )
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    // B patches and deletes A's notice, and moves its own onto A's plan.
    let own_b = post(&fx, Who::B, notice("B's notice", json!({}))).await;
    let (s, v) = fx
        .patch(
            Who::B,
            &format!("/api/v1/notices/{}", mine["id"]),
            json!({ "title": "x" }),
        )
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    let (s, v) = fx
        .call(
            Who::B,
            Method::DELETE,
            &format!("/api/v1/notices/{}", mine["id"]),
            None,
        )
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    let (s, v) = fx
        .patch(
            Who::B,
            &format!("/api/v1/notices/{}", own_b["id"]),
            json!({ "plan_id": fx.a.plan }),
        )
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    // Bad input.
    for body in [
        notice(
            "Backwards",
            json!({ "starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z" }),
        ),
        notice(
            "Same time",
            json!({ "starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z" }),
        ),
        notice(
            "Both",
            json!({ "plan_id": fx.b.plan, "site_id": fx.b.site }),
        ),
        notice("", json!({})),
        notice(&"t".repeat(121), json!({})),
        notice("Bell\u{7}", json!({})),
        notice("Not a time", json!({ "starts_at": "tomorrow" })),
        notice("Unknown field", json!({ "audience": "everyone" })),
    ] {
        let (s, v) = fx.post(Who::B, "/api/v1/notices", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
    }
    let v = fx
        .get_ok(Who::A, &format!("/api/v1/notices/{}", mine["id"]))
        .await;
    assert_eq!(v, mine, "A's notice is unchanged");
    assert_eq!(count(), 2, "only the two good notices were saved");
    // Refusals wrote only the one security event (the tenant out of scope) beside B's
    // own notice's creation.
    assert_eq!(fx.audit_tail().0, audit + 2);
}

#[tokio::test]
async fn a_managers_notice_is_for_its_tenants_own_customers_only() {
    let fx = Fixture::new();
    // The matrix's manager of A lacks the function.
    let (s, v) = fx
        .post(Who::M, "/api/v1/notices", notice("No", json!({})))
        .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "permission_denied");
    let (s, v) = fx
        .post(Who::A, "/api/v1/users", json!({
            "email": "notices@fixture.test", "name": "Notices", "password": "manager-password-1",
            "kind": "manager", "tenant_id": 2, "permissions": ["send_notifications"],
        }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let req = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/api/v1/session")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({ "email": "notices@fixture.test", "password": "manager-password-1" })
                .to_string(),
        ))
        .unwrap();
    let (s, h, v) = fx.send(req, ip()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let cookie = h["set-cookie"].to_str().unwrap();
    let secret = cookie["outpost_session=".len()..cookie.find(';').unwrap()].to_string();
    let rev_a1 = fx.query_i64(&format!(
        "SELECT max(revision) FROM site_changes WHERE site_id = {}",
        fx.a1.site
    )) as u64;
    let (s, n) = fx
        .request(
            Some(&secret),
            ip(),
            Method::POST,
            "/api/v1/notices",
            Some(notice("Manager's", json!({}))),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    assert_eq!(n["direct_customers_only"], true);
    // A's own site hears of it; A1's (a child's customers) does not.
    let s = state(&fx, fx.a.site, 0).await;
    assert_eq!(titles(&s), vec![("Manager's".into(), vec![2], vec![])]);
    assert_eq!(
        state(&fx, fx.a1.site, rev_a1).await.kind,
        proto::StateKind::Unchanged
    );
    assert_eq!(titles(&state(&fx, fx.a1.site, 0).await), vec![]);
}
