//! What agents ship back: each journaled event stored once, accounting turned into
//! online sessions and usage per day, and the site's event list people read.

use outpost_protocol as proto;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::Cached;
use crate::db::agent::AgentIdentity;
use crate::db::row::stored_row;
use crate::error::{Error, Result};

/// Stores a batch; each (agent, seq) once. Accounting updates sessions and usage only
/// the first time its record is stored, so a redelivered batch counts nothing twice.
pub fn ingest(
    conn: &Connection,
    who: AgentIdentity,
    batch: &proto::EventBatch,
) -> Result<proto::EventsAccepted> {
    if batch.events.is_empty() || batch.events.len() > proto::MAX_BATCH {
        return Err(Error::invalid(format!(
            "a batch holds 1 to {} events",
            proto::MAX_BATCH
        )));
    }
    let now = crate::db::now();
    let mut through = 0u64;
    // Every counter is stored as SQLite's i64: one past it is refused, not wrapped.
    for (i, e) in batch.events.iter().enumerate() {
        let counters: Vec<(&str, u64)> = match &e.body {
            proto::EventBody::Accounting(a) => vec![
                ("session_time", a.session_time),
                ("input_octets", a.input_octets),
                ("output_octets", a.output_octets),
            ],
            proto::EventBody::WanCheck(t) => vec![
                ("sent", t.sent),
                ("lost", t.lost),
                ("rtt_us", t.rtt_us.unwrap_or(0)),
            ],
            _ => vec![],
        };
        if let Some((field, _)) = counters.iter().find(|(_, v)| *v > i64::MAX as u64) {
            return Err(Error::invalid(format!(
                "events[{i}].{field} is larger than {}",
                i64::MAX
            )));
        }
    }
    for e in &batch.events {
        if e.seq == 0 || e.seq > i64::MAX as u64 {
            return Err(Error::invalid("event seq must be 1 or more"));
        }
        let kind = match &e.body {
            proto::EventBody::Accounting(_) => "accounting",
            proto::EventBody::AuthReject { .. } => "auth_reject",
            proto::EventBody::NasSessionsClosed { .. } => "nas_sessions_closed",
            proto::EventBody::Coa(_) => "coa",
            proto::EventBody::WanCheck(_) => "wan_check",
        };
        let inserted = conn.cached_exec(
            "INSERT OR IGNORE INTO agent_events (agent_id, seq, site_id, at, type, body, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                who.agent_id,
                e.seq as i64,
                who.site_id,
                e.at,
                kind,
                serde_json::to_string(&e.body).expect("events serialize"),
                now
            ],
        )?;
        if inserted == 1 {
            apply(conn, who.site_id, e)?;
        }
        through = through.max(e.seq);
    }
    Ok(proto::EventsAccepted { through })
}

fn apply(conn: &Connection, site_id: i64, e: &proto::Event) -> Result<()> {
    match &e.body {
        proto::EventBody::Accounting(a) => accounting(conn, site_id, e.at, a)?,
        proto::EventBody::NasSessionsClosed { nas_ip, .. } => {
            // A restarted NAS lost its sessions and its queue of records with them, and
            // numbers its sessions anew (RouterOS from the same start): whatever comes
            // under one of the old ids from now on is a new session.
            conn.cached_exec(
                "DELETE FROM session_counters WHERE site_id = ?1 AND nas_ip = ?2",
                params![site_id, nas_ip],
            )?;
            conn.cached_exec(
                "DELETE FROM online_sessions WHERE site_id = ?1 AND nas_ip = ?2",
                params![site_id, nas_ip],
            )?;
        }
        proto::EventBody::WanCheck(t) => crate::db::wan::apply(conn, site_id, e.at, t)?,
        proto::EventBody::AuthReject { .. } | proto::EventBody::Coa(_) => {}
    }
    Ok(())
}

stored_row! {
    /// What a session's counted record says about a new one.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Counted in COUNTED_COLS, read by counted {
        event_at: i64 = "event_at",
        session_time: i64 = "session_time",
        input: i64 = "input_octets",
        output: i64 = "output_octets",
        ended: bool = "ended",
    }
}

/// How a record relates to what its session has counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The first record of the session (or of a new session under a reused id).
    New,
    /// Newer than what was counted: its counters' growth is new traffic.
    Newer,
    /// A resend, or older than what was counted: changes nothing.
    Stale,
}

/// Orders `record` (event time `at`) against the session's counted record. A session's
/// usage is its latest counters, so only a newer record can add traffic:
/// - older by event time, or by Acct-Session-Time (which never goes back within a
///   session), is stale;
/// - the same event time with lower counters is an earlier record resent, stale too;
/// - a Start newer than an ended session is a new session under a reused id.
fn verdict(prev: Option<Counted>, status: proto::AcctStatus, at: i64, rec: &Counted) -> Verdict {
    let Some(p) = prev else {
        return Verdict::New;
    };
    if p.ended && status == proto::AcctStatus::Start && at > p.event_at {
        return Verdict::New;
    }
    let lower = rec.input < p.input || rec.output < p.output;
    if at < p.event_at || rec.session_time < p.session_time || (at == p.event_at && lower) {
        return Verdict::Stale;
    }
    Verdict::Newer
}

/// One accounting record: traffic into `usage_daily` once, by the day its event
/// happened; the session on or off line. See [`verdict`] for what counts.
fn accounting(conn: &Connection, site_id: i64, received: i64, a: &proto::Accounting) -> Result<()> {
    let at = a.event_time.unwrap_or(received);
    let rec = Counted {
        event_at: at,
        session_time: a.session_time as i64,
        input: a.input_octets as i64,
        output: a.output_octets as i64,
        ended: a.status == proto::AcctStatus::Stop,
    };
    let prev: Option<Counted> = conn
        .cached_row(
            &format!(
                "SELECT {COUNTED_COLS} FROM session_counters
                 WHERE site_id = ?1 AND nas_ip = ?2 AND session_id = ?3"
            ),
            params![site_id, a.nas_ip, a.session_id],
            counted,
        )
        .optional()?;
    let v = verdict(prev, a.status, at, &rec);
    let (din, dout) = match (v, prev) {
        (Verdict::Stale, _) => return Ok(()),
        (Verdict::New, _) | (Verdict::Newer, None) => (rec.input, rec.output),
        // Counters only grow within a session; a smaller value is a NAS restart of the
        // counter (or a 32-bit wrap without Gigawords), so the whole new value is new.
        (Verdict::Newer, Some(p)) => {
            let delta = |now: i64, before: i64| if now >= before { now - before } else { now };
            (delta(rec.input, p.input), delta(rec.output, p.output))
        }
    };
    let new_session = v == Verdict::New;
    // A late record of an ended session counts its traffic but does not put it back
    // online.
    let online = !rec.ended && (new_session || prev.is_none_or(|p| !p.ended));
    conn.cached_exec(
        "INSERT INTO session_counters (site_id, nas_ip, session_id, event_at, session_time, input_octets,
             output_octets, ended, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (site_id, nas_ip, session_id) DO UPDATE SET event_at = excluded.event_at,
             session_time = excluded.session_time, input_octets = excluded.input_octets,
             output_octets = excluded.output_octets, ended = CASE WHEN ?10 THEN excluded.ended
             ELSE max(ended, excluded.ended) END, updated_at = excluded.updated_at",
        params![
            site_id,
            a.nas_ip,
            a.session_id,
            at,
            rec.session_time,
            rec.input,
            rec.output,
            rec.ended,
            crate::db::now(),
            new_session
        ],
    )?;
    let subscriber: Option<i64> = conn
        .cached_row(
            "SELECT id FROM subscribers WHERE username = ?1",
            [&a.username],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(sid) = subscriber
        && (din > 0 || dout > 0)
    {
        let day = time::OffsetDateTime::from_unix_timestamp(at)
            .map(|t| t.date().to_string())
            .unwrap_or_else(|_| "1970-01-01".into());
        conn.cached_exec(
            "INSERT INTO usage_daily (subscriber_id, day, input_octets, output_octets) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (subscriber_id, day) DO UPDATE SET
                 input_octets = CASE WHEN input_octets > 9223372036854775807 - excluded.input_octets
                     THEN 9223372036854775807 ELSE input_octets + excluded.input_octets END,
                 output_octets = CASE WHEN output_octets > 9223372036854775807 - excluded.output_octets
                     THEN 9223372036854775807 ELSE output_octets + excluded.output_octets END",
            params![sid, day, din, dout],
        )?;
    }
    if rec.ended {
        conn.cached_exec(
            "DELETE FROM online_sessions WHERE site_id = ?1 AND nas_ip = ?2 AND session_id = ?3",
            params![site_id, a.nas_ip, a.session_id],
        )?;
    } else if online {
        conn.cached_exec(
            "INSERT INTO online_sessions (site_id, nas_ip, session_id, username, subscriber_id, framed_ip,
                 calling_station_id, started_at, updated_at, session_time, input_octets, output_octets)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (site_id, nas_ip, session_id) DO UPDATE SET framed_ip = coalesce(excluded.framed_ip, framed_ip),
                 updated_at = excluded.updated_at, session_time = excluded.session_time,
                 input_octets = excluded.input_octets, output_octets = excluded.output_octets",
            params![
                site_id,
                a.nas_ip,
                a.session_id,
                a.username,
                subscriber,
                a.framed_ip,
                a.calling_station_id,
                at.saturating_sub(rec.session_time),
                at,
                rec.session_time,
                rec.input,
                rec.output
            ],
        )?;
    }
    Ok(())
}

stored_row! {
    /// An online session as the API shows it.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct OnlineSession in SESSION_COLS, read by online_session {
        pub site_id: i64 = "site_id",
        pub nas_ip: String = "nas_ip",
        pub session_id: String = "session_id",
        pub username: String = "username",
        pub framed_ip: Option<String> = "framed_ip",
        pub calling_station_id: Option<String> = "calling_station_id",
        pub started_at: String = "started_at" => crate::db::rfc3339,
        pub updated_at: String = "updated_at" => crate::db::rfc3339,
        pub session_time: i64 = "session_time",
        pub input_octets: i64 = "input_octets",
        pub output_octets: i64 = "output_octets",
    }
}

pub fn sessions_of(conn: &Connection, subscriber_id: i64) -> Result<Vec<OnlineSession>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SESSION_COLS} FROM online_sessions WHERE subscriber_id = ?1 ORDER BY started_at"
    ))?;
    let rows = stmt.query_map([subscriber_id], online_session)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Traffic of one UTC day.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageDay {
    pub day: String,
    /// Bytes from the subscriber.
    pub input_octets: i64,
    /// Bytes to the subscriber.
    pub output_octets: i64,
}

fn usage_day(r: &rusqlite::Row<'_>) -> rusqlite::Result<UsageDay> {
    Ok(UsageDay {
        day: r.get(0)?,
        input_octets: r.get(1)?,
        output_octets: r.get(2)?,
    })
}

pub fn usage_of(conn: &Connection, subscriber_id: i64, since_day: &str) -> Result<Vec<UsageDay>> {
    let mut stmt = conn.prepare_cached(
        "SELECT day, input_octets, output_octets FROM usage_daily WHERE subscriber_id = ?1 AND day >= ?2 ORDER BY day",
    )?;
    let rows = stmt.query_map(params![subscriber_id, since_day], usage_day)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Traffic per UTC day summed over every subscriber in `scope`, from `since_day` on.
/// Sums saturate (as the per-subscriber days do) instead of failing the report.
pub fn usage_in_scope(
    conn: &Connection,
    scope: &crate::scope::Scope,
    since_day: &str,
) -> Result<Vec<UsageDay>> {
    let (pred, p) = scope.owns("s.tenant_id");
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT u.day, CAST(min(total(u.input_octets), 9.2e18) AS INTEGER),
                CAST(min(total(u.output_octets), 9.2e18) AS INTEGER)
         FROM usage_daily u JOIN subscribers s ON s.id = u.subscriber_id
         WHERE {pred} AND u.day >= ? GROUP BY u.day ORDER BY u.day"
    ))?;
    let rows = stmt.query_map(params![p, since_day], usage_day)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One event an agent reported, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SiteEvent {
    pub agent_id: i64,
    /// The agent's sequence number.
    pub seq: i64,
    /// When it happened at the site (unix seconds).
    pub at: i64,
    /// When the controller stored it.
    pub received_at: i64,
    /// `accounting`, `auth_reject`, `nas_sessions_closed` or `coa`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event as the agent sent it.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
}

/// A site's events, newest first: those older than `before` (an `at`, exclusive) when
/// given, of one `kind` when given, at most `limit`.
pub fn site_events(
    conn: &Connection,
    site_id: i64,
    kind: Option<&str>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<SiteEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT agent_id, seq, at, received_at, type, body FROM agent_events
         WHERE site_id = ?1 AND (?2 IS NULL OR type = ?2) AND (?3 IS NULL OR at < ?3)
         ORDER BY at DESC, agent_id DESC, seq DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![site_id, kind, before, limit], |r| {
        Ok(SiteEvent {
            agent_id: r.get(0)?,
            seq: r.get(1)?,
            at: r.get(2)?,
            received_at: r.get(3)?,
            kind: r.get(4)?,
            body: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or(serde_json::Value::Null),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many sessions are online now for the subscribers `scope` owns (the dashboard's
/// figure), from the same accounting as [`sessions_of`].
pub fn online_count(conn: &Connection, scope: &crate::scope::Scope) -> Result<i64> {
    let (pred, p) = scope.owns("s.tenant_id");
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT count(*) FROM online_sessions o JOIN subscribers s ON s.id = o.subscriber_id WHERE {pred}"
    ))?;
    Ok(stmt.query_row([p], |r| r.get(0))?)
}
