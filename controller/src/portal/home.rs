//! What the portal's home page shows, read for one [`SubscriberScope`]: status, plan and
//! speeds, expiry, quota used and left, usage per day, the sessions online now, payments
//! and renewals, and the notices. Every query here names the scope's subscriber id and
//! no other; nothing here takes an id from a request.

use rusqlite::{Connection, params};

use super::SubscriberScope;
use crate::db::Cached;
use crate::db::agent::{OnlineSession, UsageDay, sessions_of, usage_of};
use crate::db::notice::{self, Notice};
use crate::db::plan;
use crate::db::subscriber::SubscriberStatus;
use crate::error::Result;
use crate::money::Currency;
use crate::panel::chart::{self, Series};

/// Days of usage the chart shows.
pub const USAGE_DAYS: i64 = 30;
/// Payments and renewals listed.
pub const HISTORY_ROWS: i64 = 20;

/// The subscriber's plan as the page shows it.
#[derive(Debug, Clone)]
pub struct PlanInfo {
    pub name: String,
    pub download_kbps: i64,
    pub upload_kbps: i64,
    pub quota_mb: Option<i64>,
}

/// A payment or refund the subscriber made (its reseller's collections, never what the
/// reseller pays upstream).
#[derive(Debug, Clone)]
pub struct Payment {
    pub at: i64,
    pub kind: String,
    pub amount: i64,
    pub reason: Option<String>,
}

/// A renewal of the subscriber's plan, at the retail price.
#[derive(Debug, Clone)]
pub struct Renewal {
    pub at: i64,
    pub plan: String,
    pub periods: i64,
    pub price: i64,
    pub new_expires_at: i64,
    pub automatic: bool,
}

/// Everything the home page shows.
#[derive(Debug, Clone)]
pub struct Home {
    pub username: String,
    pub name: String,
    pub status: SubscriberStatus,
    pub expires_at: Option<i64>,
    pub plan: Option<PlanInfo>,
    /// Since the current period began (the last renewal, else the account's creation).
    pub period_start: i64,
    /// Bytes both ways since `period_start` (whole UTC days).
    pub used_bytes: i64,
    pub usage: Vec<UsageDay>,
    pub online: Vec<OnlineSession>,
    pub payments: Vec<Payment>,
    pub renewals: Vec<Renewal>,
    pub notices: Vec<Notice>,
}

fn day(ts: i64) -> String {
    crate::db::rfc3339(ts)[..10].to_string()
}

/// Reads the home page of the scope's subscriber at `now`.
pub fn load(conn: &Connection, me: &SubscriberScope, now: i64) -> Result<Home> {
    let id = me.id();
    let tx = conn.unchecked_transaction()?;
    let row = super::session::row(&tx, me)?;
    let s = &row.sub;
    let plan = match s.plan_id {
        Some(p) => plan::get(&tx, p)?.map(|p| PlanInfo {
            name: p.name,
            download_kbps: p.download_kbps,
            upload_kbps: p.upload_kbps,
            quota_mb: p.quota_mb,
        }),
        None => None,
    };
    let created: i64 = tx.cached_row(
        "SELECT created_at FROM subscribers WHERE id = ?1",
        [id],
        |r| r.get(0),
    )?;
    let last_renewal: Option<i64> = tx.cached_row(
        "SELECT max(at) FROM renewals WHERE subscriber_id = ?1",
        [id],
        |r| r.get(0),
    )?;
    let period_start = last_renewal.unwrap_or(created);
    let used_bytes: i64 = tx.cached_row(
        "SELECT CAST(min(total(input_octets) + total(output_octets), 9.2e18) AS INTEGER)
         FROM usage_daily WHERE subscriber_id = ?1 AND day >= ?2",
        params![id, day(period_start)],
        |r| r.get(0),
    )?;
    let usage = usage_of(&tx, id, &day(now - (USAGE_DAYS - 1) * 86_400))?;
    let online = sessions_of(&tx, id)?;
    let payments = {
        let mut stmt = tx.prepare_cached(
            "SELECT at, kind, amount, reason FROM ledger
             WHERE subscriber_id = ?1 AND account = 'collections' AND tenant_id = ?2
               AND kind IN ('payment', 'refund')
             ORDER BY id DESC LIMIT ?3",
        )?;
        stmt.query_map(params![id, s.tenant_id, HISTORY_ROWS], |r| {
            Ok(Payment {
                at: r.get(0)?,
                kind: r.get(1)?,
                amount: r.get(2)?,
                reason: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?
    };
    let renewals = {
        let mut stmt = tx.prepare_cached(
            "SELECT r.at, coalesce(p.name, ''), r.periods, r.retail_price, r.new_expires_at, r.automatic
             FROM renewals r LEFT JOIN plans p ON p.id = r.plan_id
             WHERE r.subscriber_id = ?1 ORDER BY r.id DESC LIMIT ?2",
        )?;
        stmt.query_map(params![id, HISTORY_ROWS], |r| {
            Ok(Renewal {
                at: r.get(0)?,
                plan: r.get(1)?,
                periods: r.get(2)?,
                price: r.get(3)?,
                new_expires_at: r.get(4)?,
                automatic: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?
    };
    let notices = notice::for_subscriber(&tx, id, now)?;
    Ok(Home {
        username: s.username.clone(),
        name: s.name.clone(),
        status: s.status,
        expires_at: row.expires_at,
        plan,
        period_start,
        used_bytes,
        usage,
        online,
        payments,
        renewals,
        notices,
    })
}

/// Bytes for people: `1.5 GB`.
pub fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{} B", n as i64)
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn speed(kbps: i64) -> String {
    if kbps >= 1000 && kbps % 1000 == 0 {
        format!("{} Mbit/s", kbps / 1000)
    } else if kbps >= 1000 {
        format!("{:.1} Mbit/s", kbps as f64 / 1000.0)
    } else {
        format!("{kbps} kbit/s")
    }
}

fn when(ts: i64) -> String {
    let s = crate::db::rfc3339(ts);
    format!("{} {} UTC", &s[..10], &s[11..16])
}

/// A row of the page's tables, already formatted.
pub struct Line {
    pub cells: Vec<String>,
}

/// A notice as the page shows it.
pub struct NoticeView {
    pub id: i64,
    pub title: String,
    pub body: String,
    pub until: String,
}

/// The home page's text, formatted for the template.
pub struct HomeView {
    pub username: String,
    pub name: String,
    pub status: &'static str,
    pub status_text: &'static str,
    pub expires: String,
    pub plan: String,
    pub speeds: String,
    pub quota: String,
    pub used: String,
    pub left: Option<String>,
    pub since: String,
    pub chart: String,
    pub online: Vec<Line>,
    pub payments: Vec<Line>,
    pub renewals: Vec<Line>,
    pub notices: Vec<NoticeView>,
}

impl HomeView {
    pub fn new(h: &Home, cur: &Currency) -> HomeView {
        let (status, status_text) = match h.status {
            SubscriberStatus::Active => ("active", "Active: you are connected to the internet."),
            SubscriberStatus::Suspended => ("suspended", "Suspended: contact your provider."),
            SubscriberStatus::Expired => ("expired", "Expired: renew your plan to reconnect."),
            SubscriberStatus::Disabled => ("disabled", "Disabled."),
        };
        let quota_bytes = h
            .plan
            .as_ref()
            .and_then(|p| p.quota_mb)
            .map(|q| q * 1_000_000);
        let labels: Vec<String> = h.usage.iter().map(|u| u.day[5..].to_string()).collect();
        let gb = |v: i64| v as f64 / 1e9;
        let chart = chart::bars(
            "Usage per day",
            &labels,
            &[
                Series {
                    name: "download",
                    class: "a",
                    values: h.usage.iter().map(|u| gb(u.output_octets)).collect(),
                },
                Series {
                    name: "upload",
                    class: "b",
                    values: h.usage.iter().map(|u| gb(u.input_octets)).collect(),
                },
            ],
            "GB",
        );
        HomeView {
            username: h.username.clone(),
            name: h.name.clone(),
            status,
            status_text,
            expires: h.expires_at.map_or_else(|| "never".into(), when),
            plan: h
                .plan
                .as_ref()
                .map_or_else(|| "no plan".into(), |p| p.name.clone()),
            speeds: h.plan.as_ref().map_or_else(String::new, |p| {
                format!(
                    "{} down / {} up",
                    speed(p.download_kbps),
                    speed(p.upload_kbps)
                )
            }),
            quota: quota_bytes.map_or_else(|| "unlimited".into(), bytes),
            used: bytes(h.used_bytes),
            left: quota_bytes.map(|q| bytes((q - h.used_bytes).max(0))),
            since: day(h.period_start),
            chart,
            online: h
                .online
                .iter()
                .map(|s| Line {
                    cells: vec![
                        when(crate::db::subscriber::parse_time("at", &s.started_at).unwrap_or(0)),
                        s.framed_ip.clone().unwrap_or_else(|| "-".into()),
                        format!(
                            "{} h {} min",
                            s.session_time / 3600,
                            s.session_time % 3600 / 60
                        ),
                        bytes(s.output_octets),
                        bytes(s.input_octets),
                    ],
                })
                .collect(),
            payments: h
                .payments
                .iter()
                .map(|p| Line {
                    cells: vec![
                        when(p.at),
                        p.kind.clone(),
                        format!("{} {}", cur.format(p.amount), cur.code),
                        p.reason.clone().unwrap_or_default(),
                    ],
                })
                .collect(),
            renewals: h
                .renewals
                .iter()
                .map(|r| Line {
                    cells: vec![
                        when(r.at),
                        r.plan.clone(),
                        r.periods.to_string(),
                        format!("{} {}", cur.format(r.price), cur.code),
                        when(r.new_expires_at),
                        if r.automatic { "automatic" } else { "" }.into(),
                    ],
                })
                .collect(),
            notices: h
                .notices
                .iter()
                .map(|n| NoticeView {
                    id: n.id,
                    title: n.title.clone(),
                    body: n.body.clone(),
                    until: n.ends_at.replace('T', " ").replace('Z', " UTC"),
                })
                .collect(),
        }
    }
}
