//! The WAN checks' state per (subscriber, probe), written in the same transaction as
//! the transitions it caused, so a restart neither loses nor repeats one.

use std::sync::atomic::Ordering;

use outpost_protocol as proto;
use rusqlite::params;

use super::{Result, Store};

/// One stored row: subscriber id, probe (JSON), state (JSON).
pub type WanRow = (i64, String, String);

impl Store {
    /// Every stored WAN-check row.
    pub fn wan_targets(&self) -> Result<Vec<WanRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT subscriber_id, probe, state FROM wan_targets")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// In one transaction: rewrites `upserts`, deletes `removed` (subscriber id, probe)
    /// and journals `events`. Returns the events' sequence numbers (0: dropped, the
    /// outbox being full).
    pub fn wan_commit(
        &self,
        upserts: &[WanRow],
        removed: &[(i64, String)],
        events: &[proto::EventBody],
    ) -> Result<Vec<u64>> {
        if upserts.is_empty() && removed.is_empty() && events.is_empty() {
            return Ok(vec![]);
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO wan_targets (subscriber_id, probe, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (subscriber_id, probe) DO UPDATE SET state = excluded.state",
            )?;
            for (id, probe, state) in upserts {
                up.execute(params![id, probe, state])?;
            }
            let mut del = tx.prepare_cached(
                "DELETE FROM wan_targets WHERE subscriber_id = ?1 AND probe = ?2",
            )?;
            for (id, probe) in removed {
                del.execute(params![id, probe])?;
            }
        }
        let mut seqs = Vec::with_capacity(events.len());
        for e in events {
            seqs.push(self.append(&tx, e)?);
        }
        tx.commit()?;
        let journaled = seqs.iter().filter(|s| **s > 0).count() as u64;
        self.backlog.fetch_add(journaled, Ordering::AcqRel);
        Ok(seqs)
    }
}
