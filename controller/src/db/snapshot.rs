//! Subscribers by status over time: a daily count per owning tenant and status
//! (`subscriber_status_days`), taken by the sweep loop ([`crate::jobs`]) and read by the
//! reports through the actor's scope, like the subscribers it counts.

use rusqlite::{Connection, params};

use crate::db::Cached;
use crate::error::{Error, Result};
use crate::scope::Scope;

/// `YYYY-MM-DD` (UTC) of a unix time.
pub fn day_of(unix: i64) -> Result<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| t.date().to_string())
        .map_err(|e| Error::internal(&e))
}

/// Takes `day`'s counts: every tenant's subscribers by status as they are now, replacing
/// whatever that day held (so taking it again the same day changes nothing but what
/// changed since). Returns the number of rows the day now holds.
pub fn take(conn: &Connection, day: &str) -> Result<usize> {
    conn.cached_exec("DELETE FROM subscriber_status_days WHERE day = ?1", [day])?;
    Ok(conn.cached_exec(
        "INSERT INTO subscriber_status_days (day, tenant_id, status, count)
         SELECT ?1, tenant_id, status, count(*) FROM subscribers GROUP BY tenant_id, status",
        [day],
    )?)
}

/// One day of the history: the subscribers of the scope by status on that day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusDay {
    pub day: String,
    pub counts: Vec<(String, i64)>,
}

impl StatusDay {
    /// The count of `status` that day (0 when it had none).
    pub fn count(&self, status: &str) -> i64 {
        self.counts
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n)
    }
}

/// The days from `since` (a `YYYY-MM-DD`) on that have a snapshot, oldest first, each
/// summed over the tenants the scope owns rows of.
pub fn history(conn: &Connection, scope: &Scope, since: &str) -> Result<Vec<StatusDay>> {
    let (pred, p) = scope.owns("d.tenant_id");
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT d.day, d.status, sum(d.count) FROM subscriber_status_days d
         WHERE {pred} AND d.day >= ? GROUP BY d.day, d.status ORDER BY d.day, d.status"
    ))?;
    let rows = stmt.query_map(params![p, since], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out: Vec<StatusDay> = Vec::new();
    for row in rows {
        let (day, status, n) = row?;
        match out.last_mut() {
            Some(last) if last.day == day => last.counts.push((status, n)),
            _ => out.push(StatusDay {
                day,
                counts: vec![(status, n)],
            }),
        }
    }
    Ok(out)
}
