//! Group commit (`db::writer`): writes queued together run in one transaction, each in
//! a savepoint of its own, and are answered after its COMMIT. These tests hold the
//! writer thread with a write of their own until the requests under test are queued
//! behind it, so that those run in one batch for certain (the writer's counters say
//! so), then check that money stays exact: one Idempotency-Key is charged once, a
//! refusal rolls back only itself, the ledger and the audit chain verify after a
//! concurrent run, and a controller killed under load has lost no renewal it answered.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use common::{CLIENT_IP, Fixture, Who};
use futures_util::future::join_all;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_outpost-controller");

/// A renewal of `sub` as `who` with the Idempotency-Key `key`: status, headers, body.
async fn renew(fx: &Fixture, who: Who, sub: i64, key: String) -> (StatusCode, HeaderMap, Value) {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/subscribers/{sub}/renew"))
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", fx.secret(who).unwrap()),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", &key)
        .body(Body::from("{}"))
        .unwrap();
    fx.send(req, CLIENT_IP.parse().unwrap()).await
}

/// Runs `calls` in one batch of the writer: a write of ours holds the writer thread
/// until every call is queued behind it, then lets go. Returns the calls' outputs and
/// how many batches the writer ended meanwhile (1: the held write and every call shared
/// one transaction).
async fn in_one_batch<T>(
    fx: &Fixture,
    calls: Vec<impl std::future::Future<Output = T>>,
) -> (Vec<T>, u64) {
    let db = fx.state.db.clone();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let holder = tokio::spawn(async move {
        db.write(move |_tx| {
            let _ = started_tx.send(());
            let _ = held.recv();
            Ok(())
        })
        .await
    });
    started.await.expect("the writer ran the held write");
    let before = fx.state.db.write_stats();
    assert_eq!(before.queued, 0, "nothing else is queued");
    let n = calls.len();
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while fx.state.db.write_stats().queued < n {
            assert!(
                Instant::now() < deadline,
                "the calls never reached the writer: {:?}",
                fx.state.db.write_stats()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        release.send(()).unwrap();
    };
    let (out, ()) = tokio::join!(join_all(calls), watch);
    holder.await.unwrap().unwrap();
    let after = fx.state.db.write_stats();
    assert_eq!(after.writes - before.writes, n as u64 + 1, "{after:?}");
    (out, after.batches - before.batches)
}

fn balance(fx: &Fixture, tenant: i64) -> i64 {
    fx.query_i64(&format!("SELECT balance FROM tenants WHERE id = {tenant}"))
}

/// `outpost-controller <what> verify` over the fixture's data directory: exit code and output.
fn verify(dir: &std::path::Path, what: &str) -> (i32, String) {
    let out = Command::new(BIN)
        .args([what, "verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn assert_books_verify(dir: &std::path::Path) {
    for what in ["ledger", "audit"] {
        let (code, out) = verify(dir, what);
        assert_eq!(code, 0, "{what} verify: {out}");
    }
}

/// Creates `n` subscribers of `who`'s tenant on `plan`; returns their ids.
async fn subscribers(fx: &Fixture, who: Who, plan: i64, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (s, b) = fx
            .post(
                who,
                "/api/v1/subscribers",
                json!({ "username": format!("gc-{who:?}-{i}"), "password": "p", "plan_id": plan }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        ids.push(b["id"].as_i64().unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_used_many_times_in_one_batch_renews_once() {
    let fx = Fixture::new();
    let sub = fx.a1.subscriber;
    let a1_before = balance(&fx, 3);
    let calls: Vec<_> = (0..8)
        .map(|_| renew(&fx, Who::A1, sub, "same-key-in-one-batch".into()))
        .collect();
    let (answers, batches) = in_one_batch(&fx, calls).await;
    assert_eq!(
        batches, 1,
        "the eight renewals shared the held write's batch"
    );
    for (s, _, b) in &answers {
        assert_eq!(*s, StatusCode::OK, "{b}");
    }
    let first = answers
        .iter()
        .filter(|(_, h, _)| h.get("idempotent-replayed").is_none())
        .count();
    assert_eq!(first, 1, "one ran, seven replayed its answer");
    assert!(
        answers.iter().all(|(_, _, b)| *b == answers[0].2),
        "every caller got the first answer"
    );
    assert_eq!(
        fx.query_i64(
            "SELECT count(*) FROM ledger l JOIN operations o ON o.id = l.operation_id
             WHERE o.idempotency_key = 'same-key-in-one-batch'"
        ),
        1,
        "one ledger row"
    );
    assert_eq!(fx.query_i64("SELECT count(*) FROM renewals"), 1);
    assert_eq!(balance(&fx, 3), a1_before - 1500, "charged 15.00 once");
    assert_books_verify(fx.dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_renewal_in_a_batch_fails_alone_and_the_others_commit() {
    let fx = Fixture::new();
    // B keeps 5.00: its renewal at 11.00 is refused (credit limit 0).
    fx.money_ok(
        Who::Op,
        "/api/v1/resellers/4/adjustments",
        json!({ "kind": "adjustment", "amount": "-995.00", "reason": "leave too little" }),
    )
    .await;
    let a1_subs = subscribers(&fx, Who::A1, fx.a1.plan, 3).await;
    let (a1_before, b_before) = (balance(&fx, 3), balance(&fx, 4));
    assert_eq!(b_before, 500);
    let audit_before = fx.audit_tail().0;
    let mut calls = Vec::new();
    for (i, sub) in a1_subs.iter().enumerate() {
        calls.push(renew(&fx, Who::A1, *sub, format!("a1-{i}")));
        if i == 1 {
            calls.push(renew(&fx, Who::B, fx.b.subscriber, "b-short".into()));
        }
    }
    let (answers, batches) = in_one_batch(&fx, calls).await;
    assert_eq!(batches, 1, "all four shared the held write's batch");
    let refused: Vec<_> = answers.iter().filter(|a| a.0 != StatusCode::OK).collect();
    assert_eq!(refused.len(), 1, "{answers:?}");
    common::assert_error(
        refused[0].0,
        &refused[0].2,
        StatusCode::CONFLICT,
        "insufficient_balance",
    );
    // The others' commit is visible to a fresh reader: it happened.
    let reader = rusqlite::Connection::open(fx.dir.path().join("controller.db")).unwrap();
    let one = |sql: &str| -> i64 { reader.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(one("SELECT count(*) FROM renewals WHERE tenant_id = 3"), 3);
    assert_eq!(
        one("SELECT balance FROM tenants WHERE id = 3"),
        a1_before - 3 * 1500
    );
    assert_eq!(
        one("SELECT count(*) FROM ledger WHERE tenant_id = 4 AND kind = 'renewal'"),
        0
    );
    assert_eq!(one("SELECT balance FROM tenants WHERE id = 4"), b_before);
    assert_eq!(
        one("SELECT count(*) FROM operations WHERE idempotency_key = 'b-short'"),
        0,
        "the refused renewal's operation was rolled back with it"
    );
    assert_eq!(
        one("SELECT count(*) FROM idempotency WHERE key = 'b-short'"),
        0,
        "a refusal is not remembered: a retry may succeed later"
    );
    assert_eq!(
        fx.audit_tail().0,
        audit_before + 3,
        "three renewals audited, the refusal left nothing"
    );
    assert_books_verify(fx.dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_panics_in_a_batch_rolls_back_alone() {
    let fx = Fixture::new();
    let sub = fx.a1.subscriber;
    let db = fx.state.db.clone();
    let panicking = async move {
        db.write(|tx| -> outpost_controller::error::Result<()> {
            tx.execute("UPDATE subscribers SET name = 'half-done' WHERE id = 1", [])?;
            panic!("a bug in a write");
        })
        .await
    };
    let renewal = async { renew(&fx, Who::A1, sub, "beside-a-panic".into()).await.0 };
    let calls: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>> = vec![
        Box::pin(async move { format!("{:?}", panicking.await.map_err(|e| e.code)) }),
        Box::pin(async move { renewal.await.to_string() }),
    ];
    let (out, batches) = in_one_batch(&fx, calls).await;
    assert_eq!(batches, 1);
    assert_eq!(out[0], r#"Err("internal")"#);
    assert_eq!(out[1], "200 OK");
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM subscribers WHERE name = 'half-done'"),
        0,
        "the panicking write's change was rolled back"
    );
    assert_eq!(fx.query_i64("SELECT count(*) FROM renewals"), 1);
    assert_books_verify(fx.dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ledger_and_the_audit_chain_verify_after_concurrent_renewals() {
    let fx = Fixture::new();
    let subs = subscribers(&fx, Who::A, fx.a.plan, 8).await;
    let a_before = balance(&fx, 2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = outpost_controller::app(fx.state.clone());
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let before = fx.state.db.write_stats();
    let client = reqwest::Client::new();
    let secret = fx.secret(Who::A).unwrap();
    let clients = subs.iter().map(|sub| {
        let (client, secret) = (client.clone(), secret.clone());
        let url = format!("http://{addr}/api/v1/subscribers/{sub}/renew");
        async move {
            for i in 0..8 {
                let resp = client
                    .post(&url)
                    .bearer_auth(&secret)
                    .header("idempotency-key", format!("{url}-{i}"))
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    resp.status().as_u16(),
                    200,
                    "{}",
                    resp.text().await.unwrap()
                );
            }
        }
    });
    join_all(clients).await;
    server.abort();
    let after = fx.state.db.write_stats();
    assert_eq!(after.writes - before.writes, 64);
    assert_eq!(
        balance(&fx, 2),
        a_before - 64 * 1000,
        "64 renewals at 10.00"
    );
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM ledger WHERE tenant_id = 2 AND kind = 'renewal'"),
        64
    );
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM audit_log WHERE action = 'subscriber.renew'"),
        64
    );
    assert_books_verify(fx.dir.path());
}

/// A real crash: `outpost-controller serve` on the fixture's data directory, renewing
/// under load from eight clients, killed with SIGKILL. Every renewal it answered 200 is
/// in the ledger afterwards, and the books verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_under_load_has_lost_no_renewal_it_answered() {
    let fx = Fixture::new();
    // A's balance covers every renewal the run can make.
    fx.money_ok(
        Who::Op,
        "/api/v1/resellers/2/balance",
        json!({ "amount": "100000.00" }),
    )
    .await;
    let subs = subscribers(&fx, Who::A, fx.a.plan, 8).await;
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(fx.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("listening on http://") {
            break rest.parse().unwrap();
        }
    };
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let client = reqwest::Client::new();
    let secret = fx.secret(Who::A).unwrap();
    let clients: Vec<_> = subs
        .iter()
        .map(|&sub| {
            let (client, secret, acked) = (client.clone(), secret.clone(), acked.clone());
            let url = format!("http://{addr}/api/v1/subscribers/{sub}/renew");
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("crash-{sub}-{i}");
                    let Ok(resp) = client
                        .post(&url)
                        .bearer_auth(&secret)
                        .header("idempotency-key", &key)
                        .json(&json!({}))
                        .send()
                        .await
                    else {
                        return; // the controller is gone
                    };
                    if resp.status().as_u16() == 200 {
                        acked.lock().unwrap().push(key);
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < 300 {
        assert!(
            Instant::now() < deadline,
            "the controller answered too few renewals"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().unwrap(); // SIGKILL, mid-load
    child.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let reader = rusqlite::Connection::open(fx.dir.path().join("controller.db")).unwrap();
    let mut lost = Vec::new();
    for key in &acked {
        let rows: i64 = reader
            .query_row(
                "SELECT count(*) FROM ledger l JOIN operations o ON o.id = l.operation_id
                 WHERE o.idempotency_key = ?1 AND l.kind = 'renewal'",
                [key],
                |r| r.get(0),
            )
            .unwrap();
        if rows != 1 {
            lost.push(key.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} answered renewals are not in the ledger once: {lost:?}",
        lost.len(),
        acked.len()
    );
    drop(reader);
    assert_books_verify(fx.dir.path());
}
