//! Money: concurrency through real HTTP, idempotency, the credit limit to the smallest
//! unit, cascade renewals, visibility of cost prices, ledger tamper detection, the
//! expiry sweep, payments, statements and the summary.
//!
//! The fixture's plans, cards and balances are drawn in `common::seed_billing`.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use axum::http::{Method, StatusCode};
use common::{Fixture, Who, assert_error, error_code};
use futures_util::future::join_all;
use serde_json::{Value, json};

/// Serves the fixture's app on a real loopback socket.
async fn serve(fx: &Fixture) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = outpost_controller::app(fx.state.clone());
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    (format!("http://{addr}"), task)
}

fn balance(fx: &Fixture, tenant: i64) -> i64 {
    fx.query_i64(&format!("SELECT balance FROM tenants WHERE id = {tenant}"))
}

fn ledger_verify(fx: &Fixture) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_outpost-controller"))
        .args(["ledger", "verify", "--data-dir"])
        .arg(fx.dir.path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Creates `n` subscribers of `who`'s tenant on `plan`; returns their ids.
async fn subscribers(fx: &Fixture, who: Who, plan: i64, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (s, b) = fx.post(who, "/api/v1/subscribers", json!({ "username": format!("load-{who:?}-{i}"), "password": "p", "plan_id": plan })).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        ids.push(b["id"].as_i64().unwrap());
    }
    ids
}

/// Fires one renewal per subscriber, all at once, through HTTP; returns the statuses
/// and error codes.
async fn renew_all(base: &str, secret: &str, ids: &[i64]) -> Vec<(u16, String)> {
    let client = reqwest::Client::new();
    let calls = ids.iter().map(|id| {
        let client = client.clone();
        let url = format!("{base}/api/v1/subscribers/{id}/renew");
        let secret = secret.to_string();
        async move {
            let resp = client
                .post(url)
                .bearer_auth(secret)
                .header("idempotency-key", format!("renew-{id}"))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_string(),
            )
        }
    });
    join_all(calls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_renewals_charge_exactly_what_the_balance_covers() {
    let fx = Fixture::new();
    // A1 holds 200.00; with a 25.00 credit limit, 225.00 covers exactly 15 renewals at 15.00.
    fx.patch_ok(
        Who::A,
        "/api/v1/resellers/3",
        json!({ "credit_limit": "25.00" }),
    )
    .await;
    let ids = subscribers(&fx, Who::A1, fx.a1.plan, 64).await;
    let (base, server) = serve(&fx).await;
    let results = renew_all(&base, &fx.secret(Who::A1).unwrap(), &ids).await;
    server.abort();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let refused: Vec<_> = results.iter().filter(|r| r.0 != 200).collect();
    assert_eq!(ok, 15, "{results:?}");
    assert!(
        refused
            .iter()
            .all(|r| r.0 == 409 && r.1 == "insufficient_balance"),
        "{refused:?}"
    );
    assert_eq!(balance(&fx, 3), -2500, "200.00 - 15 × 15.00");
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM ledger WHERE tenant_id = 3 AND kind = 'renewal'"),
        15
    );
    assert_eq!(fx.query_i64("SELECT count(*) FROM renewals"), 15);
    assert_eq!(fx.query_i64("SELECT count(*) FROM subscribers WHERE username LIKE 'load-%' AND expires_at IS NOT NULL"), 15);
    assert_eq!(
        balance(&fx, 2),
        80_000,
        "independent mode: A is not charged"
    );
    let (code, out) = ledger_verify(&fx);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cascade_renewals_stop_at_the_parents_balance() {
    let fx = Fixture::new();
    // Cascade: each renewal by A1 costs A1 15.00 and A 10.00. A1 can afford all 64
    // (credit 10000); A holds exactly 70.00 after a correction: 7 renewals.
    for (who, path, body) in [(
        Who::A,
        "/api/v1/resellers/3",
        json!({ "credit_limit": "10000.00", "renewal_mode": "cascade" }),
    )] {
        let (s, b) = fx.call(who, Method::PATCH, path, Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    fx.money_ok(
        Who::Op,
        "/api/v1/resellers/2/adjustments",
        json!({ "kind": "adjustment", "amount": "-730.00", "reason": "test: leave exactly 70.00" }),
    )
    .await;
    assert_eq!(balance(&fx, 2), 7_000);
    let ids = subscribers(&fx, Who::A1, fx.a1.plan, 64).await;
    let (base, server) = serve(&fx).await;
    let results = renew_all(&base, &fx.secret(Who::A1).unwrap(), &ids).await;
    server.abort();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    assert_eq!(ok, 7, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|r| r.0 != 200)
            .all(|r| r.0 == 409 && r.1 == "insufficient_balance")
    );
    assert_eq!(balance(&fx, 2), 0, "A paid 7 × 10.00");
    assert_eq!(
        balance(&fx, 3),
        20_000 - 7 * 1_500,
        "A1 paid only for the 7 that went through"
    );
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM ledger WHERE kind = 'renewal' AND tenant_id = 2"),
        7
    );
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM ledger WHERE kind = 'renewal' AND tenant_id = 3"),
        7
    );
    let (code, out) = ledger_verify(&fx);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_retried_concurrently_charges_once() {
    let fx = Fixture::new();
    let (base, server) = serve(&fx).await;
    let client = reqwest::Client::new();
    let calls = (0..16).map(|_| {
        client
            .post(format!(
                "{base}/api/v1/subscribers/{}/renew",
                fx.a1.subscriber
            ))
            .bearer_auth(fx.secret(Who::A1).unwrap())
            .header("idempotency-key", "the-same-key")
            .json(&json!({ "periods": 2 }))
            .send()
    });
    let responses = join_all(calls).await;
    server.abort();
    let mut bodies = Vec::new();
    for r in responses {
        let r = r.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        bodies.push(r.json::<Value>().await.unwrap());
    }
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "every retry sees the first answer"
    );
    assert_eq!(fx.query_i64("SELECT count(*) FROM renewals"), 1);
    assert_eq!(balance(&fx, 3), 20_000 - 2 * 1_500);
}

#[tokio::test]
async fn retries_replay_and_a_reused_key_with_another_body_conflicts() {
    let fx = Fixture::new();
    let path = format!("/api/v1/subscribers/{}/renew", fx.a1.subscriber);
    let key = "abc-123";
    let (s1, b1) = fx.keyed(Who::A1, &path, json!({ "periods": 1 }), key).await;
    assert_eq!(s1, StatusCode::OK, "{b1}");
    let (s2, b2) = fx.keyed(Who::A1, &path, json!({ "periods": 1 }), key).await;
    assert_eq!(
        (s2, &b2),
        (StatusCode::OK, &b1),
        "a retry returns the first result"
    );
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM renewals"),
        1,
        "and charges nothing again"
    );
    let (s3, b3) = fx.keyed(Who::A1, &path, json!({ "periods": 3 }), key).await;
    assert_error(s3, &b3, StatusCode::CONFLICT, "idempotency_key_reused");
    // The same key on another route is another request too.
    let payments = format!("/api/v1/subscribers/{}/payments", fx.a1.subscriber);
    let (s4, _) = fx
        .keyed(
            Who::A1,
            &payments,
            json!({ "amount": "1.00", "method": "cash" }),
            key,
        )
        .await;
    assert_eq!(s4, StatusCode::CONFLICT);
    // Keys are per user: another user's identical key is its own.
    let (s5, _) = fx.keyed(Who::A, &path, json!({ "periods": 1 }), key).await;
    assert_eq!(s5, StatusCode::OK);
    assert_eq!(fx.query_i64("SELECT count(*) FROM renewals"), 2);
    // No key: refused before anything happens.
    let (s6, b6) = fx.post(Who::A1, &path, json!({})).await;
    assert_error(s6, &b6, StatusCode::BAD_REQUEST, "missing_idempotency_key");
    // A refusal is not remembered: after a top-up, the same key goes through.
    fx.money_ok(
        Who::A,
        "/api/v1/resellers/3/adjustments",
        json!({ "kind": "adjustment", "amount": "-170.00", "reason": "leave 0.00" }),
    )
    .await;
    assert_eq!(balance(&fx, 3), 0);
    let retry = "after-top-up";
    let (s, b) = fx.keyed(Who::A1, &path, json!({}), retry).await;
    assert_error(s, &b, StatusCode::CONFLICT, "insufficient_balance");
    fx.money_ok(
        Who::A,
        "/api/v1/resellers/3/balance",
        json!({ "amount": "15.00" }),
    )
    .await;
    let (s, b) = fx.keyed(Who::A1, &path, json!({}), retry).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(balance(&fx, 3), 0);
}

#[tokio::test]
async fn the_credit_limit_holds_to_the_smallest_unit() {
    let fx = Fixture::new();
    let adjust = |amount: &str| json!({ "kind": "adjustment", "amount": amount, "reason": "set up the boundary" });
    let (s, _) = fx
        .money(Who::A, "/api/v1/resellers/3/adjustments", adjust("-185.00"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(balance(&fx, 3), 1_500, "exactly one renewal's worth");
    let renew = format!("/api/v1/subscribers/{}/renew", fx.a1.subscriber);
    fx.money_ok(Who::A1, &renew, json!({})).await;
    assert_eq!(balance(&fx, 3), 0);
    // Credit 14.99: a 15.00 renewal is one cent short.
    fx.patch_ok(
        Who::A,
        "/api/v1/resellers/3",
        json!({ "credit_limit": "14.99" }),
    )
    .await;
    let (s, b) = fx.money(Who::A1, &renew, json!({})).await;
    assert_error(s, &b, StatusCode::CONFLICT, "insufficient_balance");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("Sub-reseller A1") && msg.contains("short by 0.01 USD"),
        "{msg}"
    );
    assert_eq!(balance(&fx, 3), 0, "nothing written");
    // Credit 15.00: exactly enough, down to -15.00.
    fx.patch_ok(
        Who::A,
        "/api/v1/resellers/3",
        json!({ "credit_limit": "15.00" }),
    )
    .await;
    let (s, _) = fx.money(Who::A1, &renew, json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(balance(&fx, 3), -1_500);
    let (_, r) = fx.get(Who::A1, "/api/v1/resellers/3").await;
    assert_eq!(
        (r["balance"].as_str(), r["credit_limit"].as_str()),
        (Some("-15.00"), Some("15.00"))
    );
    // A reseller's transfer to its child respects the reseller's own limit.
    let (s, b) = fx
        .money(
            Who::A,
            "/api/v1/resellers/3/balance",
            json!({ "amount": "800.01" }),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "insufficient_balance");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'Reseller A'")
    );
    fx.money_ok(
        Who::A,
        "/api/v1/resellers/3/balance",
        json!({ "amount": "800.00" }),
    )
    .await;
    assert_eq!((balance(&fx, 2), balance(&fx, 3)), (0, 78_500));
}

#[tokio::test]
async fn amounts_are_exact_decimal_strings() {
    let fx = Fixture::new();
    let path = "/api/v1/resellers/3/balance";
    for (body, code) in [
        (json!({ "amount": "1.005" }), "invalid"),
        (json!({ "amount": 1.5 }), "invalid_field"),
        (json!({ "amount": "-1.00" }), "invalid_field"),
        (json!({ "amount": "0" }), "invalid_field"),
        (json!({ "amount": "lots" }), "invalid_field"),
        (
            json!({ "amount": "1.00", "colour": "red" }),
            "invalid_field",
        ),
    ] {
        let (s, b) = fx.money(Who::A, path, body.clone()).await;
        assert_eq!(
            (s, error_code(&b).as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, code),
            "{body}: {b}"
        );
    }
    assert_eq!(balance(&fx, 3), 20_000);
    // Only a direct parent moves money: the operator cannot credit A1 over A's head.
    let (s, b) = fx.money(Who::Op, path, json!({ "amount": "1.00" })).await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "not_parent");
    // The operator creates money: no operator-side row.
    let before = fx.query_i64("SELECT count(*) FROM ledger");
    let t = fx
        .money_ok(
            Who::Op,
            "/api/v1/resellers/2/balance",
            json!({ "amount": "0.01" }),
        )
        .await;
    assert_eq!(t["entries"].as_array().unwrap().len(), 1);
    assert_eq!(t["entries"][0]["balance_after"], "800.01");
    assert_eq!(fx.query_i64("SELECT count(*) FROM ledger"), before + 1);
}

#[tokio::test]
async fn a_sub_reseller_never_sees_its_parents_cost() {
    let fx = Fixture::new();
    // A pays 10.00 for op-basic; A1 pays 15.00 for a-retail.
    let (s, _) = fx.get(Who::A1, "/api/v1/resellers/2/rate-card").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let card = fx.get_ok(Who::A1, "/api/v1/resellers/3/rate-card").await;
    assert_eq!(card.as_array().unwrap().len(), 1);
    assert_eq!(card[0]["wholesale_price"], "15.00");
    let (s, _) = fx
        .get(Who::A1, &format!("/api/v1/plans/{}", fx.op_tenant.plan))
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "the parent's source plan is not visible"
    );
    let (_, plans) = fx.get(Who::A1, "/api/v1/plans").await;
    let wholesale: Vec<&Value> = plans["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.get("wholesale_price"))
        .collect();
    assert_eq!(
        wholesale,
        vec![&json!("15.00")],
        "only its own price: {plans}"
    );
    assert!(
        !plans.to_string().contains("\"10.00\""),
        "A's cost leaked: {plans}"
    );
    // A sees its own cost and what it charges A1.
    let (_, a_card) = fx.get(Who::A, "/api/v1/resellers/2/rate-card").await;
    assert_eq!(a_card[0]["wholesale_price"], "10.00");
    // In cascade mode A1's renewal debits A too, but A1's answer and ledger never show it.
    fx.patch_ok(
        Who::A,
        "/api/v1/resellers/3",
        json!({ "renewal_mode": "cascade" }),
    )
    .await;
    let r = fx
        .money_ok(
            Who::A1,
            &format!("/api/v1/subscribers/{}/renew", fx.a1.subscriber),
            json!({}),
        )
        .await;
    let charges = r["renewal"]["charges"].as_array().unwrap();
    assert_eq!(charges.len(), 1, "{r}");
    assert_eq!(
        (
            charges[0]["tenant_id"].as_i64(),
            charges[0]["amount"].as_str()
        ),
        (Some(3), Some("-15.00"))
    );
    assert_eq!(balance(&fx, 2), 80_000 - 1_000, "A was charged its 10.00");
    let (_, ledger) = fx.get(Who::A1, "/api/v1/ledger").await;
    assert!(
        ledger["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant_id"] == 3),
        "{ledger}"
    );
    let (s, _) = fx.get(Who::A1, "/api/v1/resellers/2/statement").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // When the provider is the one short, A1 learns who, not the provider's figures.
    fx.money_ok(
        Who::Op,
        "/api/v1/resellers/2/adjustments",
        json!({ "kind": "adjustment", "amount": "-790.00", "reason": "drain" }),
    )
    .await;
    let (s, b) = fx
        .money(
            Who::A1,
            &format!("/api/v1/subscribers/{}/renew", fx.a1.subscriber),
            json!({}),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "insufficient_balance");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("provider 'Reseller A'") && !msg.contains("0.00"),
        "{msg}"
    );
    // The same refusal seen by A names the figures.
    let (_, b) = fx
        .money(
            Who::A,
            &format!("/api/v1/subscribers/{}/renew", fx.a1.subscriber),
            json!({}),
        )
        .await;
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("short by 10.00 USD"),
        "{b}"
    );
}

#[tokio::test]
async fn ledger_verify_catches_a_balance_changed_behind_its_back() {
    let fx = Fixture::new();
    fx.money_ok(
        Who::A1,
        &format!("/api/v1/subscribers/{}/renew", fx.a1.subscriber),
        json!({}),
    )
    .await;
    let (code, out) = ledger_verify(&fx);
    assert_eq!(code, 0, "{out}");
    let c = rusqlite::Connection::open(fx.dir.path().join("controller.db")).unwrap();
    let e = c
        .execute("UPDATE ledger SET amount = 0 WHERE id = 1", [])
        .unwrap_err();
    assert!(e.to_string().contains("append-only"));
    let e = c
        .execute("DELETE FROM ledger WHERE id = 1", [])
        .unwrap_err();
    assert!(e.to_string().contains("append-only"));
    c.execute(
        "UPDATE tenants SET balance = balance + 100000 WHERE id = 3",
        [],
    )
    .unwrap();
    drop(c);
    let (code, out) = ledger_verify(&fx);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("tenant 3") && out.contains("ledger sums to"),
        "{out}"
    );
    // A forged row (triggers dropped) breaks the balance_after chain.
    let c = rusqlite::Connection::open(fx.dir.path().join("controller.db")).unwrap();
    c.execute_batch("UPDATE tenants SET balance = balance - 100000 WHERE id = 3; DROP TRIGGER ledger_no_update;
                     UPDATE ledger SET amount = amount - 1 WHERE id = (SELECT max(id) FROM ledger WHERE tenant_id = 3);").unwrap();
    drop(c);
    let (code, out) = ledger_verify(&fx);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("balance_after"), "{out}");
}

#[tokio::test]
async fn renewal_moves_expiry_from_the_later_of_now_and_expiry() {
    let fx = Fixture::new();
    let path = format!("/api/v1/subscribers/{}", fx.b.subscriber);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let at = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let parse = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp()
    };
    // Ten days left: +30 days from the current expiry.
    fx.patch_ok(
        Who::B,
        &path,
        json!({ "expires_at": at(now + 10 * 86_400) }),
    )
    .await;
    let (_, r) = fx.money(Who::B, &format!("{path}/renew"), json!({})).await;
    assert_eq!(parse(&r["subscriber"]["expires_at"]), now + 40 * 86_400);
    // Lapsed a week ago and suspended: +30 days from now, and active again.
    fx.patch_ok(
        Who::B,
        &path,
        json!({ "expires_at": at(now - 7 * 86_400), "status": "suspended" }),
    )
    .await;
    let (_, r) = fx
        .money(Who::B, &format!("{path}/renew"), json!({ "periods": 2 }))
        .await;
    let got = parse(&r["subscriber"]["expires_at"]);
    assert!(
        (now + 60 * 86_400..=now + 60 * 86_400 + 5).contains(&got),
        "{r}"
    );
    assert_eq!(r["subscriber"]["status"], "active");
    assert_eq!(r["renewal"]["retail_price"], "48.00");
    // Disabled subscribers are not renewed.
    fx.patch_ok(Who::B, &path, json!({ "status": "disabled" }))
        .await;
    let (s, b) = fx.money(Who::B, &format!("{path}/renew"), json!({})).await;
    assert_error(s, &b, StatusCode::CONFLICT, "subscriber_disabled");
}

#[tokio::test]
async fn the_expiry_sweep_renews_who_opted_in_and_expires_the_rest() {
    let fx = Fixture::new();
    let past = (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    // a1: auto-renew and money; b: no auto-renew; a: auto-renew but A cannot pay.
    for (who, sub, auto) in [
        (Who::A1, fx.a1.subscriber, true),
        (Who::B, fx.b.subscriber, false),
        (Who::A, fx.a.subscriber, true),
    ] {
        fx.patch_ok(
            who,
            &format!("/api/v1/subscribers/{sub}"),
            json!({ "expires_at": past, "auto_renew": auto }),
        )
        .await;
    }
    let (s, _) = fx
        .money(
            Who::Op,
            "/api/v1/resellers/2/adjustments",
            json!({ "kind": "adjustment", "amount": "-795.00", "reason": "leave 5.00" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let swept = outpost_controller::jobs::sweep_expired(&fx.state)
        .await
        .unwrap();
    assert_eq!(swept.len(), 3, "{swept:?}");
    let status = |id: i64| {
        fx.query_i64(&format!(
            "SELECT status = 'active' FROM subscribers WHERE id = {id}"
        ))
    };
    assert_eq!(
        (
            status(fx.a1.subscriber),
            status(fx.b.subscriber),
            status(fx.a.subscriber)
        ),
        (1, 0, 0)
    );
    assert_eq!(balance(&fx, 3), 20_000 - 1_500);
    assert_eq!(balance(&fx, 2), 500, "A's failed auto-renew wrote nothing");
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM renewals WHERE automatic = 1"),
        1
    );
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM audit_log WHERE action = 'subscriber.expire'"),
        2
    );
    // A second pass finds nothing to do: the sweep never charges twice.
    assert!(
        outpost_controller::jobs::sweep_expired(&fx.state)
            .await
            .unwrap()
            .is_empty()
    );
    let (code, out) = ledger_verify(&fx);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn payments_with_renewal_statements_and_summary() {
    let fx = Fixture::new();
    let (s, p) = fx
        .money(Who::A1, &format!("/api/v1/subscribers/{}/payments", fx.a1.subscriber), json!({ "amount": "20.00", "method": "cash", "reference": "receipt 0042", "renew": true })).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["payment"]["account"], "collections");
    assert_eq!(p["renewal"]["charges"][0]["amount"], "-15.00");
    assert_eq!(
        p["operation_id"], p["renewal"]["operation_id"],
        "one operation"
    );
    // JSON statement, filtered.
    let (_, st) = fx
        .get(Who::A1, "/api/v1/resellers/3/statement?kind=renewal")
        .await;
    assert_eq!(st["items"].as_array().unwrap().len(), 1);
    // CSV statement.
    let req = axum::http::Request::get("/api/v1/resellers/3/statement")
        .header(
            "authorization",
            format!("Bearer {}", fx.secret(Who::A1).unwrap()),
        )
        .header("accept", "text/csv")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(fx.app.clone(), {
        let mut r = req;
        r.extensions_mut()
            .insert(axum::extract::ConnectInfo(SocketAddr::from((
                [203, 0, 113, 10],
                1,
            ))));
        r
    })
    .await
    .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("id,at,account,kind,amount,balance_after,currency"),
        "{text}"
    );
    assert_eq!(lines.len(), 4, "header, credit, payment, renewal: {text}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(",collections,payment,20.00,20.00,USD,")
                && l.contains("cash: receipt 0042")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(",balance,renewal,-15.00,185.00,USD,")),
        "{text}"
    );
    // Summary for A covers A1 (its descendant).
    let (s, sum) = fx.get(Who::A, "/api/v1/reports/summary?period=day").await;
    assert_eq!(s, StatusCode::OK, "{sum}");
    let today = &sum["periods"].as_array().unwrap().last().unwrap();
    assert_eq!(
        (today["renewals"].as_i64(), today["renewal_value"].as_str()),
        (Some(1), Some("20.00"))
    );
    assert_eq!(
        (today["cost"].as_str(), today["collected"].as_str()),
        (Some("15.00"), Some("20.00"))
    );
    // B's summary does not include A's subtree.
    let (_, sum_b) = fx.get(Who::B, "/api/v1/reports/summary?period=day").await;
    assert!(
        sum_b["periods"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["renewals"] == 0)
    );
    let (s, _) = fx.get(Who::B, "/api/v1/reports/summary?tenant_id=2").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn plans_derive_within_their_card_plan() {
    let fx = Fixture::new();
    let mk = |body: Value| async {
        fx.call(Who::A, Method::POST, "/api/v1/plans", Some(body))
            .await
    };
    let base = json!({ "name": "fast", "parent_plan_id": fx.op_tenant.plan, "download_kbps": 20_000, "upload_kbps": 5_000, "price": "40.00" });
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let (s, b) = mk(with("download_kbps", json!(20_001))).await;
    assert_error(s, &b, StatusCode::CONFLICT, "above_parent_plan");
    assert!(b["error"]["message"].as_str().unwrap().contains("op-basic"));
    let (s, _) = mk(with("parent_plan_id", Value::Null)).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a reseller's plan needs a card plan"
    );
    let (s, _) = mk(with("validity_days", json!(31))).await;
    assert_eq!(s, StatusCode::CONFLICT, "validity must match the card plan");
    let (s, _) = mk(with("parent_plan_id", json!(fx.b.plan))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "B's plan is not on A's card");
    let (s, p) = mk(base.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(
        (p["validity_days"].as_i64(), p["price"].as_str()),
        (Some(30), Some("40.00"))
    );
    // A subscriber's plan must be its owner's or on its card.
    let (s, b) = fx
        .patch(
            Who::B,
            &format!("/api/v1/subscribers/{}", fx.b.subscriber),
            json!({ "plan_id": p["id"] }),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "plan_unavailable");
    // A card entry still in use cannot be removed.
    let (s, b) = fx
        .post(
            Who::A,
            "/api/v1/resellers/3/rate-card",
            json!({ "plan_id": fx.a1.card_plan, "remove": true }),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "in_use");
    // Lowering a card plan below a plan derived from it is refused.
    let (s, _) = fx
        .call(
            Who::A,
            Method::PATCH,
            &format!("/api/v1/plans/{}", fx.a1.card_plan.unwrap()),
            Some(json!({ "download_kbps": 4_000 })),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // A cannot put someone else's plan on A1's card.
    let (s, _) = fx
        .post(
            Who::A,
            "/api/v1/resellers/3/rate-card",
            json!({ "plan_id": fx.op_tenant.plan, "wholesale_price": "1.00" }),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "a plan that is not its own is one it cannot see"
    );
}

#[test]
fn the_currency_is_pinned_on_first_start() {
    let dir = tempfile::tempdir().unwrap();
    drop(outpost_controller::bootstrap::open(common::test_config(dir.path())).unwrap());
    let mut cfg = common::test_config(dir.path());
    cfg.billing.currency = "EUR".into();
    let err = outpost_controller::bootstrap::open(cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("USD") && err.contains("EUR"), "{err}");
    let mut cfg = common::test_config(dir.path());
    cfg.billing.minor_units = 3;
    assert!(outpost_controller::bootstrap::open(cfg).is_err());
}

#[tokio::test]
async fn a_disabled_resellers_subscribers_lapse_instead_of_renewing() {
    let fx = Fixture::new();
    let past = (time::OffsetDateTime::now_utc() - time::Duration::minutes(5))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    fx.patch_ok(
        Who::A1,
        &format!("/api/v1/subscribers/{}", fx.a1.subscriber),
        json!({ "expires_at": past, "auto_renew": true }),
    )
    .await;
    fx.patch_ok(
        Who::Op,
        "/api/v1/resellers/2",
        json!({ "status": "disabled" }),
    )
    .await;
    let swept = outpost_controller::jobs::sweep_expired(&fx.state)
        .await
        .unwrap();
    assert_eq!(swept.len(), 1);
    assert!(
        matches!(&swept[0].1, outpost_controller::billing::Swept::Expired { reason } if reason.contains("Reseller A")),
        "{swept:?}"
    );
    assert_eq!(balance(&fx, 3), 20_000, "nothing charged");
}
