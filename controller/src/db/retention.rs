//! Pruning what only serves retries and replays, so a controller that runs for years
//! does not grow without bound: stored idempotent answers, raw agent events whose
//! effects are stored, and superseded rows of the agents' change feed. The ledger, the
//! audit log, renewals and usage are never touched.

use rusqlite::{Connection, params};

use crate::config::RetentionConfig;
use crate::error::Result;

/// Rows removed by one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub idempotency: usize,
    pub agent_events: usize,
    pub feed: usize,
    /// Failed-login counters and known login addresses (see `db::throttle`).
    pub logins: usize,
}

/// Deletes at most this many rows per statement, so the single writer is never held
/// for long; the sweep repeats until a pass finds less.
pub const CHUNK: usize = 5_000;

/// Stored answers older than the window (one chunk).
pub fn idempotency(conn: &Connection, now: i64, cfg: &RetentionConfig) -> Result<usize> {
    let before = now - (cfg.idempotency_hours as i64) * 3600;
    delete_chunk(conn, "idempotency", "user_id, key", "created_at", before)
}

/// Deletes one chunk of `table`'s rows (named by their `key` columns) whose `at`
/// column is before `before`.
fn delete_chunk(conn: &Connection, table: &str, key: &str, at: &str, before: i64) -> Result<usize> {
    Ok(conn.execute(
        &format!(
            "DELETE FROM {table} WHERE ({key}) IN
                 (SELECT {key} FROM {table} WHERE {at} < ?1 LIMIT ?2)"
        ),
        params![before, CHUNK as i64],
    )?)
}

/// Agent events received before the window, and the counters of sessions not heard of
/// since (one chunk of each). Their effects (online sessions, daily usage) are kept
/// elsewhere; an agent never redelivers an event it had acknowledged, and no NAS
/// resends a record that old, so neither deduplication needs them.
pub fn agent_events(conn: &Connection, now: i64, cfg: &RetentionConfig) -> Result<usize> {
    let before = now - (cfg.agent_events_days as i64) * 86_400;
    let events = delete_chunk(conn, "agent_events", "agent_id, seq", "received_at", before)?;
    let key = "site_id, nas_ip, session_id";
    Ok(events + delete_chunk(conn, "session_counters", key, "updated_at", before)?)
}

/// Feed rows superseded by a newer row for the same site and entity (one chunk).
///
/// Always safe, whatever revision an agent holds: a delta sends each changed entity at
/// its current state, so only the newest row per entity decides whether an agent past
/// `since` hears of it, and that row stays. The feed's head (the site's newest row)
/// is never superseded.
pub fn feed(conn: &Connection) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM site_changes WHERE revision IN (
             SELECT old.revision FROM site_changes old
             WHERE EXISTS (SELECT 1 FROM site_changes n
                           WHERE n.site_id = old.site_id AND n.entity = old.entity
                             AND n.entity_id = old.entity_id AND n.revision > old.revision)
             LIMIT ?1)",
        [CHUNK as i64],
    )?)
}
