//! The outbox: events journaled durably with sequence numbers, bounded, shipped in
//! order and pruned once the controller stored them.

use std::sync::atomic::Ordering;

use outpost_protocol as proto;
use rusqlite::params;

use super::{Result, Store, StoreError, get_meta, set_meta};
use crate::clock::now;

impl Store {
    /// Appends an event to the outbox inside `tx`, enforcing the bound.
    pub(super) fn append(
        &self,
        tx: &rusqlite::Transaction<'_>,
        body: &proto::EventBody,
    ) -> Result<u64> {
        let accounting = matches!(
            body,
            proto::EventBody::Accounting(_) | proto::EventBody::NasSessionsClosed { .. }
        );
        let backlog = self.backlog();
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
        let seq: i64 = tx.query_row("SELECT coalesce(max(seq), 0) + 1 FROM outbox", [], |r| {
            r.get(0)
        })?;
        tx.prepare_cached("INSERT INTO outbox (seq, at, body) VALUES (?1, ?2, ?3)")?
            .execute(params![seq, now(), serde_json::to_string(body)?])?;
        Ok(seq as u64)
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

    /// The oldest unshipped events, up to `max`.
    pub fn outbox_batch(&self, max: usize) -> Result<Vec<proto::Event>> {
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
