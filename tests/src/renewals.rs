//! Renewals through the HTTP API against the raw SQLite rate of the same transaction
//! shape (update a balance, insert a ledger row), in one run.
//!
//! The HTTP side is the real controller (release build when run as a benchmark) on its
//! default SQLite settings, served on loopback, driven by N concurrent clients that each
//! renew their own subscriber with a fresh Idempotency-Key per call. A renewal
//! transaction does more than the raw shape — it checks the plan, moves the expiry,
//! writes the renewal, the audit entry (hash-chained) and the idempotency record — so
//! the ratio says what the API and the bookkeeping cost on top of SQLite.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::future::join_all;
use outpost_controller::billing::{self, AdjustmentKind, By};
use outpost_controller::config::Config;
use outpost_controller::db::plan::{self, NewPlan};
use outpost_controller::db::subscriber::{self, NewSubscriber};
use outpost_controller::db::tenant::{self, NewReseller};
use outpost_controller::db::{session, user};
use outpost_controller::scope::{OPERATOR_TENANT, PermSet, Scope, UserKind};
use serde_json::json;

/// The result of one HTTP run.
#[derive(Debug, Clone)]
pub struct HttpRun {
    pub clients: usize,
    pub renewals: usize,
    pub elapsed: Duration,
    /// Renewals the ledger holds afterwards (must equal `renewals`).
    pub ledger_rows: i64,
    /// The reseller's balance afterwards, minor units.
    pub balance: i64,
    /// Transactions the controller's writer committed the run's writes in.
    pub batches: u64,
    /// Writes the writer ran (the renewals).
    pub writes: u64,
}

impl HttpRun {
    pub fn per_second(&self) -> f64 {
        self.renewals as f64 / self.elapsed.as_secs_f64()
    }
}

/// Wholesale price per renewal in the benchmark, minor units.
pub const PRICE: i64 = 1_000;
/// The reseller's starting balance: enough for any run.
pub const START: i64 = 1_000_000_000;

/// A seeded controller: a reseller with a large balance, a plan on its card, a login
/// and `subscribers` subscribers on the reseller's retail plan.
pub struct Seeded {
    pub state: outpost_controller::AppState,
    pub token: String,
    pub subscribers: Vec<i64>,
    _dir: tempfile::TempDir,
}

/// Runs `clients` concurrent clients doing `per_client` renewals each through HTTP.
pub async fn http_renewals(clients: usize, per_client: usize) -> anyhow::Result<HttpRun> {
    let Seeded {
        state,
        token,
        subscribers: subs,
        _dir,
    } = seed(clients)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = outpost_controller::app(state.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let before = state.db.write_stats();
    let started = Instant::now();
    let workers = subs.iter().enumerate().map(|(c, sub)| {
        let client = client.clone();
        let url = format!("http://{addr}/api/v1/subscribers/{sub}/renew");
        let token = token.clone();
        async move {
            for i in 0..per_client {
                let resp = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("idempotency-key", format!("bench-{c}-{i}"))
                    .json(&json!({}))
                    .send()
                    .await
                    .context("request")?;
                if !resp.status().is_success() {
                    bail!(
                        "renewal answered {}: {}",
                        resp.status(),
                        resp.text().await.unwrap_or_default()
                    );
                }
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    for r in join_all(workers).await {
        r?;
    }
    let elapsed = started.elapsed();
    let after = state.db.write_stats();
    server.abort();
    let (ledger_rows, balance) = state
        .db
        .write_blocking(|tx| {
            Ok((
                tx.query_row(
                    "SELECT count(*) FROM ledger WHERE kind = 'renewal'",
                    [],
                    |r| r.get(0),
                )?,
                tx.query_row("SELECT balance FROM tenants WHERE id = 2", [], |r| r.get(0))?,
            ))
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(HttpRun {
        clients,
        renewals: clients * per_client,
        elapsed,
        ledger_rows,
        balance,
        batches: after.batches - before.batches,
        writes: after.writes - before.writes,
    })
}

/// The same renewal transaction called directly, without HTTP: how much of the HTTP
/// figure is the transaction itself.
pub fn direct_renewals(n: usize) -> anyhow::Result<RawRun> {
    let seeded = seed(1)?;
    let (state, sub) = (&seeded.state, seeded.subscribers[0]);
    let who = outpost_controller::bootstrap::system();
    let scope = Scope::Subtree {
        tenant_id: 2,
        path: "/1/2/".into(),
    };
    let started = Instant::now();
    for i in 0..n {
        let key = format!("direct-{i}");
        state
            .db
            .write_blocking(|tx| {
                let row = subscriber::get_visible(tx, &scope, sub)?;
                let by = By {
                    who: &who,
                    user_id: None,
                    scope: scope.clone(),
                    idempotency_key: Some(&key),
                };
                billing::renew(tx, &by, &row, None, 1, false, None, &state.currency)
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(RawRun {
        transactions: n,
        elapsed: started.elapsed(),
    })
}

/// Seeds a controller for the renewal runs (also used by `examples/renewal_probe.rs`).
pub fn seed(clients: usize) -> anyhow::Result<Seeded> {
    let dir = tempfile::tempdir()?;
    let cfg = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let state = outpost_controller::bootstrap::open(cfg)?;
    let cur = state.currency.clone();
    let who = outpost_controller::bootstrap::system();
    let token = outpost_controller::crypto::new_bearer("ops_");
    let tok = token.clone();
    let subs: Vec<i64> = state
        .db
        .write_blocking(|tx| {
            let root = tenant::get(tx, OPERATOR_TENANT)?.expect("root");
            let r = tenant::create(tx, &root, &NewReseller::named("Bench reseller", &root), 2)?;
            let new_plan = |owner: &tenant::Tenant, name: &str, parent: Option<i64>| NewPlan {
                name: name.into(),
                tenant_id: None,
                parent_plan_id: parent,
                download_kbps: 10_000,
                upload_kbps: 2_000,
                burst_download_kbps: None,
                burst_upload_kbps: None,
                validity_days: parent.is_none().then_some(30),
                validity_months: None,
                quota_mb: None,
                price: outpost_controller::money::NonNegativeAmount(cur.from_minor(
                    if owner.id == OPERATOR_TENANT {
                        2_000
                    } else {
                        2_500
                    },
                )),
                wan_tcp_ports: None,
            };
            let base = plan::create(tx, &root, &new_plan(&root, "base", None), &cur)?;
            plan::set_card(tx, &r, base.id, PRICE)?;
            let retail = plan::create(tx, &r, &new_plan(&r, "retail", Some(base.id)), &cur)?;
            let by = By::within(&who, &root);
            billing::add_balance(
                tx,
                &by,
                &r,
                START,
                AdjustmentKind::Adjustment,
                Some("bench"),
                &cur,
            )?;
            let u = user::insert(
                tx,
                &user::Insert {
                    tenant_id: r.id,
                    kind: UserKind::Reseller,
                    email: "bench@bench.test",
                    name: "Bench",
                    phone: "",
                    password_hash: "$argon2id$unused",
                    permissions: &PermSet::default(),
                    created_by: None,
                },
            )?;
            session::create(tx, &tok, u.id, None, "127.0.0.1", "bench", 86_400)?;
            let mut subs = Vec::new();
            for i in 0..clients {
                let s = subscriber::create(
                    tx,
                    &r,
                    &NewSubscriber {
                        plan_id: Some(retail.id),
                        ..NewSubscriber::named(format!("bench{i}"), "p")
                    },
                    &state.secrets,
                )?;
                subs.push(s.sub.id);
            }
            Ok(subs)
        })
        .map_err(|e| anyhow::anyhow!("seeding: {e}"))?;
    Ok(Seeded {
        state,
        token,
        subscribers: subs,
        _dir: dir,
    })
}

/// The result of one raw SQLite run.
#[derive(Debug, Clone)]
pub struct RawRun {
    pub transactions: usize,
    pub elapsed: Duration,
}

impl RawRun {
    pub fn per_second(&self) -> f64 {
        self.transactions as f64 / self.elapsed.as_secs_f64()
    }
}

/// `n` transactions of `BEGIN IMMEDIATE; UPDATE tenants SET balance; INSERT INTO
/// ledger; COMMIT` on the controller's own schema and connection settings (WAL,
/// synchronous=NORMAL), single-threaded: the ceiling for any writer of this shape.
pub fn raw_sqlite(n: usize) -> anyhow::Result<RawRun> {
    let dir = tempfile::tempdir()?;
    let mut conn = outpost_controller::db::open_and_migrate(&dir.path().join("raw.db"))?;
    conn.execute_batch(
        "INSERT INTO tenants (id, parent_id, path, depth, name, created_at, updated_at, balance)
             VALUES (2, 1, '/1/2/', 1, 'raw', 0, 0, 1000000000);
         INSERT INTO operations (id, kind, at) VALUES (1, 'bench', 0);",
    )?;
    let started = Instant::now();
    for i in 0..n {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Cached statements, as the controller uses: the baseline is SQLite at its best.
        tx.prepare_cached("UPDATE tenants SET balance = balance - ?1 WHERE id = 2")?
            .execute([PRICE])?;
        tx.prepare_cached(
            "INSERT INTO ledger (operation_id, tenant_id, account, kind, amount, balance_after, at)
             VALUES (1, 2, 'balance', 'renewal', ?1, ?2, 0)",
        )?
        .execute([-PRICE, START - PRICE * (i as i64 + 1)])?;
        tx.commit()?;
    }
    Ok(RawRun {
        transactions: n,
        elapsed: started.elapsed(),
    })
}
