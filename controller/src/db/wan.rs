//! WAN checks as the controller keeps them: the state of each probe of each CPE (from
//! the agents' transitions), every outage, and the outage report per site and per
//! reseller. Written by [`apply`] once per stored event; read through the one scope.

use outpost_protocol as proto;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::paging::list_filter;
use crate::db::{Cached, Filter, Paging, rfc3339};
use crate::error::Result;
use crate::scope::Scope;

/// How a probe is named in the API and the tables: `icmp` or `tcp:PORT`.
pub fn probe_name(p: &proto::WanProbe) -> String {
    match p {
        proto::WanProbe::Icmp => "icmp".into(),
        proto::WanProbe::Tcp { port } => format!("tcp:{port}"),
    }
}

/// Folds one stored transition into the state and the outages. A subscriber that is
/// not at the reporting agent's site is ignored (an agent speaks for its own site only).
pub fn apply(conn: &Connection, site_id: i64, at: i64, t: &proto::WanTransition) -> Result<()> {
    let owner: Option<i64> = conn
        .cached_row(
            "SELECT tenant_id FROM subscribers WHERE id = ?1 AND site_id = ?2",
            params![t.subscriber_id, site_id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(tenant_id) = owner else {
        tracing::warn!(
            site = site_id,
            subscriber = t.subscriber_id,
            "a WAN-check transition for a subscriber not at this site is ignored"
        );
        return Ok(());
    };
    let probe = probe_name(&t.probe);
    let state = match t.state {
        proto::WanState::Up => "up",
        proto::WanState::Down => "down",
    };
    let now = crate::db::now();
    conn.cached_exec(
        "INSERT INTO wan_targets (site_id, subscriber_id, tenant_id, probe, address, state, since, flaps, sent, lost, rtt_us, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (subscriber_id, probe) DO UPDATE SET site_id = excluded.site_id, tenant_id = excluded.tenant_id,
             address = excluded.address, state = excluded.state, since = excluded.since, flaps = excluded.flaps,
             sent = excluded.sent, lost = excluded.lost, rtt_us = excluded.rtt_us, updated_at = excluded.updated_at",
        params![
            site_id,
            t.subscriber_id,
            tenant_id,
            probe,
            t.address,
            state,
            at,
            t.flaps,
            t.sent as i64,
            t.lost as i64,
            t.rtt_us.map(|v| v as i64),
            now
        ],
    )?;
    let open: Option<i64> = conn
        .cached_row(
            "SELECT id FROM wan_outages WHERE subscriber_id = ?1 AND probe = ?2 AND ended_at IS NULL",
            params![t.subscriber_id, probe],
            |r| r.get(0),
        )
        .optional()?;
    match (t.state, open) {
        (proto::WanState::Down, None) => {
            conn.cached_exec(
                "INSERT INTO wan_outages (site_id, subscriber_id, tenant_id, probe, address, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![site_id, t.subscriber_id, tenant_id, probe, t.address, at],
            )?;
        }
        (proto::WanState::Up, Some(id)) => {
            conn.cached_exec(
                "UPDATE wan_outages SET ended_at = max(started_at, ?2) WHERE id = ?1",
                params![id, at],
            )?;
        }
        // Down while already down (a restarted agent's repeat) or up with no outage
        // known: the state row above says it all.
        _ => {}
    }
    Ok(())
}

/// Which probe of which CPE: what a target and its outages both name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CpeProbe {
    pub site_id: i64,
    pub subscriber_id: i64,
    /// The subscriber's owning reseller.
    pub tenant_id: i64,
    /// `icmp` or `tcp:PORT`.
    pub probe: String,
    pub address: String,
}

impl CpeProbe {
    /// Reads the five columns from `at` on, in the order above.
    fn from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<CpeProbe> {
        Ok(CpeProbe {
            site_id: r.get(at)?,
            subscriber_id: r.get(at + 1)?,
            tenant_id: r.get(at + 2)?,
            probe: r.get(at + 3)?,
            address: r.get(at + 4)?,
        })
    }
}

/// One probe of one CPE, as last reported.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WanTarget {
    pub id: i64,
    #[serde(flatten)]
    pub of: CpeProbe,
    /// `up` or `down`.
    pub state: String,
    /// When the current state began (RFC 3339).
    pub since: String,
    /// State changes seen by the agent.
    pub flaps: i64,
    /// Probes sent and lost, as of the last transition.
    pub sent: i64,
    pub lost: i64,
    /// The round trip of the answer that brought it up, microseconds.
    pub rtt_us: Option<i64>,
}

list_filter! {
    /// Which targets to list.
    pub struct WanTargetFilter {
        pub site_id: Option<i64>,
        /// The owning reseller.
        pub tenant_id: Option<i64>,
        pub subscriber_id: Option<i64>,
        #[param(inline)]
        pub state: Option<WanState>,
    }
}

/// Whether a probe answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WanState {
    Up,
    Down,
}

impl WanState {
    fn as_str(self) -> &'static str {
        match self {
            WanState::Up => "up",
            WanState::Down => "down",
        }
    }
}

const TARGET_COLS: &str = "w.id, w.site_id, w.subscriber_id, w.tenant_id, w.probe, w.address, w.state, w.since, w.flaps, w.sent, w.lost, w.rtt_us";

fn target_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WanTarget> {
    Ok(WanTarget {
        id: r.get(0)?,
        of: CpeProbe::from_row(r, 1)?,
        state: r.get(6)?,
        since: rfc3339(r.get(7)?),
        flaps: r.get(8)?,
        sent: r.get(9)?,
        lost: r.get(10)?,
        rtt_us: r.get(11)?,
    })
}

/// The targets in scope.
pub fn list_targets(
    conn: &Connection,
    scope: &Scope,
    f: &WanTargetFilter,
    paging: Paging,
) -> Result<Vec<WanTarget>> {
    let mut w = Filter::scoped(scope, "w.tenant_id");
    w.and_opt("w.site_id = ?", f.site_id)
        .and_opt("w.tenant_id = ?", f.tenant_id)
        .and_opt("w.subscriber_id = ?", f.subscriber_id)
        .and_opt("w.state = ?", f.state.map(|s| s.as_str().to_string()));
    let select = format!("SELECT {TARGET_COLS} FROM wan_targets w");
    w.page(conn, &select, "w.id", paging, target_row)
}

/// One outage of one probe: from down to up (open while `ended_at` is absent).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WanOutage {
    pub id: i64,
    #[serde(flatten)]
    pub of: CpeProbe,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// Seconds down, until now for an open outage.
    pub duration_secs: i64,
}

list_filter! {
    /// Which outages to list, newest first.
    pub struct WanOutageFilter {
        pub site_id: Option<i64>,
        /// The owning reseller.
        pub tenant_id: Option<i64>,
        pub subscriber_id: Option<i64>,
        /// Only outages still open (true) or only ended ones (false).
        pub open: Option<bool>,
    }
}

fn outage_row(now: i64) -> impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<WanOutage> {
    move |r| {
        let started: i64 = r.get(6)?;
        let ended: Option<i64> = r.get(7)?;
        Ok(WanOutage {
            id: r.get(0)?,
            of: CpeProbe::from_row(r, 1)?,
            started_at: rfc3339(started),
            ended_at: ended.map(rfc3339),
            duration_secs: (ended.unwrap_or(now) - started).max(0),
        })
    }
}

/// The outages in scope, newest first.
pub fn list_outages(
    conn: &Connection,
    scope: &Scope,
    f: &WanOutageFilter,
    paging: Paging,
) -> Result<Vec<WanOutage>> {
    let mut w = Filter::scoped(scope, "o.tenant_id").newest_first();
    w.and_opt("o.site_id = ?", f.site_id)
        .and_opt("o.tenant_id = ?", f.tenant_id)
        .and_opt("o.subscriber_id = ?", f.subscriber_id);
    match f.open {
        Some(true) => {
            w.and_with("o.ended_at IS NULL", vec![]);
        }
        Some(false) => {
            w.and_with("o.ended_at IS NOT NULL", vec![]);
        }
        None => {}
    }
    let select = "SELECT o.id, o.site_id, o.subscriber_id, o.tenant_id, o.probe, o.address, o.started_at, o.ended_at FROM wan_outages o";
    w.page(conn, select, "o.id", paging, outage_row(crate::db::now()))
}

/// A subscriber's WAN checks: every probe's state and its latest outages.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubscriberWan {
    pub targets: Vec<WanTarget>,
    /// The 50 latest outages, newest first.
    pub outages: Vec<WanOutage>,
}

/// Everything known of one (already visible) subscriber's CPE.
pub fn of_subscriber(conn: &Connection, subscriber_id: i64) -> Result<SubscriberWan> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TARGET_COLS} FROM wan_targets w WHERE w.subscriber_id = ?1 ORDER BY w.probe"
    ))?;
    let targets = stmt
        .query_map([subscriber_id], target_row)?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT o.id, o.site_id, o.subscriber_id, o.tenant_id, o.probe, o.address, o.started_at, o.ended_at
         FROM wan_outages o WHERE o.subscriber_id = ?1 ORDER BY o.id DESC LIMIT 50",
    )?;
    let outages = stmt
        .query_map([subscriber_id], outage_row(crate::db::now()))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(SubscriberWan { targets, outages })
}

/// One line of the outage report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct OutageLine {
    /// The site's or the reseller's id.
    pub id: i64,
    /// CPE (subscribers) with a probe down now.
    pub down_now: i64,
    /// Outages that overlap the window.
    pub outages: i64,
    /// Seconds of outage inside the window, summed over the outages.
    pub down_secs: i64,
    /// The longest single outage inside the window, seconds.
    pub longest_secs: i64,
}

/// The outage report over a window, per site and per reseller.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutageReport {
    pub since: String,
    pub until: String,
    pub per_site: Vec<OutageLine>,
    pub per_reseller: Vec<OutageLine>,
}

/// The report over `[since, until)` of the rows in scope. An empty window (`since` not
/// before `until`) holds no outage time; CPE down now are counted all the same.
pub fn report(conn: &Connection, scope: &Scope, since: i64, until: i64) -> Result<OutageReport> {
    let until = until.max(since);
    let now = crate::db::now();
    let (pred_o, p_o) = scope.owns("o.tenant_id");
    let (pred_w, p_w) = scope.owns("w.tenant_id");
    let lines = |by: &str| -> Result<Vec<OutageLine>> {
        // The scope predicates come first, so their bare `?`s are ?1 and ?2; then
        // ?3 since, ?4 until, ?5 now.
        let sql = format!(
            "WITH so AS (SELECT * FROM wan_outages o WHERE {pred_o}),
                  sw AS (SELECT * FROM wan_targets w WHERE {pred_w}),
                  o AS (SELECT {by} AS k, min(coalesce(ended_at, ?5), ?4) - max(started_at, ?3) AS secs
                        FROM so WHERE started_at < ?4 AND coalesce(ended_at, ?5) > ?3),
                  agg AS (SELECT k, count(*) AS n, sum(secs) AS total, max(secs) AS longest FROM o GROUP BY k),
                  d AS (SELECT {by} AS k, count(DISTINCT subscriber_id) AS down FROM sw WHERE state = 'down' GROUP BY k),
                  ks AS (SELECT k FROM agg UNION SELECT k FROM d)
             SELECT ks.k, coalesce(d.down, 0), coalesce(agg.n, 0), coalesce(agg.total, 0), coalesce(agg.longest, 0)
             FROM ks LEFT JOIN agg USING (k) LEFT JOIN d USING (k) ORDER BY ks.k"
        );
        let args: Vec<rusqlite::types::Value> = vec![
            p_o.clone(),
            p_w.clone(),
            since.into(),
            until.into(),
            now.into(),
        ];
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok(OutageLine {
                id: r.get(0)?,
                down_now: r.get(1)?,
                outages: r.get(2)?,
                down_secs: r.get::<_, i64>(3)?.max(0),
                longest_secs: r.get::<_, i64>(4)?.max(0),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    };
    Ok(OutageReport {
        since: rfc3339(since),
        until: rfc3339(until),
        per_site: lines("site_id")?,
        per_reseller: lines("tenant_id")?,
    })
}

/// How many customer routers are under WAN checks, by their last state (`up`, `down`),
/// installation-wide: what metrics report.
pub fn targets_by_state(conn: &Connection) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT state, count(DISTINCT subscriber_id) FROM wan_targets GROUP BY state",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
