//! Sites: a place (tower, POP, building) with an agent.

use super::Cached;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::paging::list_filter;
use super::row::{owned_row, stored_row};
use super::tenant::{Tenant, validate_name};
use super::{Filter, Paging};
use crate::error::{Error, Result};
use crate::scope::Scope;

stored_row! {
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct Site in COLS, read by from_row {
        pub id: i64 = "s.id",
        pub tenant_id: i64 = "s.tenant_id",
        pub name: String = "s.name",
        pub location: String = "s.location",
        pub notes: String = "s.notes",
        /// Acct-Interim-Interval the agent sends NASes, seconds (60..=86400).
        pub acct_interim_interval_secs: i64 = "s.acct_interim_interval_secs",
        /// Shape with HTB on the agent (IPoE on the BNG) rather than by RADIUS attributes.
        pub shaping_enabled: bool = "s.shaping_enabled",
        pub created_at: String = "s.created_at" => super::rfc3339,
        pub updated_at: String = "s.updated_at" => super::rfc3339,
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSite {
    #[schema(value_type = crate::wire::Name)]
    pub name: String,
    /// Owning tenant; defaults to the caller's.
    pub tenant_id: Option<i64>,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub location: String,
    #[serde(default)]
    #[schema(max_length = 4000)]
    pub notes: String,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SitePatch {
    #[schema(value_type = Option<crate::wire::Name>)]
    pub name: Option<String>,
    #[schema(max_length = 500)]
    pub location: Option<String>,
    #[schema(max_length = 4000)]
    pub notes: Option<String>,
    /// How often the NAS sends interim accounting (60..=86400 seconds).
    #[schema(minimum = 60, maximum = 86400)]
    pub acct_interim_interval_secs: Option<i64>,
    pub shaping_enabled: Option<bool>,
}

pub fn get_visible(conn: &Connection, scope: &Scope, id: i64) -> Result<Site> {
    let select = format!("SELECT {COLS} FROM sites s");
    owned_row(conn, scope, &select, "s", id, from_row, "site")
}

/// A site that rows owned by `owner` may attach to: one owned by `owner` or by one of
/// its ancestors (the operator's towers carry its resellers' customers). Any other id
/// answers the same "not available" whether it exists or not.
pub fn usable_by(conn: &Connection, owner: &Tenant, site_id: i64) -> Result<Site> {
    conn.cached_row(
        &format!(
            "SELECT {COLS} FROM sites s JOIN tenants t ON t.id = s.tenant_id
             WHERE s.id = ?1 AND ?2 GLOB t.path || '*'"
        ),
        params![site_id, owner.path],
        from_row,
    )
    .optional()?
    .ok_or_else(|| {
        Error::new(
            crate::error::ErrorKind::NotFound,
            "site_unavailable",
            format!(
                "site_id: site {site_id} does not exist or is not available to '{}'",
                owner.name
            ),
        )
    })
}

list_filter! {
    pub struct SiteFilter {
        pub q: Option<String>,
        pub tenant_id: Option<i64>,
    }
}

pub fn list(conn: &Connection, scope: &Scope, f: &SiteFilter, paging: Paging) -> Result<Vec<Site>> {
    let mut w = Filter::scoped(scope, "s.tenant_id");
    w.search(&["s.name", "s.location"], f.q.as_deref())
        .and_opt("s.tenant_id = ?", f.tenant_id);
    let select = format!("SELECT {COLS} FROM sites s");
    w.page(conn, &select, "s.id", paging, from_row)
}

/// How many sites `scope` holds.
pub fn count(conn: &Connection, scope: &Scope) -> Result<i64> {
    let (pred, p) = scope.owns("s.tenant_id");
    Ok(conn.cached_row(
        &format!("SELECT count(*) FROM sites s WHERE {pred}"),
        [p],
        |r| r.get(0),
    )?)
}

fn text(field: &str, s: &str, max: usize) -> Result<String> {
    if s.chars().count() > max {
        return Err(Error::invalid(format!(
            "{field} must be at most {max} characters"
        )));
    }
    Ok(s.trim().to_string())
}

pub fn create(conn: &Connection, owner: &Tenant, input: &NewSite) -> Result<Site> {
    let name = validate_name("name", &input.name, 120)?;
    let location = text("location", &input.location, 500)?;
    let notes = text("notes", &input.notes, 4000)?;
    super::tenant::check_capacity(conn, owner, super::tenant::Counted::Sites, |_| Ok(1))?;
    let now = super::now();
    conn.cached_exec(
        "INSERT INTO sites (tenant_id, name, location, notes, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![owner.id, name, location, notes, now],
    )?;
    get_by_id(conn, conn.last_insert_rowid())
}

fn get_by_id(conn: &Connection, id: i64) -> Result<Site> {
    Ok(conn.cached_row(
        &format!("SELECT {COLS} FROM sites s WHERE s.id = ?"),
        [id],
        from_row,
    )?)
}

pub fn update(conn: &Connection, site: &Site, p: &SitePatch) -> Result<Site> {
    let name = match &p.name {
        Some(n) => validate_name("name", n, 120)?,
        None => site.name.clone(),
    };
    let interim = p
        .acct_interim_interval_secs
        .unwrap_or(site.acct_interim_interval_secs);
    if !(60..=86_400).contains(&interim) {
        return Err(Error::invalid(
            "acct_interim_interval_secs must be between 60 and 86400",
        ));
    }
    let shaping = p.shaping_enabled.unwrap_or(site.shaping_enabled);
    let location = match &p.location {
        Some(l) => text("location", l, 500)?,
        None => site.location.clone(),
    };
    let notes = match &p.notes {
        Some(n) => text("notes", n, 4000)?,
        None => site.notes.clone(),
    };
    conn.cached_exec(
        "UPDATE sites SET name = ?2, location = ?3, notes = ?4, updated_at = ?5, acct_interim_interval_secs = ?6,
             shaping_enabled = ?7 WHERE id = ?1",
        params![site.id, name, location, notes, super::now(), interim, shaping],
    )?;
    get_by_id(conn, site.id)
}
