//! The reseller tree. The operator is tenant 1 (the root); resellers and sub-resellers
//! hang below it. `path` ('/1/4/9/') makes subtree queries one indexed GLOB.

use super::Cached;
use ipnet::IpNet;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::paging::list_filter;
use super::{Filter, Paging};
use crate::error::{Error, Result};
use crate::money::{Currency, NonNegativeAmount, decimal_str};
use crate::scope::{OPERATOR_TENANT, Scope};
use rust_decimal::Decimal;

/// Largest value any limit accepts.
pub const LIMIT_MAX: i64 = 10_000_000;

/// Caps on what a reseller may hold, counted over its whole subtree (sub-resellers'
/// subscribers count toward their parents' limits), except managers, which are counted
/// per tenant. `null` = unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[schema(minimum = 0, maximum = 10000000)]
    pub max_subscribers: Option<i64>,
    #[schema(minimum = 0, maximum = 10000000)]
    pub max_sub_resellers: Option<i64>,
    #[schema(minimum = 0, maximum = 10000000)]
    pub max_managers: Option<i64>,
    #[schema(minimum = 0, maximum = 10000000)]
    pub max_sites: Option<i64>,
}

/// What a reseller currently holds, to show against its limits.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub subscribers: i64,
    pub sub_resellers: i64,
    pub managers: i64,
    pub sites: i64,
}

/// A reseller (or sub-reseller) as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Reseller {
    pub id: i64,
    pub parent_id: Option<i64>,
    /// 0 = the operator, 1 = reseller, 2 = sub-reseller, …
    pub depth: i64,
    pub name: String,
    pub status: TenantStatus,
    /// CIDR blocks its users (and its descendants' users) may log in from; empty = any.
    pub allowed_ips: Vec<String>,
    pub rebrand_enabled: bool,
    /// The host name the reseller's panel answers on, e.g. `panel.example.net`.
    pub custom_domain: Option<String>,
    pub wan_check_enabled: bool,
    pub limits: Limits,
    /// Prepaid balance with its parent (the operator's is not tracked: it creates money).
    #[serde(with = "decimal_str")]
    #[schema(value_type = String, example = "120.00")]
    pub balance: Decimal,
    /// How far below zero the balance may go.
    #[serde(with = "decimal_str")]
    #[schema(value_type = String, example = "50.00")]
    pub credit_limit: Decimal,
    pub renewal_mode: RenewalMode,
    /// Present on single reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    pub created_at: String,
    pub updated_at: String,
}

/// Who pays when a sub-reseller renews a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RenewalMode {
    /// Only the sub-reseller pays; its parent sells it balance up front.
    Independent,
    /// Every reseller above it is also debited its own wholesale cost, in the same transaction.
    Cascade,
}

impl RenewalMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RenewalMode::Independent => "independent",
            RenewalMode::Cascade => "cascade",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Disabled,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Disabled => "disabled",
        }
    }
    fn parse(s: &str) -> TenantStatus {
        if s == "active" {
            TenantStatus::Active
        } else {
            TenantStatus::Disabled
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReseller {
    #[schema(value_type = crate::wire::Name)]
    pub name: String,
    /// The parent tenant; defaults to the caller's own tenant.
    pub parent_id: Option<i64>,
    /// Address blocks its users may log in from; empty = any. At most 256.
    #[serde(default)]
    #[schema(value_type = Vec<crate::wire::IpBlock>, max_items = 256)]
    pub allowed_ips: Vec<String>,
    #[serde(default)]
    pub rebrand_enabled: bool,
    /// The host name the reseller's panel answers on, e.g. `panel.example.net`.
    #[schema(
        max_length = 253,
        pattern = r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$"
    )]
    pub custom_domain: Option<String>,
    #[serde(default)]
    pub wan_check_enabled: bool,
    #[serde(default)]
    pub limits: Limits,
}

impl NewReseller {
    /// A reseller named `name` under `parent`, with nothing else set: no address limits,
    /// no rebranding, no custom domain, no WAN checks, no limits. Fixtures and seeds start
    /// from this and set what they need.
    pub fn named(name: &str, parent: &Tenant) -> NewReseller {
        NewReseller {
            name: name.into(),
            parent_id: Some(parent.id),
            allowed_ips: vec![],
            rebrand_enabled: false,
            custom_domain: None,
            wan_check_enabled: false,
            limits: Limits::default(),
        }
    }
}

/// Deserializes a present field (even `null`) as `Some(…)`, so PATCH can tell
/// "set to null" from "leave alone".
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResellerPatch {
    #[schema(value_type = Option<crate::wire::Name>)]
    pub name: Option<String>,
    pub status: Option<TenantStatus>,
    /// Replaces the address blocks whole; empty = any. At most 256.
    #[schema(value_type = Option<Vec<crate::wire::IpBlock>>, max_items = 256)]
    pub allowed_ips: Option<Vec<String>>,
    pub rebrand_enabled: Option<bool>,
    /// A host name, or null to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 253, pattern = r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$")]
    pub custom_domain: Option<Option<String>>,
    pub wan_check_enabled: Option<bool>,
    /// Replaces the limits whole.
    pub limits: Option<Limits>,
    /// How far below zero the balance may go.
    pub credit_limit: Option<NonNegativeAmount>,
    pub renewal_mode: Option<RenewalMode>,
}

/// A tenant row as the server uses it.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: i64,
    pub parent_id: Option<i64>,
    pub path: String,
    pub depth: i64,
    pub name: String,
    pub status: TenantStatus,
    pub allowed_ips: Vec<IpNet>,
    pub rebrand_enabled: bool,
    pub custom_domain: Option<String>,
    pub wan_check_enabled: bool,
    pub limits: Limits,
    /// Minor units.
    pub balance: i64,
    pub credit_limit: i64,
    pub renewal_mode: RenewalMode,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLS: &str =
    "t.id, t.parent_id, t.path, t.depth, t.name, t.status, t.allowed_ips, t.rebrand_enabled,
    t.custom_domain, t.wan_check_enabled, t.max_subscribers, t.max_sub_resellers, t.max_managers,
    t.max_sites, t.created_at, t.updated_at, t.balance, t.credit_limit, t.renewal_mode";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Tenant> {
    let ips: String = r.get(6)?;
    Ok(Tenant {
        id: r.get(0)?,
        parent_id: r.get(1)?,
        path: r.get(2)?,
        depth: r.get(3)?,
        name: r.get(4)?,
        status: TenantStatus::parse(&r.get::<_, String>(5)?),
        allowed_ips: serde_json::from_str(&ips).unwrap_or_default(),
        rebrand_enabled: r.get(7)?,
        custom_domain: r.get(8)?,
        wan_check_enabled: r.get(9)?,
        limits: Limits {
            max_subscribers: r.get(10)?,
            max_sub_resellers: r.get(11)?,
            max_managers: r.get(12)?,
            max_sites: r.get(13)?,
        },
        created_at: r.get(14)?,
        updated_at: r.get(15)?,
        balance: r.get(16)?,
        credit_limit: r.get(17)?,
        renewal_mode: if r.get::<_, String>(18)? == "cascade" {
            RenewalMode::Cascade
        } else {
            RenewalMode::Independent
        },
    })
}

impl Tenant {
    pub fn view(&self, usage: Option<Usage>, cur: &Currency) -> Reseller {
        Reseller {
            id: self.id,
            parent_id: self.parent_id,
            depth: self.depth,
            name: self.name.clone(),
            status: self.status,
            allowed_ips: self.allowed_ips.iter().map(|n| n.to_string()).collect(),
            rebrand_enabled: self.rebrand_enabled,
            custom_domain: self.custom_domain.clone(),
            wan_check_enabled: self.wan_check_enabled,
            limits: self.limits.clone(),
            balance: cur.from_minor(self.balance),
            credit_limit: cur.from_minor(self.credit_limit),
            renewal_mode: self.renewal_mode,
            usage,
            created_at: super::rfc3339(self.created_at),
            updated_at: super::rfc3339(self.updated_at),
        }
    }
}

/// Any tenant by id, unscoped: for server-side checks only, never for answering reads.
pub fn get(conn: &Connection, id: i64) -> Result<Option<Tenant>> {
    Ok(conn
        .cached_row(
            &format!("SELECT {COLS} FROM tenants t WHERE t.id = ?"),
            [id],
            from_row,
        )
        .optional()?)
}

/// The tenant and its ancestors, root first.
pub fn chain(conn: &Connection, path: &str) -> Result<Vec<Tenant>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM tenants t WHERE ?1 GLOB t.path || '*' ORDER BY t.depth"
    ))?;
    let rows = stmt.query_map([path], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A reseller record the actor may read: those it manages, plus its own tenant.
pub fn get_visible(conn: &Connection, scope: &Scope, id: i64) -> Result<Tenant> {
    let (pred, mut args) = scope.manages_tenant("t");
    args.push(SqlValue::Integer(scope.tenant_id()));
    args.push(SqlValue::Integer(id));
    conn.cached_row(
        &format!("SELECT {COLS} FROM tenants t WHERE ({pred} OR t.id = ?) AND t.id = ?"),
        rusqlite::params_from_iter(args),
        from_row,
    )
    .optional()?
    .ok_or_else(|| Error::not_found("reseller"))
}

/// A tenant whose own rows (ledger, renewals, revenue) the actor may read, with the scope
/// over them. 404 for anything else, including a manager's child tenants: see
/// [`Scope::narrowed_to`].
pub fn rows_scope(conn: &Connection, scope: &Scope, id: i64) -> Result<(Tenant, Scope)> {
    get(conn, id)?
        .and_then(|t| scope.narrowed_to(t.id, &t.path).map(|s| (t, s)))
        .ok_or_else(|| Error::not_found("reseller"))
}

/// A reseller record the actor may change: strictly below it (a manager: its tenant's children).
pub fn get_managed(conn: &Connection, scope: &Scope, id: i64) -> Result<Tenant> {
    let (pred, mut args) = scope.manages_tenant("t");
    args.push(SqlValue::Integer(id));
    conn.cached_row(
        &format!("SELECT {COLS} FROM tenants t WHERE {pred} AND t.id = ?"),
        rusqlite::params_from_iter(args),
        from_row,
    )
    .optional()?
    .ok_or_else(|| Error::not_found("reseller"))
}

list_filter! {
    pub struct ResellerFilter {
        /// Name contains (case-insensitive).
        pub q: Option<String>,
        /// Only the direct children of this tenant.
        pub parent_id: Option<i64>,
        pub status: Option<TenantStatus>,
    }
}

pub fn list(
    conn: &Connection,
    scope: &Scope,
    f: &ResellerFilter,
    paging: Paging,
) -> Result<Vec<Tenant>> {
    let (pred, args) = scope.manages_tenant("t");
    let mut w = Filter::new(pred, args);
    w.search(&["t.name"], f.q.as_deref())
        .and_opt("t.parent_id = ?", f.parent_id)
        .and_opt("t.status = ?", f.status.map(|s| s.as_str().to_string()));
    let select = format!("SELECT {COLS} FROM tenants t");
    w.page(conn, &select, "t.id", paging, from_row)
}

pub fn usage(conn: &Connection, t: &Tenant) -> Result<Usage> {
    let glob = format!("{}*", t.path);
    let sub = "SELECT id FROM tenants WHERE path GLOB ?1";
    Ok(Usage {
        subscribers: conn.cached_row(
            &format!("SELECT count(*) FROM subscribers WHERE tenant_id IN ({sub})"),
            [&glob],
            |r| r.get(0),
        )?,
        sub_resellers: conn.cached_row(
            "SELECT count(*) - 1 FROM tenants WHERE path GLOB ?1",
            [&glob],
            |r| r.get(0),
        )?,
        managers: conn.cached_row(
            "SELECT count(*) FROM users WHERE tenant_id = ?1 AND kind = 'manager'",
            [t.id],
            |r| r.get(0),
        )?,
        sites: conn.cached_row(
            &format!("SELECT count(*) FROM sites WHERE tenant_id IN ({sub})"),
            [&glob],
            |r| r.get(0),
        )?,
    })
}

/// What a limit counts.
#[derive(Debug, Clone, Copy)]
pub enum Counted {
    Subscribers,
    SubResellers,
    Managers,
    Sites,
}

impl Counted {
    fn noun(self) -> &'static str {
        match self {
            Counted::Subscribers => "subscribers",
            Counted::SubResellers => "sub-resellers",
            Counted::Managers => "managers",
            Counted::Sites => "sites",
        }
    }
    fn limit(self, l: &Limits) -> Option<i64> {
        match self {
            Counted::Subscribers => l.max_subscribers,
            Counted::SubResellers => l.max_sub_resellers,
            Counted::Managers => l.max_managers,
            Counted::Sites => l.max_sites,
        }
    }
    fn current(self, u: &Usage) -> i64 {
        match self {
            Counted::Subscribers => u.subscribers,
            Counted::SubResellers => u.sub_resellers,
            Counted::Managers => u.managers,
            Counted::Sites => u.sites,
        }
    }
}

/// Refuses a change that would put any limited tenant in `owner`'s chain over its limit.
/// `added(tenant)` says how many counted rows the change adds to that tenant's count
/// (for a move, rows already inside that tenant's subtree add nothing).
pub fn check_capacity(
    conn: &Connection,
    owner: &Tenant,
    what: Counted,
    mut added: impl FnMut(&Tenant) -> Result<i64>,
) -> Result<()> {
    let chain = match what {
        // Managers belong to one tenant; their limit is that tenant's alone.
        Counted::Managers => vec![owner.clone()],
        _ => chain(conn, &owner.path)?,
    };
    for t in chain.iter().filter(|t| t.id != OPERATOR_TENANT) {
        let Some(max) = what.limit(&t.limits) else {
            continue;
        };
        let add = added(t)?;
        if add == 0 {
            continue;
        }
        let now = what.current(&usage(conn, t)?);
        if now + add > max {
            let scope = match what {
                Counted::Managers => "",
                _ => " (counting its sub-resellers)",
            };
            return Err(Error::conflict(
                "limit_reached",
                format!(
                    "reseller '{}' has reached its limit of {max} {}{scope}: it holds {now}, this would add {add}",
                    t.name,
                    what.noun()
                ),
            ));
        }
    }
    Ok(())
}

/// A name as the schema declares it: at most `max` characters as written, at least one
/// of them not a space, none a control character. Stored without the spaces around it.
pub fn validate_name(field: &str, s: &str, max: usize) -> Result<String> {
    let t = s.trim();
    if t.is_empty() || s.chars().count() > max {
        return Err(Error::invalid(format!(
            "{field} must be 1 to {max} characters"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(t.to_string())
}

/// Parses CIDR blocks (a bare address means just that host), keeping the network part.
pub fn parse_allowed_ips(items: &[String]) -> Result<Vec<IpNet>> {
    if items.len() > 256 {
        return Err(Error::invalid("allowed_ips holds at most 256 blocks"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            crate::wire::parse_ip_block(s)
                .ok_or(())
                .map_err(|_| {
                    Error::invalid(format!(
                        "allowed_ips[{i}]: '{s}' is not an IP address or CIDR block (for example 203.0.113.0/24)"
                    ))
                })
        })
        .collect()
}

pub fn validate_domain(s: &str) -> Result<String> {
    if s.len() > 253 {
        return Err(Error::invalid(format!(
            "custom_domain: '{s}' is longer than a host name may be"
        )));
    }
    let d = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if d.len() > 253 || !d.contains('.') || !d.split('.').all(ok_label) {
        return Err(Error::invalid(format!(
            "custom_domain: '{s}' is not a host name (for example panel.example.net)"
        )));
    }
    Ok(d)
}

pub fn validate_limits(l: &Limits) -> Result<()> {
    for (name, v) in [
        ("max_subscribers", l.max_subscribers),
        ("max_sub_resellers", l.max_sub_resellers),
        ("max_managers", l.max_managers),
        ("max_sites", l.max_sites),
    ] {
        if let Some(v) = v
            && !(0..=LIMIT_MAX).contains(&v)
        {
            return Err(Error::invalid(format!(
                "limits.{name} must be between 0 and {LIMIT_MAX}, or null for unlimited (got {v})"
            )));
        }
    }
    Ok(())
}

/// A child may only have features its parent has (the operator has all of them).
fn check_features(parent: &Tenant, rebrand: bool, wan_check: bool) -> Result<()> {
    if parent.id == OPERATOR_TENANT {
        return Ok(());
    }
    // What the parent holds is stored state: a conflict, not a malformed request.
    if rebrand && !parent.rebrand_enabled {
        return Err(Error::conflict(
            "feature_not_held",
            format!(
                "rebrand_enabled: '{}' does not have rebranding, so it cannot grant it",
                parent.name
            ),
        ));
    }
    if wan_check && !parent.wan_check_enabled {
        return Err(Error::conflict(
            "feature_not_held",
            format!(
                "wan_check_enabled: '{}' does not have WAN checks, so it cannot grant them",
                parent.name
            ),
        ));
    }
    Ok(())
}

pub fn create(
    conn: &Connection,
    parent: &Tenant,
    input: &NewReseller,
    max_depth: u32,
) -> Result<Tenant> {
    let name = validate_name("name", &input.name, 120)?;
    let ips = parse_allowed_ips(&input.allowed_ips)?;
    let domain = input
        .custom_domain
        .as_deref()
        .map(validate_domain)
        .transpose()?;
    validate_limits(&input.limits)?;
    if parent.depth + 1 > max_depth as i64 {
        return Err(Error::unprocessable(
            "depth_exceeded",
            format!(
                "this installation allows {max_depth} level(s) of resellers below the operator; \
                 '{}' is at the deepest level and cannot have sub-resellers",
                parent.name
            ),
        ));
    }
    check_features(parent, input.rebrand_enabled, input.wan_check_enabled)?;
    check_capacity(conn, parent, Counted::SubResellers, |_| Ok(1))?;
    let id: i64 = conn.cached_row("SELECT coalesce(max(id), 0) + 1 FROM tenants", [], |r| {
        r.get(0)
    })?;
    let now = super::now();
    conn.cached_exec(
        "INSERT INTO tenants (id, parent_id, path, depth, name, allowed_ips, rebrand_enabled, custom_domain,
             wan_check_enabled, max_subscribers, max_sub_resellers, max_managers, max_sites, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)",
        params![
            id,
            parent.id,
            format!("{}{id}/", parent.path),
            parent.depth + 1,
            name,
            serde_json::to_string(&ips).expect("cidrs serialize"),
            input.rebrand_enabled,
            domain,
            input.wan_check_enabled,
            input.limits.max_subscribers,
            input.limits.max_sub_resellers,
            input.limits.max_managers,
            input.limits.max_sites,
            now
        ],
    )?;
    Ok(get(conn, id)?.expect("just inserted"))
}

pub fn update(conn: &Connection, t: &Tenant, p: &ResellerPatch, cur: &Currency) -> Result<Tenant> {
    let mut next = t.clone();
    if let Some(n) = &p.name {
        next.name = validate_name("name", n, 120)?;
    }
    if let Some(s) = p.status {
        next.status = s;
    }
    if let Some(ips) = &p.allowed_ips {
        next.allowed_ips = parse_allowed_ips(ips)?;
    }
    if let Some(r) = p.rebrand_enabled {
        next.rebrand_enabled = r;
    }
    if let Some(d) = &p.custom_domain {
        next.custom_domain = d.as_deref().map(validate_domain).transpose()?;
    }
    if let Some(w) = p.wan_check_enabled {
        next.wan_check_enabled = w;
    }
    if let Some(l) = &p.limits {
        validate_limits(l)?;
        next.limits = l.clone();
    }
    if let Some(c) = p.credit_limit {
        next.credit_limit = cur.to_minor("credit_limit", c.0)?;
        if next.credit_limit < 0 {
            return Err(Error::invalid(
                "credit_limit must not be negative: it is how far below zero the balance may go",
            ));
        }
    }
    if let Some(m) = p.renewal_mode {
        next.renewal_mode = m;
    }
    if let Some(parent_id) = t.parent_id {
        let parent = get(conn, parent_id)?.expect("parent exists (foreign key)");
        // Only newly granted features are checked, so a parent losing a feature does
        // not block unrelated edits of its children.
        check_features(
            &parent,
            next.rebrand_enabled && !t.rebrand_enabled,
            next.wan_check_enabled && !t.wan_check_enabled,
        )?;
    }
    conn.cached_exec(
        "UPDATE tenants SET name = ?2, status = ?3, allowed_ips = ?4, rebrand_enabled = ?5, custom_domain = ?6,
             wan_check_enabled = ?7, max_subscribers = ?8, max_sub_resellers = ?9, max_managers = ?10,
             max_sites = ?11, updated_at = ?12, credit_limit = ?13, renewal_mode = ?14 WHERE id = ?1",
        params![
            t.id,
            next.name,
            next.status.as_str(),
            serde_json::to_string(&next.allowed_ips).expect("cidrs serialize"),
            next.rebrand_enabled,
            next.custom_domain,
            next.wan_check_enabled,
            next.limits.max_subscribers,
            next.limits.max_sub_resellers,
            next.limits.max_managers,
            next.limits.max_sites,
            super::now(),
            next.credit_limit,
            next.renewal_mode.as_str()
        ],
    )?;
    Ok(get(conn, t.id)?.expect("exists"))
}

/// Resolves the tenant that will own a row the actor creates or moves.
///
/// The rule: only inside the actor's own subtree (a manager: only its own tenant). The
/// operator may use any tenant; a reseller itself or any descendant; a sub-reseller with
/// no descendants only itself. Anything else, including ids that do not exist, is the
/// same 403, recorded as a security event.
pub fn assignable(
    conn: &Connection,
    actor: &crate::scope::Actor,
    tenant_id: Option<i64>,
    action: &str,
) -> Result<Tenant> {
    let id = tenant_id.unwrap_or(actor.tenant_id);
    let scope = actor.scope();
    match get(conn, id)? {
        Some(t) if scope.may_assign_to(t.id, &t.path) => Ok(t),
        _ => Err(Error::forbidden(
            "tenant_out_of_scope",
            format!("tenant {id} is outside your part of the reseller tree"),
        )
        .with_security(super::audit::SecurityEvent::new(
            actor,
            "security.tenant_out_of_scope",
            serde_json::json!({ "attempted": action, "tenant_id": id }),
        ))),
    }
}

/// What stands in the way of deleting a tenant: everything its subtree still holds.
/// Empty when it may go.
pub fn holdings(conn: &Connection, t: &Tenant) -> Result<Vec<String>> {
    let glob = format!("{}*", t.path);
    let count = |sql: &str| -> Result<i64> { Ok(conn.query_row(sql, [&glob], |r| r.get(0))?) };
    let sub = "(SELECT id FROM tenants WHERE path GLOB ?1)";
    let mut held = Vec::new();
    let n = count(&format!(
        "SELECT count(*) FROM subscribers WHERE tenant_id IN {sub}"
    ))?;
    if n > 0 {
        held.push(format!(
            "{n} subscriber(s): move them to another reseller first"
        ));
    }
    let balance = count("SELECT count(*) FROM tenants WHERE path GLOB ?1 AND balance <> 0")?;
    let ledger = count(&format!(
        "SELECT count(*) FROM ledger WHERE tenant_id IN {sub}"
    ))?;
    if balance > 0 || ledger > 0 {
        held.push(format!(
            "money: {ledger} ledger entr(y/ies){}; the ledger is kept for ever, so a reseller with \
             money history is disabled, not deleted",
            if balance > 0 {
                " and a balance that is not zero"
            } else {
                ""
            }
        ));
    }
    for (what, sql) in [
        (
            "sub-reseller(s)",
            "SELECT count(*) FROM tenants WHERE path GLOB ?1".to_string(),
        ),
        (
            "site(s)",
            format!("SELECT count(*) FROM sites WHERE tenant_id IN {sub}"),
        ),
        (
            "plan(s)",
            format!("SELECT count(*) FROM plans WHERE tenant_id IN {sub}"),
        ),
        (
            "renewal(s)",
            format!("SELECT count(*) FROM renewals WHERE tenant_id IN {sub}"),
        ),
        (
            "restore(s)",
            format!("SELECT count(*) FROM reseller_restores WHERE tenant_id IN {sub}"),
        ),
    ] {
        // The tenant itself is one of the subtree's tenants.
        let n = count(&sql)? - i64::from(what == "sub-reseller(s)");
        if n > 0 {
            held.push(format!("{n} {what}"));
        }
    }
    Ok(held)
}

/// Deletes an empty tenant (see [`holdings`]) with its staff, their sessions and API
/// tokens, and its rate card. Refuses one that holds anything: nothing is orphaned.
pub fn delete(conn: &Connection, t: &Tenant) -> Result<()> {
    let held = holdings(conn, t)?;
    if !held.is_empty() {
        return Err(Error::conflict(
            "reseller_not_empty",
            format!("reseller '{}' still holds {}", t.name, held.join("; ")),
        ));
    }
    let users = "(SELECT id FROM users WHERE tenant_id = ?1)";
    for sql in [
        format!("DELETE FROM sessions WHERE user_id IN {users} OR impersonator_id IN {users}"),
        format!("DELETE FROM api_tokens WHERE user_id IN {users}"),
        format!(
            "UPDATE users SET created_by = NULL WHERE created_by IN {users} AND tenant_id <> ?1"
        ),
        format!("UPDATE enrollment_tokens SET created_by = NULL WHERE created_by IN {users}"),
        "UPDATE users SET created_by = NULL WHERE tenant_id = ?1".to_string(),
        "DELETE FROM users WHERE tenant_id = ?1".to_string(),
        "DELETE FROM rate_cards WHERE tenant_id = ?1".to_string(),
        "DELETE FROM subscriber_status_days WHERE tenant_id = ?1".to_string(),
        "DELETE FROM tenants WHERE id = ?1".to_string(),
    ] {
        conn.execute(&sql, [t.id])?;
    }
    Ok(())
}
