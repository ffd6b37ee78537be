//! The outbox: events journaled durably with sequence numbers, bounded, shipped in
//! order and pruned once the controller stored them.

use std::sync::atomic::Ordering;

use outpost_protocol as proto;
use rusqlite::params;

use super::{Result, Store, StoreError, get_meta, set_meta};
use crate::clock::now;

/// Rejects waiting for [`Store::flush_deferred`] at most; past it a reject is dropped
/// and counted, like a non-accounting event in a full outbox. At 10k bad passwords a
/// second and a flush every 200 ms this holds five times what arrives in between.
pub const MAX_DEFERRED: usize = 10_000;

impl Store {
    /// Appends an event to the outbox inside `tx`, enforcing the bound.
    pub(super) fn append(
        &self,
        tx: &rusqlite::Transaction<'_>,
        body: &proto::EventBody,
    ) -> Result<u64> {
        self.append_at(tx, now(), body, 0)
    }

    /// [`Store::append`] for an event that happened at `at`, with `ahead` events
    /// appended earlier in the same transaction (not yet in the backlog, but counting
    /// against the bound).
    pub(super) fn append_at(
        &self,
        tx: &rusqlite::Transaction<'_>,
        at: i64,
        body: &proto::EventBody,
        ahead: u64,
    ) -> Result<u64> {
        let accounting = matches!(
            body,
            proto::EventBody::Accounting(_) | proto::EventBody::NasSessionsClosed { .. }
        );
        let backlog = self.backlog() + ahead;
        if backlog >= self.max_outbox {
            if !accounting {
                self.dropped_events.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(backlog, "outbox full: dropping a non-accounting event");
                return Ok(0);
            }
            tracing::error!(
                backlog,
                "outbox full: refusing accounting so the NAS keeps it and retries"
            );
            return Err(StoreError::OutboxFull(backlog));
        }
        // Cached like every statement of the accounting path: a group commit runs these
        // for each record, and parsing the SQL anew showed in its profile.
        let seq: i64 = tx
            .prepare_cached("SELECT coalesce(max(seq), 0) + 1 FROM outbox")?
            .query_row([], |r| r.get(0))?;
        tx.prepare_cached("INSERT INTO outbox (seq, at, body) VALUES (?1, ?2, ?3)")?
            .execute(params![seq, at, serde_json::to_string(body)?])?;
        Ok(seq as u64)
    }

    /// Keeps an event that may wait (a reject) for the next [`Store::flush_deferred`]:
    /// the thread answering the NAS neither waits for the disk nor for the store's lock,
    /// so a flood of bad passwords cannot slow valid logins down. The price: rejects of
    /// the last flush interval are lost if the agent dies.
    pub(super) fn defer(&self, body: proto::EventBody) {
        let mut deferred = self.deferred.lock().unwrap_or_else(|p| p.into_inner());
        if deferred.len() >= MAX_DEFERRED {
            drop(deferred);
            self.dropped_events.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("deferred rejects at their bound: dropping one");
            return;
        }
        deferred.push((now(), body));
        self.deferred_count.fetch_add(1, Ordering::AcqRel);
    }

    /// Journals every deferred event in one transaction (one fsync), each with the time
    /// it happened; returns how many. On failure they stay deferred for the next try.
    pub fn flush_deferred(&self) -> Result<usize> {
        let pending = std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|p| p.into_inner()));
        if pending.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn();
        let mut write = || -> Result<u64> {
            let tx = conn.transaction()?;
            let mut appended = 0;
            for (at, body) in &pending {
                if self.append_at(&tx, *at, body, appended)? > 0 {
                    appended += 1;
                }
            }
            tx.commit()?;
            Ok(appended)
        };
        match write() {
            Ok(appended) => {
                // Into the backlog before out of the deferred count: a reader may count
                // one twice for a moment, never miss it.
                self.backlog.fetch_add(appended, Ordering::AcqRel);
                self.deferred_count
                    .fetch_sub(pending.len() as u64, Ordering::AcqRel);
                Ok(pending.len())
            }
            Err(e) => {
                let mut deferred = self.deferred.lock().unwrap_or_else(|p| p.into_inner());
                let newer = std::mem::replace(&mut *deferred, pending);
                deferred.extend(newer);
                let over = deferred.len().saturating_sub(MAX_DEFERRED);
                deferred.truncate(MAX_DEFERRED);
                drop(deferred);
                self.deferred_count.fetch_sub(over as u64, Ordering::AcqRel);
                self.dropped_events
                    .fetch_add(over as u64, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// How many events wait for [`Store::flush_deferred`].
    pub fn deferred(&self) -> usize {
        self.deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Journals one event durably (its own transaction).
    pub fn journal(&self, body: &proto::EventBody) -> Result<u64> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let seq = self.append(&tx, body)?;
        tx.commit()?;
        if seq > 0 {
            self.backlog.fetch_add(1, Ordering::AcqRel);
        }
        Ok(seq)
    }

    /// The oldest unshipped events, up to `max` (deferred ones journaled first).
    pub fn outbox_batch(&self, max: usize) -> Result<Vec<proto::Event>> {
        self.flush_deferred()?;
        let conn = self.conn();
        let shipped: i64 = get_meta(&conn, "shipped_through")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, body FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![shipped, max as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, at, body) = row?;
            out.push(proto::Event {
                seq: seq as u64,
                at,
                body: serde_json::from_str(&body)?,
            });
        }
        Ok(out)
    }

    /// Records that the controller stored everything up to `through`, and prunes it.
    pub fn mark_shipped(&self, through: u64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let before: u64 = get_meta(&tx, "shipped_through")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if through > before {
            set_meta(&tx, "shipped_through", &through.to_string())?;
            tx.execute(
                "DELETE FROM outbox WHERE seq <= ?1 AND seq < (SELECT max(seq) FROM outbox)",
                [through as i64],
            )?;
        }
        tx.commit()?;
        let left: i64 = conn.query_row(
            "SELECT count(*) FROM outbox WHERE seq > ?1",
            [through.max(before) as i64],
            |r| r.get(0),
        )?;
        self.backlog.store(left as u64, Ordering::Release);
        Ok(())
    }
}
