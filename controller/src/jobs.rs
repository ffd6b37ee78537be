//! Background jobs the server runs for as long as it serves: the expiry sweep (followed
//! by the day's subscribers-by-status snapshot) and the retention sweep, each one pass
//! callable on its own (for tests) and one loop.

use crate::bootstrap::system;
use crate::http::AppState;

/// One pass of the expiry sweep: every active subscriber past its expiry is renewed
/// automatically (if it opted in and the balance allows) or marked expired. Each
/// subscriber is its own transaction.
pub async fn sweep_expired(
    state: &AppState,
) -> Result<Vec<(i64, crate::billing::Swept)>, crate::error::Error> {
    let now = crate::db::now();
    let mut out = Vec::new();
    loop {
        let due = state
            .db
            .read(move |c| crate::billing::due(c, now, 500))
            .await?;
        if due.is_empty() {
            return Ok(out);
        }
        let batch = due.len();
        for id in due {
            let cur = state.currency.clone();
            let swept = state
                .db
                .write(move |tx| crate::billing::sweep_one(tx, &system(), id, now, &cur))
                .await?;
            tracing::info!(subscriber = id, outcome = ?swept, "expiry sweep");
            out.push((id, swept));
        }
        if batch < 500 {
            return Ok(out);
        }
    }
}

/// A ticker for a sweep that runs every `secs`; a slow pass delays the next one
/// instead of letting ticks pile up.
fn every(secs: u64) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Takes today's subscribers-by-status snapshot ([`crate::db::snapshot::take`]), one
/// short write. Taking it again the same day replaces the day's rows, so running it after
/// every sweep keeps the day's last count; returns how many rows the day holds.
pub async fn snapshot_statuses(state: &AppState) -> Result<usize, crate::error::Error> {
    let day = crate::db::snapshot::day_of(crate::db::now())?;
    state
        .db
        .write(move |tx| crate::db::snapshot::take(tx, &day))
        .await
}

/// Runs [`sweep_expired`] every `billing.sweep_interval_secs`, for as long as the server
/// runs, and after each pass [`snapshot_statuses`] (the sweep is what moves subscribers
/// to expired, so the day's counts are taken after it).
pub async fn sweep_loop(state: AppState) {
    let mut tick = every(state.config.billing.sweep_interval_secs);
    loop {
        tick.tick().await;
        if let Err(e) = sweep_expired(&state).await {
            tracing::error!(error = %e, "expiry sweep failed; retrying next interval");
        }
        if let Err(e) = snapshot_statuses(&state).await {
            tracing::error!(error = %e, "status snapshot failed; retrying next interval");
        }
        crate::messaging::triggers::sweep_reminders(&state).await;
    }
}

/// One retention pass: each kind pruned in chunks, each chunk its own short write, until
/// a chunk comes back short.
pub async fn sweep_retention(
    state: &AppState,
) -> crate::error::Result<crate::db::retention::Pruned> {
    use crate::db::retention::{self, CHUNK, Pruned};
    /// Runs one pruning statement until a chunk comes back short; the total removed.
    async fn drain(
        state: &AppState,
        prune: impl Fn(&rusqlite::Connection) -> crate::error::Result<usize> + Clone + Send + 'static,
    ) -> crate::error::Result<usize> {
        let mut total = 0;
        loop {
            let prune = prune.clone();
            let n = state.db.write(move |tx| prune(tx)).await?;
            total += n;
            if n < CHUNK {
                return Ok(total);
            }
        }
    }
    let cfg = state.config.retention.clone();
    let c = cfg.clone();
    let auth = state.config.auth.clone();
    Ok(Pruned {
        idempotency: drain(state, move |tx| {
            retention::idempotency(tx, crate::db::now(), &c)
        })
        .await?,
        agent_events: drain(state, move |tx| {
            retention::agent_events(tx, crate::db::now(), &cfg)
        })
        .await?,
        feed: drain(state, retention::feed).await?,
        logins: drain(state, move |tx| {
            crate::db::throttle::prune(tx, &auth, crate::db::now(), CHUNK)
        })
        .await?,
    })
}

/// Runs [`sweep_retention`] every `retention.sweep_interval_secs`.
pub async fn retention_loop(state: AppState) {
    let mut tick = every(state.config.retention.sweep_interval_secs);
    loop {
        tick.tick().await;
        match sweep_retention(&state).await {
            Ok(p) if p != Default::default() => tracing::info!(
                idempotency = p.idempotency,
                agent_events = p.agent_events,
                feed = p.feed,
                "retention sweep pruned"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention sweep failed; retrying next interval"),
        }
    }
}
