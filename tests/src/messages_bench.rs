//! The outbox against a local provider: throughput (messages/s) and delivery latency
//! (enqueue → provider received), beside the provider's own rate with no outbox.
//!
//! No real SMS gateway is reachable from here, so the provider is a local HTTP server
//! on 127.0.0.1 speaking the generic gateway shape (JSON POST, `Idempotency-Key`
//! honoured), answering at once: the figures are the outbox's cost, not a provider's.
//!
//! - **Throughput**: `n` messages queued (one trigger each, as events enqueue them), then
//!   the worker started with its default configuration; the time until the provider
//!   received the last one. The peer, in the same run: the same `n` requests posted to
//!   the same server straight from a client with as many in flight as the worker sends
//!   at once (its batch) — the ceiling of any outbox on this server.
//! - **Latency**: the worker running; messages enqueued one per transaction (as events
//!   do) at a steady rate; for each, the provider's receipt time less the message's
//!   `created_at` (both this machine's clock, milliseconds).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use outpost_controller::config::Config;
use outpost_controller::db::messages::{self, MessagingSettings, NewProvider};
use outpost_controller::db::subscriber::{self, NewSubscriber};
use outpost_controller::db::tenant::{self, NewReseller};
use outpost_controller::messaging::outbox::{Outbox, WorkerConfig};
use outpost_controller::messaging::{Trigger, now_ms, triggers};
use outpost_controller::scope::OPERATOR_TENANT;
use serde_json::json;

/// The local provider: when it received each idempotency key (first time), and how
/// many requests came in all.
#[derive(Clone, Default)]
pub struct Gateway {
    received: Arc<Mutex<HashMap<String, i64>>>,
    requests: Arc<Mutex<u64>>,
}

impl Gateway {
    /// Serves it on 127.0.0.1:0; the URL messages are posted to.
    pub async fn start(&self) -> anyhow::Result<String> {
        async fn send(State(g): State<Gateway>, h: HeaderMap) -> axum::Json<serde_json::Value> {
            let at = now_ms();
            let key = h
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            *g.requests.lock().unwrap() += 1;
            let mut r = g.received.lock().unwrap();
            let n = r.len();
            r.entry(key).or_insert(at);
            axum::Json(json!({ "id": format!("gw-{n}") }))
        }
        let app = axum::Router::new()
            .route("/send", post(send))
            .with_state(self.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/send", l.local_addr()?);
        tokio::spawn(async move { axum::serve(l, app).await });
        Ok(url)
    }
    pub fn distinct(&self) -> usize {
        self.received.lock().unwrap().len()
    }
    pub fn requests(&self) -> u64 {
        *self.requests.lock().unwrap()
    }
}

/// A controller with one reseller sending through the gateway (rate limit at its
/// maximum) and `subscribers` subscribers with a phone.
pub struct Seeded {
    pub state: outpost_controller::AppState,
    pub subscribers: Vec<i64>,
    _dir: tempfile::TempDir,
}

pub fn seed(url: &str, subscribers: usize) -> anyhow::Result<Seeded> {
    let dir = tempfile::tempdir()?;
    let cfg = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let state = outpost_controller::bootstrap::open(cfg)?;
    let secrets = state.secrets.clone();
    let provider: NewProvider = serde_json::from_value(json!({
        "channel": "sms", "secret": "bench-key",
        "config": { "kind": "http", "url": url, "method": "POST", "body_type": "json",
            "headers": { "X-Api-Key": "{{secret}}" },
            "body": "{\"to\":\"{{to}}\",\"text\":\"{{text}}\"}", "honours_idempotency_key": true },
    }))?;
    let subs = state
        .db
        .write_blocking(|tx| {
            let root = tenant::get(tx, OPERATOR_TENANT)?.expect("root");
            let r = tenant::create(tx, &root, &NewReseller::named("Bench reseller", &root), 2)?;
            messages::put_provider(tx, &r, &provider, &secrets)?;
            messages::put_settings(
                tx,
                &r,
                &MessagingSettings {
                    reminder_days: 3,
                    per_minute: 100_000,
                    portal_url: Some("https://portal.bench.example".into()),
                },
            )?;
            let mut ids = Vec::with_capacity(subscribers);
            for i in 0..subscribers {
                let s = subscriber::create(
                    tx,
                    &r,
                    &NewSubscriber {
                        name: format!("Customer {i}"),
                        phone: format!("+1555{i:07}"),
                        ..NewSubscriber::named(format!("bench-{i}"), "ppp-secret".to_string())
                    },
                    &secrets,
                )?;
                ids.push(s.sub.id);
            }
            Ok(ids)
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Seeded {
        state,
        subscribers: subs,
        _dir: dir,
    })
}

/// Enqueues one payment message for each of `count` events, `per_tx` events a
/// transaction, starting at event number `from`.
fn enqueue(seeded: &Seeded, from: usize, count: usize, per_tx: usize) -> anyhow::Result<()> {
    let subs = &seeded.subscribers;
    let mut i = from;
    while i < from + count {
        let end = (i + per_tx).min(from + count);
        let n = seeded
            .state
            .db
            .write_blocking(|tx| {
                let mut n = 0;
                for e in i..end {
                    n += triggers::fire(
                        tx,
                        Trigger::PaymentReceived,
                        subs[e % subs.len()],
                        &format!("bench-{e}"),
                        Some("10.00"),
                        None,
                    )?;
                }
                Ok(n)
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if n != end - i {
            bail!("enqueued {n} of {}", end - i);
        }
        i = end;
    }
    Ok(())
}

async fn wait_for(gw: &Gateway, n: usize, deadline: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while gw.distinct() < n {
        if start.elapsed() > deadline {
            bail!("the provider received {} of {n} messages", gw.distinct());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// One throughput run's result.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub messages: usize,
    pub elapsed: Duration,
    /// Requests the provider got (a retry would make it more than `messages`).
    pub requests: u64,
    /// Messages the log shows `sent`.
    pub sent: i64,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// `n` messages queued, then the worker (default configuration) started: the time
/// until the provider has them all.
pub async fn outbox_throughput(n: usize) -> anyhow::Result<Throughput> {
    let gw = Gateway::default();
    let url = gw.start().await?;
    let seeded = seed(&url, 100.min(n))?;
    enqueue(&seeded, 0, n, 500)?;
    let started = Instant::now();
    let worker = tokio::spawn(
        Outbox::new(
            seeded.state.db.clone(),
            seeded.state.secrets.clone(),
            WorkerConfig {
                // The local gateway is on loopback.
                allow_private_destinations: true,
                ..WorkerConfig::default()
            },
        )
        .run(),
    );
    wait_for(&gw, n, Duration::from_secs(600)).await?;
    let elapsed = started.elapsed();
    // The last marks land just after the last receipt.
    let sent = loop {
        let sent = sent(&seeded)?;
        if sent as usize >= n || started.elapsed() > elapsed + Duration::from_secs(30) {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    worker.abort();
    Ok(Throughput {
        messages: n,
        elapsed,
        requests: gw.requests(),
        sent,
    })
}

fn sent(seeded: &Seeded) -> anyhow::Result<i64> {
    seeded
        .state
        .db
        .write_blocking(|tx| {
            Ok(tx.query_row(
                "SELECT count(*) FROM messages WHERE status = 'sent'",
                [],
                |r| r.get(0),
            )?)
        })
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The peer: `n` posts of the same shape straight to the same server, `in_flight` at a
/// time (the worker's batch), from one client.
pub async fn direct_throughput(n: usize, in_flight: usize) -> anyhow::Result<Throughput> {
    let gw = Gateway::default();
    let url = gw.start().await?;
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let r = client
                    .post(&url)
                    .header("idempotency-key", format!("direct-{i}"))
                    .header("x-api-key", "bench-key")
                    .json(&json!({ "to": "+15550000000", "text": "Dear Customer, we received your payment of 10.00 for bench-0. Thank you - Bench reseller" }))
                    .send()
                    .await
                    .context("post")?;
                if !r.status().is_success() {
                    bail!("answered {}", r.status());
                }
                r.bytes().await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(Throughput {
        messages: n,
        elapsed: started.elapsed(),
        requests: gw.requests(),
        sent: gw.distinct() as i64,
    })
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    pub messages: usize,
    pub rate: f64,
    pub p50: i64,
    pub p99: i64,
    pub max: i64,
}

/// The worker running; `n` messages enqueued one per transaction at `per_second`;
/// each one's enqueue → received.
pub async fn latency(n: usize, per_second: f64) -> anyhow::Result<Latency> {
    let gw = Gateway::default();
    let url = gw.start().await?;
    let seeded = Arc::new(seed(&url, 100.min(n))?);
    let worker = tokio::spawn(
        Outbox::new(
            seeded.state.db.clone(),
            seeded.state.secrets.clone(),
            WorkerConfig {
                // The local gateway is on loopback.
                allow_private_destinations: true,
                ..WorkerConfig::default()
            },
        )
        .run(),
    );
    let gap = Duration::from_secs_f64(1.0 / per_second);
    let mut tick = tokio::time::interval(gap);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..n {
        tick.tick().await;
        let s = seeded.clone();
        tokio::task::spawn_blocking(move || enqueue(&s, i, 1, 1)).await??;
    }
    wait_for(&gw, n, Duration::from_secs(120)).await?;
    worker.abort();
    let created: HashMap<String, i64> = seeded
        .state
        .db
        .write_blocking(|tx| {
            let mut stmt = tx.prepare("SELECT idempotency_key, created_at FROM messages")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let received = gw.received.lock().unwrap().clone();
    let mut lat: Vec<i64> = created
        .iter()
        .map(|(k, c)| {
            received
                .get(k)
                .map(|r| r - c)
                .context("a message never arrived")
        })
        .collect::<anyhow::Result<_>>()?;
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    Ok(Latency {
        messages: lat.len(),
        rate: per_second,
        p50: pct(0.50),
        p99: pct(0.99),
        max: *lat.last().unwrap(),
    })
}
