//! Plans (service packages) and rate cards.
//!
//! The operator's plans have no parent. The operator assigns a plan to a reseller at a
//! wholesale price (a rate card entry); that card is the reseller's provider card. The
//! reseller derives its own retail plans from plans on its card — at speeds up to the
//! assigned plan's, with the same validity — and may assign those onward to its own
//! sub-resellers at its own wholesale price. A tenant pays, per renewal period, the
//! wholesale price of the card entry its plan comes from; nobody sees the cards above
//! their own.

use super::Cached;
use rusqlite::{Connection, OptionalExtension, params};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::paging::list_filter;
use super::row::{owned_row, stored_row};
use super::tenant::{self, RenewalMode, Tenant, validate_name};
use super::{Filter, Paging};
use crate::error::{Error, ErrorKind, Result};
use crate::money::{Currency, NonNegativeAmount, decimal_str, opt_decimal_str};
use crate::scope::{OPERATOR_TENANT, Scope};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    Active,
    /// Kept for history; no new subscribers or renewals.
    Archived,
}

/// A plan as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    pub id: i64,
    /// The tenant that owns (sells) the plan.
    pub tenant_id: i64,
    /// The card plan this retail plan derives from (null for the operator's plans).
    pub parent_plan_id: Option<i64>,
    pub name: String,
    pub download_kbps: i64,
    pub upload_kbps: i64,
    pub burst_download_kbps: Option<i64>,
    pub burst_upload_kbps: Option<i64>,
    /// Exactly one of `validity_days` and `validity_months` is set.
    pub validity_days: Option<i64>,
    pub validity_months: Option<i64>,
    pub quota_mb: Option<i64>,
    /// Retail price per period, to subscribers.
    #[serde(with = "decimal_str")]
    #[schema(value_type = String, example = "25.00")]
    pub price: Decimal,
    pub status: PlanStatus,
    /// Set on plans assigned to your own tenant: what you pay per renewal period.
    #[serde(
        with = "opt_decimal_str",
        skip_serializing_if = "Option::is_none",
        default
    )]
    #[schema(value_type = Option<String>)]
    pub wholesale_price: Option<Decimal>,
    /// TCP ports the WAN checks probe on its subscribers' CPEs besides ICMP (`[]`: ICMP
    /// only); null: the site's own list. A subscriber's own list wins.
    pub wan_tcp_ports: Option<Vec<u16>>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPlan {
    #[schema(value_type = crate::wire::Name)]
    pub name: String,
    /// Owning tenant; defaults to yours.
    pub tenant_id: Option<i64>,
    /// Required for a reseller's plan: a plan on the owner's rate card.
    pub parent_plan_id: Option<i64>,
    #[schema(minimum = 1, maximum = 100000000)]
    pub download_kbps: i64,
    #[schema(minimum = 1, maximum = 100000000)]
    pub upload_kbps: i64,
    /// At least `download_kbps` (a burst rate below the plan's rate is refused).
    #[schema(minimum = 1, maximum = 100000000)]
    pub burst_download_kbps: Option<i64>,
    /// At least `upload_kbps` (a burst rate below the plan's rate is refused).
    #[schema(minimum = 1, maximum = 100000000)]
    pub burst_upload_kbps: Option<i64>,
    /// A derived plan inherits its parent's validity when both are omitted.
    #[schema(minimum = 1, maximum = 3660)]
    pub validity_days: Option<i64>,
    #[schema(minimum = 1, maximum = 120)]
    pub validity_months: Option<i64>,
    /// Traffic allowance per period in MB; null for unlimited.
    #[schema(minimum = 1)]
    pub quota_mb: Option<i64>,
    pub price: NonNegativeAmount,
    /// TCP ports the WAN checks probe on its subscribers' CPEs (`[]`: ICMP only); omit
    /// for the site's own list.
    #[serde(default)]
    #[schema(value_type = Option<Vec<crate::wire::TcpPort>>, max_items = 16)]
    pub wan_tcp_ports: Option<Vec<u16>>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanPatch {
    #[schema(value_type = Option<crate::wire::Name>)]
    pub name: Option<String>,
    pub price: Option<NonNegativeAmount>,
    #[schema(minimum = 1, maximum = 100000000)]
    pub download_kbps: Option<i64>,
    #[schema(minimum = 1, maximum = 100000000)]
    pub upload_kbps: Option<i64>,
    pub status: Option<PlanStatus>,
    /// Replaces the WAN-check ports; null goes back to the site's own list.
    #[serde(default, deserialize_with = "super::tenant::present")]
    #[schema(value_type = Option<Vec<crate::wire::TcpPort>>, max_items = 16)]
    pub wan_tcp_ports: Option<Option<Vec<u16>>>,
}

stored_row! {
    /// A stored plan.
    #[derive(Debug, Clone)]
    pub struct PlanRow in COLS, read by from_row {
        pub id: i64 = "p.id",
        pub tenant_id: i64 = "p.tenant_id",
        pub parent_plan_id: Option<i64> = "p.parent_plan_id",
        pub name: String = "p.name",
        pub download_kbps: i64 = "p.download_kbps",
        pub upload_kbps: i64 = "p.upload_kbps",
        pub burst_download_kbps: Option<i64> = "p.burst_download_kbps",
        pub burst_upload_kbps: Option<i64> = "p.burst_upload_kbps",
        pub validity_days: Option<i64> = "p.validity_days",
        pub validity_months: Option<i64> = "p.validity_months",
        pub quota_mb: Option<i64> = "p.quota_mb",
        pub price: i64 = "p.price",
        pub status: PlanStatus = "p.status" => stored_status,
        pub created_at: i64 = "p.created_at",
        pub updated_at: i64 = "p.updated_at",
        /// The WAN-check ports it names, if any.
        pub wan_tcp_ports: Option<Vec<u16>> = "p.wan_tcp_ports" => crate::wire::tcp_ports_read,
        /// The wholesale price for the tenant it was read for, if on its card (each
        /// query names `rc`: that tenant's `rate_cards` row, or `NO_CARD`).
        pub wholesale: Option<i64> = "rc.wholesale_price",
    }
}

fn stored_status(s: String) -> PlanStatus {
    if s == "active" {
        PlanStatus::Active
    } else {
        PlanStatus::Archived
    }
}

/// The join of reads made for no tenant in particular: no card, no wholesale price.
const NO_CARD: &str = "CROSS JOIN (SELECT NULL AS wholesale_price) rc";

impl PlanRow {
    pub fn view(&self, cur: &Currency) -> Plan {
        Plan {
            id: self.id,
            tenant_id: self.tenant_id,
            parent_plan_id: self.parent_plan_id,
            name: self.name.clone(),
            download_kbps: self.download_kbps,
            upload_kbps: self.upload_kbps,
            burst_download_kbps: self.burst_download_kbps,
            burst_upload_kbps: self.burst_upload_kbps,
            validity_days: self.validity_days,
            validity_months: self.validity_months,
            quota_mb: self.quota_mb,
            price: cur.from_minor(self.price),
            status: self.status,
            wholesale_price: self.wholesale.map(|w| cur.from_minor(w)),
            wan_tcp_ports: self.wan_tcp_ports.clone(),
            created_at: super::rfc3339(self.created_at),
            updated_at: super::rfc3339(self.updated_at),
        }
    }
}

/// Unscoped, for server-side checks.
pub fn get(conn: &Connection, id: i64) -> Result<Option<PlanRow>> {
    Ok(conn
        .cached_row(
            &format!("SELECT {COLS} FROM plans p {NO_CARD} WHERE p.id = ?"),
            [id],
            from_row,
        )
        .optional()?)
}

/// The visibility predicate for plans: owned inside the scope, or on the card of the
/// scope's own tenant. Its wholesale column is that tenant's price, never another's.
fn visible_select(scope: &Scope) -> (String, Filter) {
    let (pred, p) = scope.owns("p.tenant_id");
    let me = scope.tenant_id();
    let select = format!(
        "SELECT {COLS} FROM plans p
         LEFT JOIN rate_cards rc ON rc.plan_id = p.id AND rc.tenant_id = {me}"
    );
    (
        select,
        Filter::new(format!("({pred} OR rc.tenant_id IS NOT NULL)"), vec![p]),
    )
}

pub fn get_visible(conn: &Connection, scope: &Scope, id: i64) -> Result<PlanRow> {
    let (select, mut w) = visible_select(scope);
    w.and("p.id = ?", id);
    let one = Paging { after: 0, limit: 1 };
    w.page(conn, &select, "p.id", one, from_row)?
        .pop()
        .ok_or_else(|| Error::not_found("plan"))
}

list_filter! {
    pub struct PlanFilter {
        pub q: Option<String>,
        /// Only plans owned by this tenant.
        pub tenant_id: Option<i64>,
        pub status: Option<PlanStatus>,
        /// Only plans on your own rate card (true) or only your and your descendants' own (false).
        pub assigned: Option<bool>,
    }
}

pub fn list(
    conn: &Connection,
    scope: &Scope,
    f: &PlanFilter,
    paging: Paging,
) -> Result<Vec<PlanRow>> {
    let (select, mut w) = visible_select(scope);
    w.search(&["p.name"], f.q.as_deref())
        .and_opt("p.tenant_id = ?", f.tenant_id)
        .and_opt(
            "p.status = ?",
            f.status.map(|s| {
                if s == PlanStatus::Active {
                    "active"
                } else {
                    "archived"
                }
                .to_string()
            }),
        );
    match f.assigned {
        Some(true) => {
            w.and_with("rc.tenant_id IS NOT NULL", vec![]);
        }
        Some(false) => {
            w.and_with("rc.tenant_id IS NULL", vec![]);
        }
        None => {}
    }
    w.page(conn, &select, "p.id", paging, from_row)
}

/// A plan a subscriber of `owner` may be on: `owner`'s own, or on its card; active.
pub fn usable_by(conn: &Connection, owner: &Tenant, plan_id: i64) -> Result<PlanRow> {
    let p = conn
        .cached_row(
            &format!(
                "SELECT {COLS} FROM plans p
                 LEFT JOIN rate_cards rc ON rc.plan_id = p.id AND rc.tenant_id = ?2
                 WHERE p.id = ?1 AND (p.tenant_id = ?2 OR rc.tenant_id IS NOT NULL)"
            ),
            params![plan_id, owner.id],
            from_row,
        )
        .optional()?
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                "plan_unavailable",
                format!(
                    "plan_id: plan {plan_id} is not one of '{}''s plans or on its rate card",
                    owner.name
                ),
            )
        })?;
    if p.status != PlanStatus::Active {
        return Err(Error::conflict(
            "plan_unavailable",
            format!("plan '{}' is archived", p.name),
        ));
    }
    Ok(p)
}

fn check_speed(field: &str, v: i64) -> Result<()> {
    if !(1..=100_000_000).contains(&v) {
        return Err(Error::invalid(format!(
            "{field} must be between 1 and 100000000 kbit/s"
        )));
    }
    Ok(())
}

/// Refuses speeds above `parent`'s.
fn within(
    parent: &PlanRow,
    down: i64,
    up: i64,
    bdown: Option<i64>,
    bup: Option<i64>,
) -> Result<()> {
    let over = |field: &str, v: i64, max: i64| {
        if v > max {
            Err(Error::conflict(
                "above_parent_plan",
                format!(
                    "{field}: {v} kbit/s is above the assigned plan '{}' ({max} kbit/s)",
                    parent.name
                ),
            ))
        } else {
            Ok(())
        }
    };
    over("download_kbps", down, parent.download_kbps)?;
    over("upload_kbps", up, parent.upload_kbps)?;
    if let Some(b) = bdown {
        over(
            "burst_download_kbps",
            b,
            parent.burst_download_kbps.unwrap_or(parent.download_kbps),
        )?;
    }
    if let Some(b) = bup {
        over(
            "burst_upload_kbps",
            b,
            parent.burst_upload_kbps.unwrap_or(parent.upload_kbps),
        )?;
    }
    Ok(())
}

pub fn create(
    conn: &Connection,
    owner: &Tenant,
    input: &NewPlan,
    cur: &Currency,
) -> Result<PlanRow> {
    let name = validate_name("name", &input.name, 120)?;
    check_speed("download_kbps", input.download_kbps)?;
    check_speed("upload_kbps", input.upload_kbps)?;
    for (f, v) in [
        ("burst_download_kbps", input.burst_download_kbps),
        ("burst_upload_kbps", input.burst_upload_kbps),
    ] {
        if let Some(v) = v {
            check_speed(f, v)?;
        }
    }
    if input
        .burst_download_kbps
        .is_some_and(|b| b < input.download_kbps)
        || input
            .burst_upload_kbps
            .is_some_and(|b| b < input.upload_kbps)
    {
        return Err(Error::invalid(
            "a burst rate must be at least the plan's rate",
        ));
    }
    if let Some(q) = input.quota_mb
        && q <= 0
    {
        return Err(Error::invalid(
            "quota_mb must be positive (or null for unlimited)",
        ));
    }
    let price = cur.to_minor("price", input.price.0)?;
    if price < 0 {
        return Err(Error::invalid("price must not be negative"));
    }
    let (mut days, mut months) = (input.validity_days, input.validity_months);
    let parent = match (owner.id == OPERATOR_TENANT, input.parent_plan_id) {
        (true, None) => None,
        (true, Some(_)) => {
            return Err(Error::conflict(
                "parent_plan_mismatch",
                "parent_plan_id: the operator's plans have no parent",
            ));
        }
        (false, None) => {
            return Err(Error::conflict(
                "parent_plan_mismatch",
                "parent_plan_id is required: a reseller's plan derives from a plan on its rate card",
            ));
        }
        (false, Some(pid)) => {
            let p = usable_by(conn, owner, pid)?;
            if p.tenant_id == owner.id || p.wholesale.is_none() {
                return Err(Error::conflict(
                    "parent_plan_mismatch",
                    "parent_plan_id must be a plan on your rate card, not your own plan",
                ));
            }
            within(
                &p,
                input.download_kbps,
                input.upload_kbps,
                input.burst_download_kbps,
                input.burst_upload_kbps,
            )?;
            if let (Some(q), Some(pq)) = (input.quota_mb, p.quota_mb)
                && q > pq
            {
                return Err(Error::conflict(
                    "above_parent_plan",
                    format!("quota_mb: {q} is above the assigned plan's {pq}"),
                ));
            }
            // The owner pays per period of the parent plan: the periods must match.
            if days.is_none() && months.is_none() {
                (days, months) = (p.validity_days, p.validity_months);
            } else if (days, months) != (p.validity_days, p.validity_months) {
                return Err(Error::conflict(
                    "validity_mismatch",
                    format!(
                        "validity must match the assigned plan '{}' (its cost is per period)",
                        p.name
                    ),
                ));
            }
            Some(p)
        }
    };
    match (days, months) {
        (Some(d), None) if (1..=3660).contains(&d) => {}
        (None, Some(m)) if (1..=120).contains(&m) => {}
        // Only an operator's plan gets here with neither: a derived plan took its
        // parent's. Whether one is needed depends on the owner, so it is a conflict.
        (None, None) => {
            return Err(Error::conflict(
                "validity_required",
                "an operator's plan needs validity_days or validity_months",
            ));
        }
        _ => {
            return Err(Error::invalid(
                "set exactly one of validity_days (1..=3660) and validity_months (1..=120)",
            ));
        }
    }
    let quota = input.quota_mb.or(parent.as_ref().and_then(|p| p.quota_mb));
    let now = super::now();
    conn.cached_exec(
        "INSERT INTO plans (tenant_id, parent_plan_id, name, download_kbps, upload_kbps, burst_download_kbps,
             burst_upload_kbps, validity_days, validity_months, quota_mb, price, created_at, updated_at, wan_tcp_ports)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13)",
        params![
            owner.id,
            parent.map(|p| p.id),
            name,
            input.download_kbps,
            input.upload_kbps,
            input.burst_download_kbps,
            input.burst_upload_kbps,
            days,
            months,
            quota,
            price,
            now,
            input
                .wan_tcp_ports
                .as_deref()
                .map(crate::wire::tcp_ports_json)
                .transpose()?
        ],
    )?;
    Ok(get(conn, conn.last_insert_rowid())?.expect("just inserted"))
}

/// Plans owned by tenants in scope may be changed (not the cards' plans from above).
pub fn get_owned(conn: &Connection, scope: &Scope, id: i64) -> Result<PlanRow> {
    let select = format!("SELECT {COLS} FROM plans p {NO_CARD}");
    owned_row(conn, scope, &select, "p", id, from_row, "plan")
}

pub fn update(conn: &Connection, plan: &PlanRow, p: &PlanPatch, cur: &Currency) -> Result<PlanRow> {
    let name = p
        .name
        .as_deref()
        .map(|n| validate_name("name", n, 120))
        .transpose()?
        .unwrap_or(plan.name.clone());
    let price = match p.price {
        Some(d) => {
            let m = cur.to_minor("price", d.0)?;
            if m < 0 {
                return Err(Error::invalid("price must not be negative"));
            }
            m
        }
        None => plan.price,
    };
    let down = p.download_kbps.unwrap_or(plan.download_kbps);
    let up = p.upload_kbps.unwrap_or(plan.upload_kbps);
    check_speed("download_kbps", down)?;
    check_speed("upload_kbps", up)?;
    if let Some(pid) = plan.parent_plan_id {
        let parent = get(conn, pid)?.expect("parent exists (foreign key)");
        within(&parent, down, up, None, None)?;
    }
    // Plans derived from this one must stay within it.
    let (max_down, max_up): (Option<i64>, Option<i64>) = conn.cached_row(
        "SELECT max(download_kbps), max(upload_kbps) FROM plans WHERE parent_plan_id = ?1",
        [plan.id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if max_down.is_some_and(|m| m > down) || max_up.is_some_and(|m| m > up) {
        return Err(Error::conflict(
            "derived_plan_faster",
            "a plan derived from this one is faster than the new rate; lower it first",
        ));
    }
    let status = match p.status.unwrap_or(plan.status) {
        PlanStatus::Active => "active",
        PlanStatus::Archived => "archived",
    };
    let ports = match &p.wan_tcp_ports {
        Some(Some(list)) => Some(crate::wire::tcp_ports_json(list)?),
        Some(None) => None,
        None => plan
            .wan_tcp_ports
            .as_deref()
            .map(crate::wire::tcp_ports_json)
            .transpose()?,
    };
    conn.cached_exec(
        "UPDATE plans SET name = ?2, price = ?3, download_kbps = ?4, upload_kbps = ?5, status = ?6, updated_at = ?7,
             wan_tcp_ports = ?8 WHERE id = ?1",
        params![plan.id, name, price, down, up, status, super::now(), ports],
    )?;
    Ok(get(conn, plan.id)?.expect("exists"))
}

/// A rate card entry as its holder (and those above it) see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RateCardEntry {
    pub plan: Plan,
    /// What the card's holder pays per renewal period of this plan.
    #[serde(with = "decimal_str")]
    #[schema(value_type = String, example = "18.00")]
    pub wholesale_price: Decimal,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateCardChange {
    /// A plan owned by the reseller's parent.
    pub plan_id: i64,
    /// The price per period; omit with `remove: true` to take the plan off the card.
    pub wholesale_price: Option<NonNegativeAmount>,
    #[serde(default)]
    pub remove: bool,
}

impl RateCardChange {
    /// Body rules across fields, for the OpenAPI document (see `http::cross_field_rules`):
    /// `remove: true` alone, or a `wholesale_price`.
    pub const SCHEMA_RULES: &str = r#"[
        {"if": {"properties": {"remove": {"const": true}}, "required": ["remove"]},
         "then": {"properties": {"wholesale_price": {"type": "null"}}},
         "else": {"required": ["wholesale_price"], "properties": {"wholesale_price": {"type": "string"}}}}
    ]"#;
}

impl NewPlan {
    /// A plan owned by its creator with these rates and this price per period, and
    /// nothing else: no burst, no quota, no validity (a derived plan inherits its
    /// parent's), the site's WAN-check ports.
    pub fn priced(
        name: &str,
        parent_plan_id: Option<i64>,
        download_kbps: i64,
        upload_kbps: i64,
        price: Decimal,
    ) -> NewPlan {
        NewPlan {
            name: name.into(),
            tenant_id: None,
            parent_plan_id,
            download_kbps,
            upload_kbps,
            burst_download_kbps: None,
            burst_upload_kbps: None,
            validity_days: None,
            validity_months: None,
            quota_mb: None,
            price: NonNegativeAmount(price),
            wan_tcp_ports: None,
        }
    }

    /// Not both of `validity_days` and `validity_months`.
    pub const SCHEMA_RULES: &str = r#"[
        {"not": {"required": ["validity_days", "validity_months"],
                 "properties": {"validity_days": {"type": "integer"}, "validity_months": {"type": "integer"}}}}
    ]"#;
}

pub fn card(conn: &Connection, tenant_id: i64) -> Result<Vec<PlanRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLS} FROM rate_cards rc JOIN plans p ON p.id = rc.plan_id
         WHERE rc.tenant_id = ?1 ORDER BY p.id"
    ))?;
    let rows = stmt.query_map([tenant_id], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Puts a parent's plan on its child's card, or changes its price. Returns the entry.
pub fn set_card(
    conn: &Connection,
    child: &Tenant,
    plan_id: i64,
    wholesale: i64,
) -> Result<PlanRow> {
    let parent_id = child.parent_id.ok_or_else(|| {
        Error::conflict("operator_has_no_parent", "the operator has no rate card")
    })?;
    let plan = get(conn, plan_id)?
        .filter(|p| p.tenant_id == parent_id)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                "plan_unavailable",
                format!(
                    "plan_id: plan {plan_id} is not a plan of '{}''s parent",
                    child.name
                ),
            )
        })?;
    if plan.status != PlanStatus::Active {
        return Err(Error::conflict(
            "plan_unavailable",
            format!("plan '{}' is archived", plan.name),
        ));
    }
    if wholesale < 0 {
        return Err(Error::invalid("wholesale_price must not be negative"));
    }
    let now = super::now();
    conn.cached_exec(
        "INSERT INTO rate_cards (tenant_id, plan_id, wholesale_price, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (tenant_id, plan_id) DO UPDATE SET wholesale_price = excluded.wholesale_price, updated_at = excluded.updated_at",
        params![child.id, plan_id, wholesale, now],
    )?;
    Ok(PlanRow {
        wholesale: Some(wholesale),
        ..plan
    })
}

/// Takes a plan off a card, unless the holder still uses it.
pub fn remove_card(conn: &Connection, child: &Tenant, plan_id: i64) -> Result<PlanRow> {
    let entry = card(conn, child.id)?
        .into_iter()
        .find(|p| p.id == plan_id)
        .ok_or_else(|| Error::not_found("rate card entry"))?;
    let derived: i64 = conn.cached_row(
        "SELECT count(*) FROM plans WHERE parent_plan_id = ?1 AND tenant_id = ?2",
        params![plan_id, child.id],
        |r| r.get(0),
    )?;
    let on_it: i64 = conn.cached_row(
        "SELECT count(*) FROM subscribers WHERE plan_id = ?1 AND tenant_id = ?2",
        params![plan_id, child.id],
        |r| r.get(0),
    )?;
    if derived > 0 || on_it > 0 {
        return Err(Error::conflict(
            "in_use",
            format!(
                "'{}' still has {derived} plan(s) derived from it and {on_it} subscriber(s) on it; archive it instead",
                entry.name
            ),
        ));
    }
    conn.cached_exec(
        "DELETE FROM rate_cards WHERE tenant_id = ?1 AND plan_id = ?2",
        params![child.id, plan_id],
    )?;
    Ok(entry)
}

/// One tenant's charge for a renewal.
#[derive(Debug, Clone)]
pub struct Charge {
    pub tenant: Tenant,
    /// Minor units, positive: what is debited.
    pub amount: i64,
    /// The card plan the price comes from.
    pub plan_id: i64,
}

/// Who pays what when `owner` renews `plan` for `periods`: `owner` pays its card price;
/// in cascade mode every reseller above it pays its own card price too. The operator
/// pays nothing.
pub fn charges(
    conn: &Connection,
    owner: &Tenant,
    plan: &PlanRow,
    periods: i64,
) -> Result<Vec<Charge>> {
    let mut out = Vec::new();
    let mut t = owner.clone();
    let mut p = plan.clone();
    loop {
        if t.id == OPERATOR_TENANT {
            break;
        }
        let source = if p.tenant_id == t.id {
            p.parent_plan_id.ok_or_else(|| {
                Error::conflict(
                    "no_source_plan",
                    format!("plan '{}' has no source plan", p.name),
                )
            })?
        } else {
            p.id
        };
        let wholesale: i64 = conn
            .cached_row(
                "SELECT wholesale_price FROM rate_cards WHERE tenant_id = ?1 AND plan_id = ?2",
                params![t.id, source],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| {
                Error::conflict(
                    "plan_unavailable",
                    format!("the plan is no longer on '{}''s rate card", t.name),
                )
            })?;
        out.push(Charge {
            tenant: t.clone(),
            amount: wholesale * periods,
            plan_id: source,
        });
        if owner.renewal_mode != RenewalMode::Cascade {
            break;
        }
        p = get(conn, source)?.expect("card plan exists (foreign key)");
        t = tenant::get(conn, t.parent_id.expect("a reseller has a parent"))?
            .expect("parent exists");
    }
    Ok(out)
}
