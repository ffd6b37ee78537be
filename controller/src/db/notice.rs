//! Notices: what staff tell their subscribers (an outage, maintenance, a price change)
//! for a while. Each is owned by one tenant and addressed to that tenant's subscribers
//! (its whole subtree; a manager's only to its tenant's direct customers), optionally
//! narrowed to one plan or one site. The portal shows a subscriber the ones addressed to
//! it ([`for_subscriber`]); the feed sends each site the ones addressed to its
//! subscribers ([`for_site`]), which the edge's suspended page shows.
//!
//! The feed hears of a change through `0015_notices.sql`'s triggers.

use outpost_protocol as proto;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::paging::list_filter;
use super::subscriber::parse_time;
use super::tenant::{Tenant, present};
use super::{Cached, Filter, Paging};
use crate::error::{Error, Result};
use crate::scope::Scope;

/// A notice as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Notice {
    pub id: i64,
    /// The tenant whose subscribers it is for.
    pub tenant_id: i64,
    /// Only the tenant's own subscribers, not its sub-resellers' (a manager's notice).
    pub direct_customers_only: bool,
    pub title: String,
    pub body: String,
    /// Only subscribers on this plan.
    pub plan_id: Option<i64>,
    /// Only subscribers at this site.
    pub site_id: Option<i64>,
    /// RFC 3339: shown from then.
    pub starts_at: String,
    /// RFC 3339: shown until then.
    pub ends_at: String,
    /// Whether it is shown now.
    pub active: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// A new notice.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNotice {
    /// For this tenant's subscribers; defaults to yours. Your own tenant or one below it.
    pub tenant_id: Option<i64>,
    #[schema(
        min_length = 1,
        max_length = 120,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub title: String,
    #[serde(default)]
    #[schema(
        max_length = 2000,
        pattern = r"^[^\u0000-\u0009\u000B-\u001F\u007F-\u009F]*$"
    )]
    pub body: String,
    /// Only subscribers on this plan (one of the plans you see). Not with `site_id`.
    pub plan_id: Option<i64>,
    /// Only subscribers at this site (one of your sites). Not with `plan_id`.
    pub site_id: Option<i64>,
    #[schema(format = DateTime)]
    pub starts_at: String,
    /// After `starts_at`.
    #[schema(format = DateTime)]
    pub ends_at: String,
}

impl NewNotice {
    /// `plan_id` and `site_id` do not go together.
    pub const SCHEMA_RULES: &str = r#"[
        {"if": {"properties": {"plan_id": {"type": "integer"}}, "required": ["plan_id"]},
         "then": {"properties": {"site_id": {"type": "null"}}}}
    ]"#;
}

/// A change to a notice; absent fields stay as they are. The tenant does not change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoticePatch {
    #[schema(
        min_length = 1,
        max_length = 120,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub title: Option<String>,
    #[schema(
        max_length = 2000,
        pattern = r"^[^\u0000-\u0009\u000B-\u001F\u007F-\u009F]*$"
    )]
    pub body: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub plan_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub site_id: Option<Option<i64>>,
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
}

list_filter! {
    pub struct NoticeFilter {
        pub tenant_id: Option<i64>,
        /// Only those shown now (true) or not shown now (false).
        pub active: Option<bool>,
    }
}

const COLS: &str =
    "n.id, n.tenant_id, n.direct, n.title, n.body, n.plan_id, n.site_id, n.starts_at,
    n.ends_at, n.created_at, n.updated_at";

fn from_row(now: i64) -> impl Fn(&Row<'_>) -> rusqlite::Result<Notice> {
    move |r| {
        let (starts, ends): (i64, i64) = (r.get(7)?, r.get(8)?);
        Ok(Notice {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            direct_customers_only: r.get(2)?,
            title: r.get(3)?,
            body: r.get(4)?,
            plan_id: r.get(5)?,
            site_id: r.get(6)?,
            starts_at: super::rfc3339(starts),
            ends_at: super::rfc3339(ends),
            active: starts <= now && now < ends,
            created_at: super::rfc3339(r.get(9)?),
            updated_at: super::rfc3339(r.get(10)?),
        })
    }
}

/// One notice in `scope`.
pub fn get_visible(conn: &Connection, scope: &Scope, id: i64) -> Result<Notice> {
    let (pred, p) = scope.owns("n.tenant_id");
    conn.cached_row(
        &format!("SELECT {COLS} FROM notices n WHERE {pred} AND n.id = ?"),
        params![p, id],
        from_row(super::now()),
    )
    .optional()?
    .ok_or_else(|| Error::not_found("notice"))
}

/// The notices in `scope`, newest first.
pub fn list(
    conn: &Connection,
    scope: &Scope,
    f: &NoticeFilter,
    paging: Paging,
) -> Result<Vec<Notice>> {
    let now = super::now();
    let mut w = Filter::scoped(scope, "n.tenant_id");
    w.and_opt("n.tenant_id = ?", f.tenant_id);
    match f.active {
        Some(true) => w.and_with(
            "n.starts_at <= ? AND n.ends_at > ?",
            vec![now.into(), now.into()],
        ),
        Some(false) => w.and_with(
            "(n.starts_at > ? OR n.ends_at <= ?)",
            vec![now.into(), now.into()],
        ),
        None => &mut w,
    };
    let select = format!("SELECT {COLS} FROM notices n");
    w.newest_first()
        .page(conn, &select, "n.id", paging, from_row(now))
}

fn text(field: &str, s: &str, min: usize, max: usize, newlines: bool) -> Result<String> {
    let s = s.trim();
    let n = s.chars().count();
    if n < min
        || n > max
        || s.chars()
            .any(|c| c.is_control() && !(newlines && c == '\n'))
    {
        return Err(Error::invalid(format!(
            "{field} must be {min} to {max} characters without control characters"
        )));
    }
    Ok(s.to_string())
}

fn window(starts: i64, ends: i64) -> Result<()> {
    if ends <= starts {
        return Err(Error::invalid("ends_at must be after starts_at"));
    }
    Ok(())
}

/// Checks the audience's plan and site against `scope` (404 for anything outside it,
/// whether it exists or not) and that only one of them is given.
fn audience(
    conn: &Connection,
    scope: &Scope,
    plan_id: Option<i64>,
    site_id: Option<i64>,
) -> Result<()> {
    if plan_id.is_some() && site_id.is_some() {
        return Err(Error::invalid(
            "a notice is for one plan or one site, not both",
        ));
    }
    if let Some(p) = plan_id {
        super::plan::get_visible(conn, scope, p)?;
    }
    if let Some(s) = site_id {
        super::site::get_visible(conn, scope, s)?;
    }
    Ok(())
}

/// Creates a notice owned by `owner` (already authorized), for its subtree or, with
/// `direct`, its own subscribers only. The plan and site must be in `scope`.
pub fn create(
    conn: &Connection,
    scope: &Scope,
    owner: &Tenant,
    direct: bool,
    input: &NewNotice,
    created_by: Option<i64>,
) -> Result<Notice> {
    let title = text("title", &input.title, 1, 120, false)?;
    let body = text("body", &input.body, 0, 2000, true)?;
    let starts = parse_time("starts_at", &input.starts_at)?;
    let ends = parse_time("ends_at", &input.ends_at)?;
    window(starts, ends)?;
    audience(conn, scope, input.plan_id, input.site_id)?;
    let now = super::now();
    conn.cached_exec(
        "INSERT INTO notices (tenant_id, direct, title, body, plan_id, site_id, starts_at, ends_at,
             created_by, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
        params![
            owner.id,
            direct,
            title,
            body,
            input.plan_id,
            input.site_id,
            starts,
            ends,
            created_by,
            now
        ],
    )?;
    get_visible(conn, scope, conn.last_insert_rowid())
}

/// Applies a patch to a notice already read in `scope`.
pub fn update(conn: &Connection, scope: &Scope, n: &Notice, p: &NoticePatch) -> Result<Notice> {
    let title = match &p.title {
        Some(t) => text("title", t, 1, 120, false)?,
        None => n.title.clone(),
    };
    let body = match &p.body {
        Some(b) => text("body", b, 0, 2000, true)?,
        None => n.body.clone(),
    };
    let starts = match &p.starts_at {
        Some(t) => parse_time("starts_at", t)?,
        None => parse_time("starts_at", &n.starts_at)?,
    };
    let ends = match &p.ends_at {
        Some(t) => parse_time("ends_at", t)?,
        None => parse_time("ends_at", &n.ends_at)?,
    };
    window(starts, ends)?;
    let plan_id = p.plan_id.unwrap_or(n.plan_id);
    let site_id = p.site_id.unwrap_or(n.site_id);
    audience(conn, scope, plan_id, site_id)?;
    conn.cached_exec(
        "UPDATE notices SET title = ?2, body = ?3, plan_id = ?4, site_id = ?5, starts_at = ?6,
             ends_at = ?7, updated_at = ?8 WHERE id = ?1",
        params![
            n.id,
            title,
            body,
            plan_id,
            site_id,
            starts,
            ends,
            super::now()
        ],
    )?;
    get_visible(conn, scope, n.id)
}

/// Deletes a notice already read in scope.
pub fn delete(conn: &Connection, id: i64) -> Result<()> {
    conn.cached_exec("DELETE FROM notices WHERE id = ?1", [id])?;
    Ok(())
}

/// The notices shown at `now` to the one subscriber `subscriber_id`: those addressed to
/// its owner's tenant or a tenant above it (not a manager's notice of a tenant above),
/// on its plan or at its site when they say so. The subscriber is the only input: the
/// portal passes its session's subscriber and nothing else.
pub fn for_subscriber(conn: &Connection, subscriber_id: i64, now: i64) -> Result<Vec<Notice>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM subscribers s JOIN tenants st ON st.id = s.tenant_id
            JOIN notices n ON n.starts_at <= ?2 AND n.ends_at > ?2
            JOIN tenants t ON t.id = n.tenant_id
         WHERE s.id = ?1
           AND (n.tenant_id = s.tenant_id OR (n.direct = 0 AND st.path GLOB t.path || '*'))
           AND (n.plan_id IS NULL OR n.plan_id = s.plan_id)
           AND (n.site_id IS NULL OR n.site_id = s.site_id)
         ORDER BY n.starts_at DESC, n.id DESC"
    ))?;
    let rows = stmt.query_map(params![subscriber_id, now], from_row(now))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The notices for a site's subscribers that have not ended by `now`, as the feed sends
/// them: each with the owning tenants (at this site) whose subscribers all see it, or,
/// for a notice on one plan, the subscribers (at this site) on it. Notices that reach
/// nobody at the site are left out.
pub fn for_site(conn: &Connection, site_id: i64, now: i64) -> Result<Vec<proto::Notice>> {
    let mut stmt = conn.prepare_cached(
        "SELECT n.id, n.title, n.body, n.starts_at, n.ends_at, n.tenant_id, n.direct, n.plan_id, t.path
         FROM notices n JOIN tenants t ON t.id = n.tenant_id
         WHERE n.ends_at > ?1 AND (n.site_id IS NULL OR n.site_id = ?2) ORDER BY n.id",
    )?;
    type Candidate = (proto::Notice, i64, bool, Option<i64>, String);
    let candidates: Vec<Candidate> = stmt
        .query_map(params![now, site_id], |r| {
            Ok((
                proto::Notice {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    body: r.get(2)?,
                    starts_at: r.get(3)?,
                    ends_at: r.get(4)?,
                    tenant_ids: vec![],
                    subscriber_ids: vec![],
                },
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    if candidates.is_empty() {
        return Ok(vec![]);
    }
    // The owners of the site's subscribers, with their paths: one read of the site.
    let owners: Vec<(i64, String)> = {
        let mut stmt = conn.prepare_cached(
            "SELECT t.id, t.path FROM tenants t
             WHERE t.id IN (SELECT DISTINCT tenant_id FROM subscribers WHERE site_id = ?1) ORDER BY t.id",
        )?;
        stmt.query_map([site_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    let mut out = Vec::new();
    for (mut n, tenant_id, direct, plan_id, path) in candidates {
        let reaches =
            |(id, p): &(i64, String)| *id == tenant_id || (!direct && p.starts_with(path.as_str()));
        let tenants: Vec<i64> = owners.iter().filter(|o| reaches(o)).map(|o| o.0).collect();
        match plan_id {
            None => n.tenant_ids = tenants,
            Some(plan) if !tenants.is_empty() => {
                let ids = serde_json::to_string(&tenants).expect("ids serialize");
                let mut stmt = conn.prepare_cached(
                    "SELECT id FROM subscribers WHERE site_id = ?1 AND plan_id = ?2
                     AND tenant_id IN (SELECT value FROM json_each(?3)) ORDER BY id",
                )?;
                n.subscriber_ids = stmt
                    .query_map(params![site_id, plan, ids], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
            }
            Some(_) => {}
        }
        if !n.tenant_ids.is_empty() || !n.subscriber_ids.is_empty() {
            out.push(n);
        }
    }
    Ok(out)
}
