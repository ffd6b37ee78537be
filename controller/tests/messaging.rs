//! Messages per reseller: providers, templates, triggers, the outbox and its log.
//!
//! No real SMS, WhatsApp or HTTP gateway provider is reachable from here, so these tests
//! run a local HTTP server on 127.0.0.1 ([`LocalProvider`]) that speaks each provider's
//! API shape: a Twilio-style `Messages.json` (form POST with basic auth, and the message
//! list), the WhatsApp Cloud API's `/{phone-number-id}/messages` (bearer, template
//! messages), and a reseller's own JSON gateway that honours `Idempotency-Key` the way
//! such gateways do. E-mail goes to a real SMTP server: Debian's `python3-aiosmtpd`.
//!
//! Plain tier: no root. The outbox runs with short timeouts and backoff so retries take
//! milliseconds; no assertion is about time.

mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use common::{Fixture, Who};
use outpost_controller::messaging::outbox::{Outbox, WorkerConfig};
use outpost_controller::messaging::{Trigger, triggers};
use serde_json::{Value, json};

// ------------------------------------------------------------ the local provider

/// What the local provider does with the next request of a shape.
#[derive(Debug, Clone)]
enum Act {
    /// Answer with this status (an error body for 4xx/5xx).
    Status(u16),
    /// Take the message, then wait this long before answering (a timeout).
    Slow(Duration),
    /// Take the message and never answer: the sender is cut off mid-request.
    Hold,
}

#[derive(Debug, Clone)]
struct Got {
    shape: &'static str,
    key: Option<String>,
    auth: Option<String>,
    /// Form fields (Twilio-style) or the JSON body (WhatsApp, gateway).
    form: BTreeMap<String, String>,
    json: Value,
}

#[derive(Default)]
struct ProviderState {
    got: Vec<Got>,
    script: HashMap<&'static str, VecDeque<Act>>,
    /// The gateway's idempotency memory: key → the answer it gave.
    answered: HashMap<String, (u16, String)>,
    /// Messages taken (what the provider would deliver), per shape.
    taken: Vec<(&'static str, Value)>,
}

#[derive(Clone, Default)]
struct LocalProvider {
    st: Arc<Mutex<ProviderState>>,
    addr: Option<SocketAddr>,
}

impl LocalProvider {
    async fn start() -> LocalProvider {
        let mut p = LocalProvider::default();
        let app = axum::Router::new()
            .route("/gw/send", post(gateway))
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                post(twilio_send).get(twilio_list),
            )
            .route("/v21.0/{phone}/messages", post(whatsapp))
            .with_state(p.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        p.addr = Some(l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        p
    }
    fn url(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }
    fn script(&self, shape: &'static str, acts: &[Act]) {
        self.st
            .lock()
            .unwrap()
            .script
            .entry(shape)
            .or_default()
            .extend(acts.iter().cloned());
    }
    fn got(&self, shape: &str) -> Vec<Got> {
        let st = self.st.lock().unwrap();
        st.got
            .iter()
            .filter(|g| g.shape == shape)
            .cloned()
            .collect()
    }
    fn taken(&self, shape: &str) -> usize {
        let st = self.st.lock().unwrap();
        st.taken.iter().filter(|(s, _)| *s == shape).count()
    }
    fn next(&self, shape: &'static str, g: Got) -> Option<Act> {
        let mut st = self.st.lock().unwrap();
        st.got.push(g);
        st.script.get_mut(shape).and_then(|q| q.pop_front())
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Plays an act after the message was recorded; `ok` is the success answer.
async fn play(
    p: &LocalProvider,
    act: Option<Act>,
    shape: &'static str,
    msg: Value,
    ok: (u16, Value),
) -> (StatusCode, String) {
    let take = |p: &LocalProvider| p.st.lock().unwrap().taken.push((shape, msg.clone()));
    match act {
        Some(Act::Status(s)) if !(200..300).contains(&s) => (
            StatusCode::from_u16(s).unwrap(),
            json!({ "error": { "code": s, "message": "scripted refusal" } }).to_string(),
        ),
        Some(Act::Slow(d)) => {
            take(p);
            tokio::time::sleep(d).await;
            (StatusCode::from_u16(ok.0).unwrap(), ok.1.to_string())
        }
        Some(Act::Hold) => {
            take(p);
            std::future::pending::<()>().await;
            unreachable!()
        }
        _ => {
            take(p);
            (StatusCode::from_u16(ok.0).unwrap(), ok.1.to_string())
        }
    }
}

/// A reseller's JSON gateway that answers a repeated `Idempotency-Key` with its first
/// answer and sends nothing again.
async fn gateway(State(p): State<LocalProvider>, h: HeaderMap, body: String) -> impl IntoResponse {
    let key = header(&h, "idempotency-key");
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let g = Got {
        shape: "gateway",
        key: key.clone(),
        auth: header(&h, "x-api-key"),
        form: BTreeMap::new(),
        json: json.clone(),
    };
    if let Some(k) = &key {
        let first = p.st.lock().unwrap().answered.get(k).cloned();
        if let Some((s, b)) = first {
            p.st.lock().unwrap().got.push(g);
            return (StatusCode::from_u16(s).unwrap(), b);
        }
    }
    let act = p.next("gateway", g);
    let n = p.taken("gateway") + 1;
    // The gateway remembers the key once it took the message (before answering).
    if let (Some(k), Some(Act::Hold | Act::Slow(_)) | None) = (&key, &act) {
        let ok = json!({ "id": format!("gw-{n}") }).to_string();
        p.st.lock().unwrap().answered.insert(k.clone(), (200, ok));
    }
    if let (Some(k), Some(Act::Status(s))) = (&key, &act)
        && (200..300).contains(s)
    {
        let ok = json!({ "id": format!("gw-{n}") }).to_string();
        p.st.lock().unwrap().answered.insert(k.clone(), (200, ok));
    }
    play(
        &p,
        act,
        "gateway",
        json,
        (200, json!({ "id": format!("gw-{n}") })),
    )
    .await
}

async fn twilio_send(
    State(p): State<LocalProvider>,
    Path(sid): Path<String>,
    h: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let g = Got {
        shape: "twilio",
        key: header(&h, "idempotency-key"),
        auth: header(&h, "authorization"),
        form: form.clone(),
        json: Value::Null,
    };
    let act = p.next("twilio", g);
    let n = p.taken("twilio") + 1;
    let msg = json!({ "sid": format!("SM{n:032}"), "to": form.get("To"), "from": form.get("From"),
        "body": form.get("Body"), "account_sid": sid, "status": "queued" });
    play(&p, act, "twilio", msg.clone(), (201, msg)).await
}

async fn twilio_list(
    State(p): State<LocalProvider>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let st = p.st.lock().unwrap();
    let to = q.get("To").cloned().unwrap_or_default();
    let list: Vec<Value> = st
        .taken
        .iter()
        .filter(|(s, m)| *s == "twilio" && m["to"] == to.as_str())
        .map(|(_, m)| m.clone())
        .collect();
    axum::Json(json!({ "messages": list, "page_size": 50 }))
}

async fn whatsapp(
    State(p): State<LocalProvider>,
    Path(_phone): Path<String>,
    h: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let g = Got {
        shape: "whatsapp",
        key: header(&h, "idempotency-key"),
        auth: header(&h, "authorization"),
        form: BTreeMap::new(),
        json: json.clone(),
    };
    let act = p.next("whatsapp", g);
    let n = p.taken("whatsapp") + 1;
    let ok = json!({ "messaging_product": "whatsapp", "contacts": [{ "input": json["to"], "wa_id": json["to"] }],
        "messages": [{ "id": format!("wamid.{n}") }] });
    play(&p, act, "whatsapp", json, (200, ok)).await
}

// ------------------------------------------------------------ helpers

fn worker_config() -> WorkerConfig {
    WorkerConfig {
        batch: 16,
        poll: Duration::from_millis(20),
        request_timeout: Duration::from_millis(400),
        stale_after: Duration::from_millis(800),
        idempotency_window: Duration::from_secs(3600),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        max_attempts: 4,
        // The local provider is on loopback, which a real installation refuses unless
        // the operator allows private destinations (see the egress test below).
        allow_private_destinations: true,
    }
}

fn outbox(fx: &Fixture) -> Outbox {
    Outbox::new(
        fx.state.db.clone(),
        fx.state.secrets.clone(),
        worker_config(),
    )
}

/// Runs outbox passes until `done` holds (20 s at most, else the test fails saying what
/// it waited for).
async fn drain_until(fx: &Fixture, ob: &Outbox, what: &str, done: impl Fn(&Fixture) -> bool) {
    let start = std::time::Instant::now();
    while !done(fx) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "outbox never reached: {what}"
        );
        ob.pass().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn contacts(fx: &Fixture, who: Who, sub: i64, phone: &str, email: &str) {
    fx.patch_ok(
        who,
        &format!("/api/v1/subscribers/{sub}"),
        json!({ "phone": phone, "email": email }),
    )
    .await;
}

fn twilio(lp: &LocalProvider, tenant: i64) -> Value {
    json!({ "tenant_id": tenant, "channel": "sms", "secret": "twilio-auth-token",
        "config": { "kind": "twilio", "base_url": lp.url(), "account_sid": "AC0001", "from": "+15550100" } })
}

fn gateway_provider(lp: &LocalProvider, tenant: i64, honours: bool) -> Value {
    json!({ "tenant_id": tenant, "channel": "sms", "secret": "gw-key-1",
        "config": { "kind": "http", "url": format!("{}/gw/send", lp.url()), "method": "POST",
            "headers": { "X-Api-Key": "{{secret}}" }, "body_type": "json",
            "body": "{\"to\":\"{{to}}\",\"text\":\"{{text}}\",\"ref\":\"{{key}}\"}",
            "honours_idempotency_key": honours } })
}

fn one(fx: &Fixture, sql: &str) -> i64 {
    fx.query_i64(sql)
}

/// Enqueues `trigger` for `sub` as its event `event` (directly, as an event site does).
fn fire(fx: &Fixture, trigger: Trigger, sub: i64, event: &str) -> usize {
    let event = event.to_string();
    fx.state
        .db
        .write_blocking(|tx| triggers::fire(tx, trigger, sub, &event, Some("25.00"), None))
        .unwrap()
}

// ------------------------------------------------------------ tests

#[tokio::test]
async fn a_renewal_sends_one_sms_through_the_twilio_shape() {
    let fx = Fixture::new();
    let lp = LocalProvider::start().await;
    let p = fx
        .post_ok(Who::A, "/api/v1/messaging/providers", twilio(&lp, 2))
        .await;
    assert_eq!(p["has_secret"], true);
    assert!(p.get("secret").is_none(), "{p}");
    contacts(&fx, Who::A, fx.a.subscriber, "+15550111", "").await;
    let sub = fx.a.subscriber;
    let (s, _) = fx
        .keyed(
            Who::A,
            &format!("/api/v1/subscribers/{sub}/renew"),
            json!({ "periods": 1 }),
            "renew-1",
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // The same renewal replayed by its key enqueues nothing more.
    fx.keyed(
        Who::A,
        &format!("/api/v1/subscribers/{sub}/renew"),
        json!({ "periods": 1 }),
        "renew-1",
    )
    .await;
    assert_eq!(one(&fx, "SELECT count(*) FROM messages"), 1);
    let ob = outbox(&fx);
    drain_until(&fx, &ob, "the message sent", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'sent'") == 1
    })
    .await;
    let got = lp.got("twilio");
    assert_eq!(got.len(), 1);
    let g = &got[0];
    assert_eq!(g.form["To"], "+15550111");
    assert_eq!(g.form["From"], "+15550100");
    assert!(g.form["Body"].contains("renewed until"), "{:?}", g.form);
    assert!(g.form["Body"].contains("Reseller A"), "{:?}", g.form);
    // Basic auth: the account sid and the auth token, opened from its sealed form.
    use base64::Engine;
    let want = base64::engine::general_purpose::STANDARD.encode("AC0001:twilio-auth-token");
    assert_eq!(g.auth.as_deref(), Some(format!("Basic {want}").as_str()));
    assert!(g.key.as_deref().unwrap().starts_with("renewed:"));
    let log = fx.get_ok(Who::A, "/api/v1/messages").await;
    let m = &log["items"][0];
    assert_eq!(m["status"], "sent");
    assert_eq!(m["trigger"], "renewed");
    assert_eq!(m["channel"], "sms");
    assert!(m["provider_message_id"].as_str().unwrap().starts_with("SM"));
    assert!(m["last_answer"].as_str().unwrap().starts_with("201"));
    // The credential is sealed at rest and never in the audit log.
    let sealed_has_plain = one(
        &fx,
        "SELECT count(*) FROM message_providers WHERE instr(secret_sealed, 'twilio-auth-token') > 0",
    );
    assert_eq!(sealed_has_plain, 0);
    let audited = one(
        &fx,
        "SELECT count(*) FROM audit_log WHERE instr(coalesce(after, ''), 'twilio-auth-token') > 0",
    );
    assert_eq!(audited, 0);
    let set = one(
        &fx,
        "SELECT count(*) FROM audit_log WHERE action = 'messaging.provider.put'",
    );
    assert_eq!(set, 1);
}

#[tokio::test]
async fn retries_5xx_and_timeouts_and_fails_4xx_for_good() {
    let fx = Fixture::new();
    let lp = LocalProvider::start().await;
    fx.post_ok(
        Who::A,
        "/api/v1/messaging/providers",
        gateway_provider(&lp, 2, true),
    )
    .await;
    contacts(&fx, Who::A, fx.a.subscriber, "+15550111", "").await;
    // 503, then slower than the request timeout, then taken.
    lp.script(
        "gateway",
        &[Act::Status(503), Act::Slow(Duration::from_secs(3))],
    );
    assert_eq!(
        fire(&fx, Trigger::PaymentReceived, fx.a.subscriber, "op-1"),
        1
    );
    let ob = outbox(&fx);
    drain_until(&fx, &ob, "sent after retries", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'sent'") == 1
    })
    .await;
    let got = lp.got("gateway");
    assert_eq!(got.len(), 3, "503, timeout, then the answer: {got:?}");
    let keys: Vec<_> = got.iter().map(|g| g.key.clone().unwrap()).collect();
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "one key on every attempt: {keys:?}"
    );
    assert_eq!(
        got[0].json["ref"],
        keys[0].as_str(),
        "{{{{key}}}} in the body"
    );
    assert_eq!(got[0].auth.as_deref(), Some("gw-key-1"));
    assert_eq!(
        one(&fx, "SELECT attempts FROM messages WHERE status = 'sent'"),
        3
    );
    // The slow attempt was taken by the gateway; its deduplication made it one message.
    assert_eq!(lp.taken("gateway"), 1);

    // A 4xx is final: one attempt, the provider's answer kept.
    lp.script("gateway", &[Act::Status(400)]);
    assert_eq!(
        fire(&fx, Trigger::PaymentReceived, fx.a.subscriber, "op-2"),
        1
    );
    drain_until(&fx, &ob, "the refused message failed", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'failed'") == 1
    })
    .await;
    let (attempts, answer): (i64, String) = fx
        .state
        .db
        .write_blocking(|tx| {
            Ok(tx.query_row(
                "SELECT attempts, last_answer FROM messages WHERE status = 'failed'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .unwrap();
    assert_eq!(attempts, 1);
    assert!(
        answer.starts_with("400") && answer.contains("scripted refusal"),
        "{answer}"
    );

    // Connection refused is retried, up to max_attempts, then failed with the cause.
    let dead = format!(
        "http://127.0.0.1:{}/gw/send",
        outpost_testkit::port::free_tcp_port()
    );
    let mut p = gateway_provider(&lp, 2, true);
    p["config"]["url"] = dead.into();
    fx.post_ok(Who::A, "/api/v1/messaging/providers", p).await;
    assert_eq!(
        fire(&fx, Trigger::PaymentReceived, fx.a.subscriber, "op-3"),
        1
    );
    drain_until(&fx, &ob, "the unreachable message failed", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'failed'") == 2
    })
    .await;
    let (attempts, answer): (i64, String) = fx
        .state
        .db
        .write_blocking(|tx| {
            Ok(tx.query_row(
                "SELECT attempts, last_answer FROM messages WHERE idempotency_key LIKE '%op-3%'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .unwrap();
    assert_eq!(attempts, 4);
    assert!(answer.contains("gave up after 4 attempts"), "{answer}");

    // A Twilio-style API (no idempotency key) that takes the message but answers after
    // the timeout: the message is looked up in its message list, not posted again.
    fx.post_ok(Who::A, "/api/v1/messaging/providers", twilio(&lp, 2))
        .await;
    lp.script("twilio", &[Act::Slow(Duration::from_secs(3))]);
    assert_eq!(
        fire(&fx, Trigger::PaymentReceived, fx.a.subscriber, "op-4"),
        1
    );
    drain_until(&fx, &ob, "the late message found", |fx| {
        one(
            fx,
            "SELECT count(*) FROM messages WHERE idempotency_key LIKE '%op-4%' AND status = 'sent'",
        ) == 1
    })
    .await;
    assert_eq!(lp.got("twilio").len(), 1, "not posted twice");
    assert_eq!(lp.taken("twilio"), 1);
}

/// Runs one pass that the provider cuts off mid-request (it takes the message and never
/// answers), and stops it there, before it can mark anything: what a crash between the
/// send and the mark leaves. The claim was committed; nothing else was.
async fn crash_mid_send(fx: &Fixture, lp: &LocalProvider, shape: &'static str) {
    let ob = outbox(fx);
    let before = lp.got(shape).len();
    let task = tokio::spawn(async move { ob.pass().await });
    let start = std::time::Instant::now();
    while lp.got(shape).len() == before {
        assert!(start.elapsed() < Duration::from_secs(20), "no request came");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    let _ = task.await;
    assert_eq!(
        one(fx, "SELECT count(*) FROM messages WHERE status = 'sending'"),
        1,
        "the crash left the message 'sending'"
    );
}

#[tokio::test]
async fn a_crash_between_send_and_mark_never_sends_twice_nor_loses_the_message() {
    // A gateway that honours Idempotency-Key: resent with the same key, taken once.
    let fx = Fixture::new();
    let lp = LocalProvider::start().await;
    fx.post_ok(
        Who::A,
        "/api/v1/messaging/providers",
        gateway_provider(&lp, 2, true),
    )
    .await;
    contacts(&fx, Who::A, fx.a.subscriber, "+15550111", "").await;
    lp.script("gateway", &[Act::Hold]);
    fire(&fx, Trigger::Renewed, fx.a.subscriber, "r-1");
    crash_mid_send(&fx, &lp, "gateway").await;
    // A new worker (the restarted controller) on the same database.
    let ob = outbox(&fx);
    drain_until(&fx, &ob, "the interrupted message recovered", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'sent'") == 1
    })
    .await;
    let got = lp.got("gateway");
    assert_eq!(got.len(), 2, "sent again after the crash");
    assert_eq!(got[0].key, got[1].key, "with the same key");
    assert_eq!(lp.taken("gateway"), 1, "and taken once");
    assert_eq!(one(&fx, "SELECT attempts FROM messages"), 2);

    // Twilio-style (no idempotency key): the worker asks the message list, finds it,
    // and marks it sent without a second POST.
    let fx = Fixture::new();
    let lp = LocalProvider::start().await;
    fx.post_ok(Who::A, "/api/v1/messaging/providers", twilio(&lp, 2))
        .await;
    contacts(&fx, Who::A, fx.a.subscriber, "+15550111", "").await;
    lp.script("twilio", &[Act::Hold]);
    fire(&fx, Trigger::Renewed, fx.a.subscriber, "r-1");
    crash_mid_send(&fx, &lp, "twilio").await;
    let ob = outbox(&fx);
    drain_until(&fx, &ob, "the interrupted message found", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'sent'") == 1
    })
    .await;
    assert_eq!(lp.got("twilio").len(), 1, "no second POST");
    assert_eq!(lp.taken("twilio"), 1);
    let m = fx.get_ok(Who::A, "/api/v1/messages").await;
    assert!(
        m["items"][0]["last_answer"]
            .as_str()
            .unwrap()
            .contains("found in the provider's message list"),
        "{m}"
    );
    // …and when the list does not have it (the crash came before the provider took
    // it), it is sent: not lost.
    lp.script("twilio", &[Act::Status(503)]);
    fire(&fx, Trigger::Renewed, fx.a.subscriber, "r-2");
    // The 503 is not taken; this models a crash right after it, before the mark.
    {
        let ob = outbox(&fx);
        let task = tokio::spawn(async move { ob.pass().await });
        let start = std::time::Instant::now();
        while lp.got("twilio").len() < 2 {
            assert!(start.elapsed() < Duration::from_secs(20));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        task.abort();
        let _ = task.await;
    }
    // Whether the abort beat the mark or not, the message ends sent exactly once.
    drain_until(&fx, &ob, "the second message sent", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'sent'") == 2
    })
    .await;
    assert_eq!(lp.taken("twilio"), 2, "each message taken once");

    // A gateway that does not deduplicate: not resent (it may have gone), failed with
    // the reason in the log, never twice.
    let fx = Fixture::new();
    let lp = LocalProvider::start().await;
    fx.post_ok(
        Who::A,
        "/api/v1/messaging/providers",
        gateway_provider(&lp, 2, false),
    )
    .await;
    contacts(&fx, Who::A, fx.a.subscriber, "+15550111", "").await;
    lp.script("gateway", &[Act::Hold]);
    fire(&fx, Trigger::Renewed, fx.a.subscriber, "r-1");
    crash_mid_send(&fx, &lp, "gateway").await;
    let ob = outbox(&fx);
    drain_until(&fx, &ob, "the interrupted message settled", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'failed'") == 1
    })
    .await;
    assert_eq!(lp.got("gateway").len(), 1, "not sent twice");
    let m = fx.get_ok(Who::A, "/api/v1/messages").await;
    assert!(
        m["items"][0]["last_answer"]
            .as_str()
            .unwrap()
            .contains("delivery unknown"),
        "{m}"
    );
}

#[tokio::test]
async fn the_rate_limit_holds_per_reseller() {
    let fx = Fixture::new();
    let lp = LocalProvider::start().await;
    fx.post_ok(
        Who::A,
        "/api/v1/messaging/providers",
        gateway_provider(&lp, 2, true),
    )
    .await;
    fx.post_ok(
        Who::B,
        "/api/v1/messaging/providers",
        gateway_provider(&lp, 4, true),
    )
    .await;
    let v = fx
        .call(
            Who::A,
            axum::http::Method::PUT,
            "/api/v1/messaging/settings/2",
            Some(json!({ "reminder_days": 3, "per_minute": 5, "portal_url": null })),
        )
        .await;
    assert_eq!(v.0, StatusCode::OK, "{}", v.1);
    contacts(&fx, Who::A, fx.a.subscriber, "+15550111", "").await;
    contacts(&fx, Who::B, fx.b.subscriber, "+15550222", "").await;
    for i in 0..12 {
        assert_eq!(
            fire(
                &fx,
                Trigger::PaymentReceived,
                fx.a.subscriber,
                &format!("p{i}")
            ),
            1
        );
    }
    for i in 0..3 {
        fire(
            &fx,
            Trigger::PaymentReceived,
            fx.b.subscriber,
            &format!("p{i}"),
        );
    }
    let ob = outbox(&fx);
    // B (60 a minute by default) is not held up by A's limit.
    drain_until(&fx, &ob, "five of A's and all of B's sent", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'sent'") == 8
    })
    .await;
    for _ in 0..20 {
        ob.pass().await.unwrap();
    }
    assert_eq!(
        one(
            &fx,
            "SELECT count(*) FROM messages WHERE tenant_id = 2 AND status = 'sent'"
        ),
        5
    );
    assert_eq!(
        one(
            &fx,
            "SELECT count(*) FROM messages WHERE tenant_id = 2 AND status = 'queued'"
        ),
        7
    );
    let to_a = lp
        .got("gateway")
        .iter()
        .filter(|g| g.json["to"] == "+15550111")
        .count();
    assert_eq!(to_a, 5);
    // The held messages wait for the minute to pass, not in a busy loop.
    let now = outpost_controller::messaging::now_ms();
    assert_eq!(
        one(
            &fx,
            &format!(
                "SELECT count(*) FROM messages WHERE status = 'queued' AND next_attempt_at <= {now}"
            )
        ),
        0
    );
}

#[tokio::test]
async fn a_provider_on_a_private_address_is_not_reached_by_default() {
    // A reseller points its gateway at the controller's own loopback: with the default
    // configuration the outbox sends nothing there, and the log says why.
    let fx = Fixture::new();
    let lp = LocalProvider::start().await;
    fx.post_ok(
        Who::A,
        "/api/v1/messaging/providers",
        gateway_provider(&lp, 2, true),
    )
    .await;
    contacts(&fx, Who::A, fx.a.subscriber, "+15550111", "").await;
    assert_eq!(
        fire(&fx, Trigger::PaymentReceived, fx.a.subscriber, "op-egress"),
        1
    );
    let ob = Outbox::new(
        fx.state.db.clone(),
        fx.state.secrets.clone(),
        WorkerConfig {
            allow_private_destinations: false,
            ..worker_config()
        },
    );
    drain_until(&fx, &ob, "the message to loopback failed", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'failed'") == 1
    })
    .await;
    assert!(
        lp.got("gateway").is_empty(),
        "nothing reached the loopback gateway"
    );
    let answer: String = fx
        .state
        .db
        .write_blocking(|tx| {
            Ok(tx.query_row(
                "SELECT last_answer FROM messages WHERE status = 'failed'",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert!(
        answer.contains("127.0.0.1") && answer.contains("not a public address"),
        "{answer}"
    );
}

#[tokio::test]
async fn whatsapp_falls_back_to_sms_when_configured() {
    let fx = Fixture::new();
    let lp = LocalProvider::start().await;
    fx.post_ok(Who::A, "/api/v1/messaging/providers", twilio(&lp, 2))
        .await;
    let wa = |fallback: bool| {
        json!({ "tenant_id": 2, "channel": "whatsapp", "secret": "wa-token",
            "config": { "kind": "whatsapp_cloud", "base_url": format!("{}/v21.0", lp.url()),
                "phone_number_id": "1234567890", "fallback_to_sms": fallback } })
    };
    fx.post_ok(Who::A, "/api/v1/messaging/providers", wa(true))
        .await;
    contacts(&fx, Who::A, fx.a.subscriber, "+1 555 0111", "").await;
    let ob = outbox(&fx);
    // Taken by WhatsApp: a template message, no SMS.
    fire(&fx, Trigger::Renewed, fx.a.subscriber, "r-1");
    drain_until(&fx, &ob, "the WhatsApp message sent", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'sent'") == 1
    })
    .await;
    let w = &lp.got("whatsapp")[0];
    assert_eq!(w.auth.as_deref(), Some("Bearer wa-token"));
    assert_eq!(w.json["type"], "template");
    assert_eq!(w.json["to"], "15550111");
    assert_eq!(w.json["template"]["name"], "service_renewed");
    let params = &w.json["template"]["components"][0]["parameters"];
    assert_eq!(params[0]["text"], "Customer a");
    assert_eq!(lp.got("twilio").len(), 0);

    // Refused by WhatsApp (a 4xx): the SMS text goes out through the SMS provider.
    lp.script("whatsapp", &[Act::Status(400)]);
    fire(&fx, Trigger::Renewed, fx.a.subscriber, "r-2");
    drain_until(&fx, &ob, "the fallback SMS sent", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'sent'") == 2
    })
    .await;
    let sms = lp.got("twilio");
    assert_eq!(sms.len(), 1);
    assert!(sms[0].form["Body"].contains("renewed until"));
    assert!(sms[0].key.as_deref().unwrap().ends_with(":sms"));
    let m = fx.get_ok(Who::A, "/api/v1/messages?limit=1").await;
    assert_eq!(m["items"][0]["channel"], "sms");
    assert!(
        m["items"][0]["last_answer"]
            .as_str()
            .unwrap()
            .starts_with("201"),
        "{m}"
    );

    // Without fallback, a refusal is final.
    fx.post_ok(Who::A, "/api/v1/messaging/providers", wa(false))
        .await;
    lp.script("whatsapp", &[Act::Status(400)]);
    fire(&fx, Trigger::Renewed, fx.a.subscriber, "r-3");
    drain_until(&fx, &ob, "the refused WhatsApp failed", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'failed'") == 1
    })
    .await;
    assert_eq!(lp.got("twilio").len(), 1, "no SMS without fallback");
}

#[tokio::test]
async fn providers_templates_and_settings_are_inherited_down_the_tree() {
    let fx = Fixture::new();
    let lp = LocalProvider::start().await;
    fx.post_ok(
        Who::A,
        "/api/v1/messaging/providers",
        gateway_provider(&lp, 2, true),
    )
    .await;
    fx.post_ok(
        Who::A,
        "/api/v1/messaging/templates",
        json!({ "trigger": "payment_received", "channel": "sms",
            "body": "A's text: {{name}} paid {{amount}} at {{reseller}} {{portal_url}}" }),
    )
    .await;
    let (s, _) = fx
        .call(
            Who::A,
            axum::http::Method::PUT,
            "/api/v1/messaging/settings/2",
            Some(json!({ "reminder_days": 7, "per_minute": 100, "portal_url": "https://portal.a.example" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let v = fx.get_ok(Who::A1, "/api/v1/messaging/settings/3").await;
    assert_eq!(v["inherited_from"], 2);
    assert_eq!(v["reminder_days"], 7);
    contacts(&fx, Who::A1, fx.a1.subscriber, "+15550333", "").await;
    // A1 has no provider nor template: A's are used for A1's subscriber.
    fire(&fx, Trigger::PaymentReceived, fx.a1.subscriber, "p1");
    let ob = outbox(&fx);
    drain_until(&fx, &ob, "sent through A's provider", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'sent'") == 1
    })
    .await;
    let g = &lp.got("gateway")[0];
    assert_eq!(g.json["to"], "+15550333");
    assert_eq!(
        g.json["text"],
        "A's text: Customer a1 paid 25.00 at Sub-reseller A1 https://portal.a.example"
    );
    // The log is A1's (its subscriber's), and A sees it too (its subtree).
    let m = fx.get_ok(Who::A1, "/api/v1/messages").await;
    assert_eq!(m["items"].as_array().unwrap().len(), 1);
    assert_eq!(m["items"][0]["tenant_id"], 3);
    assert_eq!(
        fx.get_ok(Who::A, "/api/v1/messages").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A1's own provider and template take over for A1 only.
    let mut own = twilio(&lp, 3);
    own["tenant_id"] = 3.into();
    fx.post_ok(Who::A1, "/api/v1/messaging/providers", own)
        .await;
    fx.post_ok(
        Who::A1,
        "/api/v1/messaging/templates",
        json!({ "trigger": "payment_received", "channel": "sms", "body": "A1: {{amount}}" }),
    )
    .await;
    contacts(&fx, Who::A, fx.a.subscriber, "+15550111", "").await;
    fire(&fx, Trigger::PaymentReceived, fx.a1.subscriber, "p2");
    fire(&fx, Trigger::PaymentReceived, fx.a.subscriber, "p2");
    drain_until(&fx, &ob, "both sent", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'sent'") == 3
    })
    .await;
    let t = lp.got("twilio");
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].form["Body"], "A1: 25.00");
    assert_eq!(t[0].form["To"], "+15550333");
    assert_eq!(lp.got("gateway").len(), 2);
    // Turning a trigger off at A turns it off below, unless a child has its own text.
    fx.post_ok(
        Who::A,
        "/api/v1/messaging/templates",
        json!({ "trigger": "suspended", "channel": "sms", "enabled": false, "body": "off" }),
    )
    .await;
    assert_eq!(fire(&fx, Trigger::Suspended, fx.a1.subscriber, "s1"), 0);
    assert_eq!(fire(&fx, Trigger::Suspended, fx.a.subscriber, "s1"), 0);
    // No provider on B's chain: nothing is enqueued for B's subscriber.
    contacts(&fx, Who::B, fx.b.subscriber, "+15550222", "").await;
    assert_eq!(fire(&fx, Trigger::Renewed, fx.b.subscriber, "r1"), 0);
}

#[tokio::test]
async fn resellers_never_see_each_others_messaging() {
    let fx = Fixture::new();
    let lp = LocalProvider::start().await;
    let p = fx
        .post_ok(
            Who::A,
            "/api/v1/messaging/providers",
            gateway_provider(&lp, 2, true),
        )
        .await;
    let t = fx
        .post_ok(
            Who::A,
            "/api/v1/messaging/templates",
            json!({ "trigger": "renewed", "channel": "sms", "body": "A: {{name}}" }),
        )
        .await;
    contacts(&fx, Who::A, fx.a.subscriber, "+15550111", "").await;
    fire(&fx, Trigger::Renewed, fx.a.subscriber, "r1");
    let mid = one(&fx, "SELECT id FROM messages");
    for path in [
        format!("/api/v1/messaging/providers/{}", p["id"]),
        format!("/api/v1/messaging/templates/{}", t["id"]),
        format!("/api/v1/messages/{mid}"),
        "/api/v1/messaging/settings/2".to_string(),
    ] {
        let (s, v) = fx.get(Who::B, &path).await;
        common::assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
        // A1 is below A: A's rows are not A1's either.
        let (s, _) = fx.get(Who::A1, &path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path} as A1");
        let (s, _) = fx.get(Who::A, &path).await;
        assert_eq!(s, StatusCode::OK, "{path} as A");
    }
    for path in [
        "/api/v1/messaging/providers",
        "/api/v1/messaging/templates",
        "/api/v1/messages",
        "/api/v1/messages?tenant_id=2",
    ] {
        let v = fx.get_ok(Who::B, path).await;
        assert_eq!(v["items"], json!([]), "{path}: {v}");
    }
    // B cannot delete A's rows, nor write for A.
    let (s, _) = fx
        .call(
            Who::B,
            axum::http::Method::DELETE,
            &format!("/api/v1/messaging/providers/{}", p["id"]),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = fx
        .post(
            Who::B,
            "/api/v1/messaging/providers",
            gateway_provider(&lp, 2, true),
        )
        .await;
    common::assert_error(s, &v, StatusCode::FORBIDDEN, "tenant_out_of_scope");
    let (s, _) = fx
        .call(
            Who::B,
            axum::http::Method::PUT,
            "/api/v1/messaging/settings/2",
            Some(json!({ "reminder_days": 1, "per_minute": 1, "portal_url": null })),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A manager without manage_messaging is refused.
    let (s, v) = fx.get(Who::M, "/api/v1/messages").await;
    common::assert_error(s, &v, StatusCode::FORBIDDEN, "permission_denied");
    assert_eq!(one(&fx, "SELECT count(*) FROM message_providers"), 1);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let fx = Fixture::new();
    let lp = LocalProvider::start().await;
    let (audit_before, _) = fx.audit_tail();
    let base = gateway_provider(&lp, 2, true);
    let cases: Vec<(Value, u16, &str)> = vec![
        // A URL that is not one.
        (
            {
                let mut v = base.clone();
                v["config"]["url"] = "not a url".into();
                v
            },
            422,
            "invalid",
        ),
        (
            {
                let mut v = base.clone();
                v["config"]["url"] = "ftp://x.example/send".into();
                v
            },
            422,
            "invalid",
        ),
        // An unknown placeholder in the gateway's body.
        (
            {
                let mut v = base.clone();
                v["config"]["body"] = "{\"t\":\"{{password}}\"}".into();
                v
            },
            422,
            "bad_template",
        ),
        // A JSON body that is not JSON once filled.
        (
            {
                let mut v = base.clone();
                v["config"]["body"] = "{\"t\":\"{{text}}\"".into();
                v
            },
            422,
            "bad_json",
        ),
        // A shape on the wrong channel, an unknown field, a missing token.
        (
            {
                let mut v = base.clone();
                v["channel"] = "email".into();
                v
            },
            422,
            "invalid",
        ),
        (
            {
                let mut v = base.clone();
                v["config"]["colour"] = "red".into();
                v
            },
            422,
            "invalid_field",
        ),
        (
            json!({ "channel": "sms", "config": { "kind": "twilio", "account_sid": "AC1", "from": "+1555" } }),
            422,
            "invalid",
        ),
        (
            json!({ "channel": "email", "config": { "kind": "smtp", "host": "127.0.0.1", "port": 25, "tls": "none", "from": "not an address" } }),
            422,
            "invalid",
        ),
    ];
    for (body, want, code) in cases {
        let (s, v) = fx
            .post(Who::A, "/api/v1/messaging/providers", body.clone())
            .await;
        assert_eq!(s.as_u16(), want, "{body}: {v}");
        assert_eq!(common::error_code(&v), code, "{body}: {v}");
    }
    let templates: Vec<(Value, &str)> = vec![
        (
            json!({ "trigger": "renewed", "channel": "sms", "body": "Hi {{password}}" }),
            "bad_template",
        ),
        (
            json!({ "trigger": "renewed", "channel": "sms", "body": "Hi {{name" }),
            "bad_template",
        ),
        (
            json!({ "trigger": "renewed", "channel": "sms", "body": "{{#each subscribers}}{{name}}{{/each}}" }),
            "bad_template",
        ),
        (
            json!({ "trigger": "renewed", "channel": "email", "subject": "{{ balance.owner }}", "body": "x" }),
            "bad_template",
        ),
        (
            json!({ "trigger": "renewed", "channel": "whatsapp", "body": "x" }),
            "invalid",
        ),
        (
            json!({ "trigger": "renewed", "channel": "whatsapp", "body": "x",
                  "whatsapp": { "name": "renewed", "language": "en", "params": ["{{secret}}"] } }),
            "bad_template",
        ),
        (
            json!({ "trigger": "exploded", "channel": "sms", "body": "x" }),
            "invalid_field",
        ),
    ];
    for (body, code) in templates {
        let (s, v) = fx
            .post(Who::A, "/api/v1/messaging/templates", body.clone())
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(common::error_code(&v), code, "{body}: {v}");
    }
    for body in [
        json!({ "reminder_days": 99, "per_minute": 5, "portal_url": null }),
        json!({ "reminder_days": 3, "per_minute": 0, "portal_url": null }),
        json!({ "reminder_days": 3, "per_minute": 5, "portal_url": "javascript:alert(1)" }),
    ] {
        let (s, v) = fx
            .call(
                Who::A,
                axum::http::Method::PUT,
                "/api/v1/messaging/settings/2",
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
    }
    // A body that is not JSON at all.
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/api/v1/messaging/providers")
        .header(
            "authorization",
            format!("Bearer {}", fx.secret(Who::A).unwrap()),
        )
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{\"channel\": \"sms\", "))
        .unwrap();
    let (s, _, v) = fx.send(req, common::CLIENT_IP.parse().unwrap()).await;
    common::assert_error(s, &v, StatusCode::BAD_REQUEST, "malformed_json");
    assert_eq!(one(&fx, "SELECT count(*) FROM message_providers"), 0);
    assert_eq!(one(&fx, "SELECT count(*) FROM message_templates"), 0);
    assert_eq!(one(&fx, "SELECT count(*) FROM messaging_settings"), 0);
    assert_eq!(fx.audit_tail().0, audit_before, "nothing audited");
}

#[tokio::test]
async fn events_enqueue_where_they_happen_and_reminders_go_once() {
    let fx = Fixture::new();
    let lp = LocalProvider::start().await;
    fx.post_ok(
        Who::A,
        "/api/v1/messaging/providers",
        gateway_provider(&lp, 2, true),
    )
    .await;
    contacts(&fx, Who::A, fx.a.subscriber, "+15550111", "").await;
    contacts(&fx, Who::A1, fx.a1.subscriber, "+15550333", "").await;
    let (a, a1) = (fx.a.subscriber, fx.a1.subscriber);
    let count = |fx: &Fixture, trigger: &str| {
        one(
            fx,
            &format!("SELECT count(*) FROM messages WHERE trigger = '{trigger}'"),
        )
    };
    // A payment, through the API.
    let (s, v) = fx
        .money(
            Who::A,
            &format!("/api/v1/subscribers/{a}/payments"),
            json!({ "amount": "25.00", "method": "cash" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(count(&fx, "payment_received"), 1);
    // A suspension, through a patch and through the bulk action.
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/subscribers/{a}"),
        json!({ "status": "suspended" }),
    )
    .await;
    assert_eq!(count(&fx, "suspended"), 1);
    fx.post_ok(
        Who::A,
        "/api/v1/subscribers/bulk",
        json!({ "action": "suspend", "ids": [a, a1] }),
    )
    .await;
    assert_eq!(count(&fx, "suspended"), 2, "only A1 changed");
    fx.post_ok(
        Who::A,
        "/api/v1/subscribers/bulk",
        json!({ "action": "reconnect", "ids": [a, a1] }),
    )
    .await;
    assert_eq!(count(&fx, "suspended"), 2);

    // Reminders: A reminds 5 days before. A's subscriber expires in 4 days, A1's in 6.
    let now = outpost_controller::db::now();
    fx.call(
        Who::A,
        axum::http::Method::PUT,
        "/api/v1/messaging/settings/2",
        Some(json!({ "reminder_days": 5, "per_minute": 60, "portal_url": null })),
    )
    .await;
    fx.state
        .db
        .write_blocking(|tx| {
            tx.execute(
                "UPDATE subscribers SET expires_at = ?2 WHERE id = ?1",
                rusqlite::params![a, now + 4 * 86_400],
            )?;
            tx.execute(
                "UPDATE subscribers SET expires_at = ?2 WHERE id = ?1",
                rusqlite::params![a1, now + 6 * 86_400],
            )?;
            Ok(())
        })
        .unwrap();
    outpost_controller::messaging::triggers::sweep_reminders(&fx.state).await;
    outpost_controller::messaging::triggers::sweep_reminders(&fx.state).await;
    assert_eq!(count(&fx, "expiry_reminder"), 1, "once, and only A's");
    let body: String = fx
        .state
        .db
        .write_blocking(|tx| {
            Ok(tx.query_row(
                "SELECT body FROM messages WHERE trigger = 'expiry_reminder'",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert!(body.contains("in 4 days"), "{body}");
    // A1 sets 7 days for itself: its subscriber is reminded on the next sweep.
    fx.call(
        Who::A1,
        axum::http::Method::PUT,
        "/api/v1/messaging/settings/3",
        Some(json!({ "reminder_days": 7, "per_minute": 60, "portal_url": null })),
    )
    .await;
    outpost_controller::messaging::triggers::sweep_reminders(&fx.state).await;
    assert_eq!(count(&fx, "expiry_reminder"), 2);

    // Expiry, through the sweep: one message per expiry, however often it runs.
    fx.state
        .db
        .write_blocking(|tx| {
            tx.execute(
                "UPDATE subscribers SET expires_at = ?2, auto_renew = 0 WHERE id = ?1",
                rusqlite::params![a, now - 60],
            )?;
            Ok(())
        })
        .unwrap();
    outpost_controller::jobs::sweep_expired(&fx.state)
        .await
        .unwrap();
    outpost_controller::jobs::sweep_expired(&fx.state)
        .await
        .unwrap();
    assert_eq!(count(&fx, "expired"), 1);
    // The renewal through the API.
    fx.money_ok(
        Who::A,
        &format!("/api/v1/subscribers/{a}/renew"),
        json!({ "periods": 1 }),
    )
    .await;
    assert_eq!(count(&fx, "renewed"), 1);
    let ob = outbox(&fx);
    drain_until(&fx, &ob, "everything sent", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status <> 'sent'") == 0
    })
    .await;
    assert_eq!(
        lp.taken("gateway") as i64,
        one(&fx, "SELECT count(*) FROM messages")
    );
}

/// A real SMTP server (Debian's python3-aiosmtpd) that saves what it receives in a
/// Maildir.
struct Smtp {
    _proc: outpost_testkit::process::Proc,
    port: u16,
    maildir: tempfile::TempDir,
}

fn smtp_server() -> Smtp {
    let python = std::path::Path::new("/usr/bin/python3");
    let ok = std::process::Command::new(python)
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the e-mail tests need Debian's python3-aiosmtpd: apt-get install python3-aiosmtpd"
    );
    let maildir = tempfile::tempdir().unwrap();
    let port = outpost_testkit::port::free_tcp_port();
    let proc = outpost_testkit::process::Proc(
        std::process::Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    outpost_testkit::process::until("aiosmtpd listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Smtp {
        _proc: proc,
        port,
        maildir,
    }
}

impl Smtp {
    fn mails(&self) -> Vec<String> {
        let dir = self.maildir.path().join("mail").join("new");
        let Ok(rd) = std::fs::read_dir(dir) else {
            return vec![];
        };
        rd.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn e_mail_goes_through_a_real_smtp_server() {
    let smtp = smtp_server();
    let fx = Fixture::new();
    fx.post_ok(
        Who::A,
        "/api/v1/messaging/providers",
        json!({ "channel": "email", "config": { "kind": "smtp", "host": "127.0.0.1", "port": smtp.port,
            "tls": "none", "from": "Reseller A <noc@a.example>" } }),
    )
    .await;
    fx.post_ok(
        Who::A,
        "/api/v1/messaging/templates",
        json!({ "trigger": "renewed", "channel": "email", "subject": "Renewed: {{plan}}",
            "body": "Dear {{name}}, renewed until {{expires_at}}." }),
    )
    .await;
    contacts(&fx, Who::A, fx.a.subscriber, "", "customer.a@example.net").await;
    let sub = fx.a.subscriber;
    fx.money_ok(
        Who::A,
        &format!("/api/v1/subscribers/{sub}/renew"),
        json!({ "periods": 1 }),
    )
    .await;
    let ob = outbox(&fx);
    drain_until(&fx, &ob, "the e-mail sent", |fx| {
        one(fx, "SELECT count(*) FROM messages WHERE status = 'sent'") == 1
    })
    .await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert!(m.contains("To: customer.a@example.net"), "{m}");
    assert!(m.contains("From: ") && m.contains("<noc@a.example>"), "{m}");
    assert!(m.contains("Subject: Renewed: "), "{m}");
    assert!(m.contains("Dear Customer a, renewed until 20"), "{m}");
    assert!(m.contains("Message-ID: <renewed."), "{m}");
    let log = fx.get_ok(Who::A, "/api/v1/messages").await;
    assert_eq!(log["items"][0]["channel"], "email");
    assert!(
        log["items"][0]["last_answer"]
            .as_str()
            .unwrap()
            .starts_with("250")
    );

    // A server that is gone is retried, not failed.
    let port = smtp.port;
    drop(smtp);
    fx.post_ok(
        Who::A,
        "/api/v1/messaging/providers",
        json!({ "channel": "email", "config": { "kind": "smtp", "host": "127.0.0.1", "port": port,
            "tls": "none", "from": "noc@a.example" } }),
    )
    .await;
    fire(&fx, Trigger::PaymentReceived, sub, "p1");
    ob.pass().await.unwrap();
    let (status, attempts): (String, i64) = fx
        .state
        .db
        .write_blocking(|tx| {
            Ok(tx.query_row(
                "SELECT status, attempts FROM messages WHERE trigger = 'payment_received'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .unwrap();
    assert_eq!((status.as_str(), attempts), ("queued", 1));
}
