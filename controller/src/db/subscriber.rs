//! Subscribers: the PPPoE / hotspot / IPoE customers, each owned by one tenant.

use std::net::Ipv4Addr;

use super::Cached;
use rusqlite::{Connection, Row, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::paging::list_filter;
use super::row::owned_row;
use super::tenant::{self, Counted, Tenant, present};
use super::{Filter, Paging};
use crate::crypto::SecretBox;
use crate::error::{Error, Result};
use crate::scope::Scope;

/// One status for one thing: the controller stores, serves and feeds the protocol's.
pub use outpost_protocol::SubscriberStatus;

impl NewSubscriber {
    /// A subscriber `username` with PPP password `password` and nothing else set: no
    /// site, plan, expiry or contact details. Seeds, fixtures and benchmarks start from
    /// this and set what they need.
    pub fn named(username: impl Into<String>, password: impl Into<String>) -> NewSubscriber {
        NewSubscriber {
            username: username.into(),
            password: password.into(),
            tenant_id: None,
            site_id: None,
            status: None,
            expires_at: None,
            plan_id: None,
            auto_renew: false,
            max_sessions: None,
            static_ipv4: None,
            mac: None,
            wan_check_exempt: false,
            wan_tcp_ports: None,
            name: String::new(),
            phone: String::new(),
            email: String::new(),
            notes: String::new(),
        }
    }

    /// Body rules across fields, for the OpenAPI document (see `http::cross_field_rules`):
    /// `auto_renew: true` needs a `plan_id`; a `static_ipv4` needs a `site_id`.
    pub const SCHEMA_RULES: &str = r#"[
        {"if": {"properties": {"auto_renew": {"const": true}}, "required": ["auto_renew"]},
         "then": {"required": ["plan_id"], "properties": {"plan_id": {"type": "integer"}}}},
        {"if": {"properties": {"static_ipv4": {"type": "string"}}, "required": ["static_ipv4"]},
         "then": {"required": ["site_id"], "properties": {"site_id": {"type": "integer"}}}}
    ]"#;
}

impl BulkRequest {
    /// `tenant_id` with `set_reseller`, and only with it.
    pub const SCHEMA_RULES: &str = r#"[
        {"if": {"properties": {"action": {"const": "set_reseller"}}, "required": ["action"]},
         "then": {"required": ["tenant_id"], "properties": {"tenant_id": {"type": "integer"}}},
         "else": {"properties": {"tenant_id": {"type": "null"}}}}
    ]"#;
}

/// The statuses a request may set: `expired` is the system's to set.
pub struct SubscriberStatusInput;

impl utoipa::PartialSchema for SubscriberStatusInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(["active", "suspended", "disabled"]))
            .description(Some(
                "`expired` is set by the system when a subscriber runs out",
            ))
            .into()
    }
}
impl utoipa::ToSchema for SubscriberStatusInput {}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Subscriber {
    pub id: i64,
    pub tenant_id: i64,
    pub site_id: Option<i64>,
    /// The PPPoE / RADIUS login, unique in the installation.
    pub username: String,
    /// The PPP password: only in single reads, and only for someone who may edit customers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub status: SubscriberStatus,
    /// RFC 3339, or null for no expiry.
    pub expires_at: Option<String>,
    pub plan_id: Option<i64>,
    /// Renew automatically at expiry when the balance allows.
    pub auto_renew: bool,
    /// Sessions allowed online at once (1..=16).
    pub max_sessions: i64,
    #[schema(value_type = Option<String>)]
    pub static_ipv4: Option<Ipv4Addr>,
    /// Bound Calling-Station-Id, as `AA:BB:CC:DD:EE:FF`.
    pub mac: Option<String>,
    /// "Never probe": the site's WAN checks leave this subscriber's CPE alone.
    pub wan_check_exempt: bool,
    /// TCP ports the WAN checks probe on its CPE (`[]`: ICMP only), before its plan's and
    /// the site's; null: its plan's, else the site's.
    pub wan_tcp_ports: Option<Vec<u16>>,
    pub name: String,
    pub phone: String,
    pub email: String,
    pub notes: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscriber {
    #[schema(pattern = r"^[A-Za-z0-9._@+-]{1,64}$")]
    pub username: String,
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub password: String,
    /// Owning tenant; defaults to the caller's.
    pub tenant_id: Option<i64>,
    pub site_id: Option<i64>,
    #[schema(value_type = Option<SubscriberStatusInput>)]
    pub status: Option<SubscriberStatus>,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// One of the owner's plans or a plan on its rate card.
    pub plan_id: Option<i64>,
    #[serde(default)]
    pub auto_renew: bool,
    /// Sessions allowed online at once (1..=16, default 1).
    #[schema(minimum = 1, maximum = 16)]
    pub max_sessions: Option<i64>,
    #[schema(value_type = Option<crate::wire::SubscriberIpv4>)]
    pub static_ipv4: Option<String>,
    #[schema(value_type = Option<String>, pattern = r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$|^[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}$")]
    pub mac: Option<String>,
    /// "Never probe" by the site's WAN checks (default false).
    #[serde(default)]
    pub wan_check_exempt: bool,
    /// TCP ports the WAN checks probe on its CPE (`[]`: ICMP only); omit for its plan's,
    /// else the site's.
    #[serde(default)]
    #[schema(value_type = Option<Vec<crate::wire::TcpPort>>, max_items = 16)]
    pub wan_tcp_ports: Option<Vec<u16>>,
    #[serde(default)]
    #[schema(
        max_length = 200,
        pattern = r"^[^\u0000-\u0009\u000B-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    #[serde(default)]
    #[schema(
        max_length = 40,
        pattern = r"^[^\u0000-\u0009\u000B-\u001F\u007F-\u009F]*$"
    )]
    pub phone: String,
    #[serde(default)]
    #[schema(
        max_length = 254,
        pattern = r"^[^\u0000-\u0009\u000B-\u001F\u007F-\u009F]*$"
    )]
    pub email: String,
    #[serde(default)]
    #[schema(
        max_length = 4000,
        pattern = r"^[^\u0000-\u0009\u000B-\u001F\u007F-\u009F]*$"
    )]
    pub notes: String,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriberPatch {
    #[schema(pattern = r"^[A-Za-z0-9._@+-]{1,64}$")]
    pub username: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub password: Option<String>,
    /// Moves the subscriber to another tenant inside your subtree.
    pub tenant_id: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub site_id: Option<Option<i64>>,
    /// Needs the suspend/reconnect permission.
    #[schema(value_type = Option<SubscriberStatusInput>)]
    pub status: Option<SubscriberStatus>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub plan_id: Option<Option<i64>>,
    pub auto_renew: Option<bool>,
    #[schema(minimum = 1, maximum = 16)]
    pub max_sessions: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<crate::wire::SubscriberIpv4>)]
    pub static_ipv4: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, pattern = r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$|^[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}$")]
    pub mac: Option<Option<String>>,
    /// "Never probe" by the site's WAN checks.
    pub wan_check_exempt: Option<bool>,
    /// Replaces its own WAN-check ports; null goes back to its plan's, else the site's.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<crate::wire::TcpPort>>, max_items = 16)]
    pub wan_tcp_ports: Option<Option<Vec<u16>>>,
    #[schema(
        max_length = 200,
        pattern = r"^[^\u0000-\u0009\u000B-\u001F\u007F-\u009F]*$"
    )]
    pub name: Option<String>,
    #[schema(
        max_length = 40,
        pattern = r"^[^\u0000-\u0009\u000B-\u001F\u007F-\u009F]*$"
    )]
    pub phone: Option<String>,
    #[schema(
        max_length = 254,
        pattern = r"^[^\u0000-\u0009\u000B-\u001F\u007F-\u009F]*$"
    )]
    pub email: Option<String>,
    #[schema(
        max_length = 4000,
        pattern = r"^[^\u0000-\u0009\u000B-\u001F\u007F-\u009F]*$"
    )]
    pub notes: Option<String>,
}

impl SubscriberPatch {
    /// Whether the patch changes anything besides the status.
    pub fn edits_fields(&self) -> bool {
        self.username.is_some()
            || self.password.is_some()
            || self.tenant_id.is_some()
            || self.site_id.is_some()
            || self.expires_at.is_some()
            || self.plan_id.is_some()
            || self.auto_renew.is_some()
            || self.max_sessions.is_some()
            || self.static_ipv4.is_some()
            || self.mac.is_some()
            || self.wan_check_exempt.is_some()
            || self.wan_tcp_ports.is_some()
            || self.name.is_some()
            || self.phone.is_some()
            || self.email.is_some()
            || self.notes.is_some()
    }
}

/// A stored subscriber with its sealed password.
#[derive(Debug, Clone)]
pub struct SubscriberRow {
    pub sub: Subscriber,
    pub tenant_path: String,
    pub expires_at: Option<i64>,
    pub password_sealed: Vec<u8>,
}

const COLS: &str =
    "s.id, s.tenant_id, s.site_id, s.username, s.status, s.expires_at, s.static_ipv4, s.mac,
    s.name, s.phone, s.email, s.notes, s.created_at, s.updated_at, s.password_sealed, t.path, s.plan_id, s.auto_renew, s.max_sessions,
    s.wan_check_exempt, s.wan_tcp_ports";

fn from_row(r: &Row<'_>) -> rusqlite::Result<SubscriberRow> {
    let expires: Option<i64> = r.get(5)?;
    let ip: Option<String> = r.get(6)?;
    Ok(SubscriberRow {
        sub: Subscriber {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            site_id: r.get(2)?,
            username: r.get(3)?,
            password: None,
            status: SubscriberStatus::parse(&r.get::<_, String>(4)?),
            expires_at: expires.map(super::rfc3339),
            plan_id: r.get(16)?,
            auto_renew: r.get(17)?,
            max_sessions: r.get(18)?,
            static_ipv4: ip.and_then(|s| s.parse().ok()),
            mac: r.get(7)?,
            wan_check_exempt: r.get(19)?,
            wan_tcp_ports: crate::wire::tcp_ports_read(r.get(20)?),
            name: r.get(8)?,
            phone: r.get(9)?,
            email: r.get(10)?,
            notes: r.get(11)?,
            created_at: super::rfc3339(r.get(12)?),
            updated_at: super::rfc3339(r.get(13)?),
        },
        expires_at: expires,
        password_sealed: r.get(14)?,
        tenant_path: r.get(15)?,
    })
}

impl SubscriberRow {
    /// The API view; the password is opened only when asked for.
    pub fn view(&self, secrets: Option<&SecretBox>) -> Result<Subscriber> {
        let mut s = self.sub.clone();
        if let Some(b) = secrets {
            s.password = Some(
                b.open(&self.password_sealed)
                    .map_err(|e| Error::internal(&e))?,
            );
        }
        Ok(s)
    }
}

pub fn get_visible(conn: &Connection, scope: &Scope, id: i64) -> Result<SubscriberRow> {
    let select = format!("SELECT {COLS} FROM subscribers s JOIN tenants t ON t.id = s.tenant_id");
    owned_row(conn, scope, &select, "s", id, from_row, "subscriber")
}

list_filter! {
    pub struct SubscriberFilter {
        /// Username, name, phone, email, MAC or static IPv4 contains (case-insensitive).
        pub q: Option<String>,
        pub status: Option<SubscriberStatus>,
        pub tenant_id: Option<i64>,
        pub site_id: Option<i64>,
        pub plan_id: Option<i64>,
        /// Only active subscribers whose expiry falls within this many days from now
        /// (0: those already past it that the expiry sweep has not reached yet).
        #[param(minimum = 0, maximum = 366)]
        pub expiring_days: Option<u32>,
    }
}

pub fn list(
    conn: &Connection,
    scope: &Scope,
    f: &SubscriberFilter,
    paging: Paging,
) -> Result<Vec<Subscriber>> {
    if f.expiring_days.is_some_and(|d| d > 366) {
        return Err(Error::bad_request(
            "bad_filter",
            "expiring_days must be between 0 and 366",
        ));
    }
    let mut w = Filter::scoped(scope, "s.tenant_id");
    w.search_indexed(
        "subscriber_search",
        "s.id",
        &[
            "s.username",
            "s.name",
            "s.phone",
            "s.email",
            "s.mac",
            "s.static_ipv4",
        ],
        f.q.as_deref(),
    )
    .and_opt("s.status = ?", f.status.map(|s| s.as_str().to_string()))
    .and_opt("s.tenant_id = ?", f.tenant_id)
    .and_opt("s.site_id = ?", f.site_id)
    .and_opt("s.plan_id = ?", f.plan_id)
    .and_opt(
        "s.status = 'active' AND s.expires_at <= ?",
        f.expiring_days
            .map(|d| super::now() + i64::from(d) * 86_400),
    );
    let select = format!("SELECT {COLS} FROM subscribers s JOIN tenants t ON t.id = s.tenant_id");
    let rows = w.page(conn, &select, "s.id", paging, from_row)?;
    Ok(rows.into_iter().map(|r| r.sub).collect())
}

/// What a dashboard shows of the subscribers in `scope`: how many in each status, and
/// how many active ones expire from `now` to `until`.
pub fn counts(
    conn: &Connection,
    scope: &Scope,
    now: i64,
    until: i64,
) -> Result<(Vec<(SubscriberStatus, i64)>, i64)> {
    let (pred, p) = scope.owns("s.tenant_id");
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT s.status, count(*) FROM subscribers s WHERE {pred} GROUP BY s.status ORDER BY s.status"
    ))?;
    let by_status = stmt
        .query_map([&p], |r| {
            Ok((SubscriberStatus::parse(&r.get::<_, String>(0)?), r.get(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let expiring = conn.cached_row(
        &format!(
            "SELECT count(*) FROM subscribers s WHERE {pred} AND s.status = 'active'
             AND s.expires_at >= ? AND s.expires_at < ?"
        ),
        params![p, now, until],
        |r| r.get(0),
    )?;
    Ok((by_status, expiring))
}

pub fn validate_username(s: &str) -> Result<String> {
    let u = s;
    let ok = (1..=64).contains(&u.len())
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b));
    if !ok {
        return Err(Error::invalid(format!(
            "username: '{s}' must be 1 to 64 characters of letters, digits and . _ @ + -"
        )));
    }
    Ok(u.to_string())
}

fn validate_ppp_password(p: &str) -> Result<()> {
    let n = p.chars().count();
    if !(1..=128).contains(&n) || p.chars().any(char::is_control) {
        return Err(Error::invalid(
            "password must be 1 to 128 characters without control characters",
        ));
    }
    Ok(())
}

/// Accepts `aa:bb:cc:dd:ee:ff`, `AA-BB-…`, `aabbccddeeff` and `aabb.ccdd.eeff`; stores
/// `AA:BB:CC:DD:EE:FF`.
pub fn normalize_mac(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let hex = |r: &[u8]| r.iter().all(u8::is_ascii_hexdigit);
    // Six pairs, each after the first optionally preceded by ':' or '-'.
    let pairs = || {
        let mut i = 0;
        let mut out = String::new();
        for n in 0..6 {
            if n > 0 && matches!(b.get(i), Some(b':' | b'-')) {
                i += 1;
            }
            let pair = b.get(i..i + 2).filter(|p| hex(p))?;
            out.push_str(std::str::from_utf8(pair).ok()?);
            i += 2;
        }
        (i == b.len()).then_some(out)
    };
    let dotted = || {
        (b.len() == 14 && b[4] == b'.' && b[9] == b'.')
            .then(|| [&b[0..4], &b[5..9], &b[10..14]])
            .filter(|g| g.iter().all(|g| hex(g)))
            .map(|g| g.concat())
            .and_then(|v| String::from_utf8(v).ok())
    };
    let hex = pairs().or_else(dotted).unwrap_or_default();
    if hex.len() != 12 {
        return Err(Error::invalid(format!(
            "mac: '{s}' is not a MAC address (for example 00:11:22:33:44:55)"
        )));
    }
    let up = hex.to_ascii_uppercase();
    Ok((0..6)
        .map(|i| &up[i * 2..i * 2 + 2])
        .collect::<Vec<_>>()
        .join(":"))
}

fn max_sessions(n: i64) -> Result<i64> {
    if !(1..=16).contains(&n) {
        return Err(Error::invalid("max_sessions must be between 1 and 16"));
    }
    Ok(n)
}

pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr> {
    let ip: Ipv4Addr = s
        .parse()
        .map_err(|_| Error::invalid(format!("static_ipv4: '{s}' is not an IPv4 address")))?;
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
        return Err(Error::invalid(format!(
            "static_ipv4: {ip} cannot be assigned to a subscriber"
        )));
    }
    Ok(ip)
}

pub fn parse_time(field: &str, s: &str) -> Result<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            Error::invalid(format!(
                "{field}: '{s}' is not an RFC 3339 time (for example 2026-12-31T23:59:59Z)"
            ))
        })
}

fn short(field: &str, s: &str, max: usize) -> Result<String> {
    if s.chars().count() > max || s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Error::invalid(format!(
            "{field} must be at most {max} characters without control characters"
        )));
    }
    Ok(s.trim().to_string())
}

pub fn create(
    conn: &Connection,
    owner: &Tenant,
    input: &NewSubscriber,
    secrets: &SecretBox,
) -> Result<SubscriberRow> {
    let username = validate_username(&input.username)?;
    validate_ppp_password(&input.password)?;
    let status = input.status.unwrap_or(SubscriberStatus::Active);
    if status == SubscriberStatus::Expired {
        return Err(Error::invalid(
            "status: 'expired' is set by the system when a subscriber runs out",
        ));
    }
    let expires = input
        .expires_at
        .as_deref()
        .map(|s| parse_time("expires_at", s))
        .transpose()?;
    let ip = input.static_ipv4.as_deref().map(parse_ipv4).transpose()?;
    let mac = input.mac.as_deref().map(normalize_mac).transpose()?;
    let site = input
        .site_id
        .map(|id| super::site::usable_by(conn, owner, id))
        .transpose()?;
    let plan = input
        .plan_id
        .map(|id| super::plan::usable_by(conn, owner, id))
        .transpose()?;
    if input.auto_renew && plan.is_none() {
        return Err(Error::invalid(
            "auto_renew needs a plan_id: renewal charges the plan's price",
        ));
    }
    if ip.is_some() && site.is_none() {
        return Err(Error::invalid(
            "static_ipv4 needs a site_id: an address is routed at a site",
        ));
    }
    tenant::check_capacity(conn, owner, Counted::Subscribers, |_| Ok(1))?;
    let now = super::now();
    conn.cached_exec(
        "INSERT INTO subscribers (tenant_id, site_id, username, password_sealed, status, expires_at, static_ipv4, mac,
             name, phone, email, notes, created_at, updated_at, plan_id, auto_renew, max_sessions, wan_check_exempt,
             wan_tcp_ports)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14, ?15, ?16, ?17, ?18)",
        params![
            owner.id,
            site.map(|s| s.id),
            username,
            secrets.seal(&input.password),
            status.as_str(),
            expires,
            ip.map(|i| i.to_string()),
            mac,
            short("name", &input.name, 200)?,
            short("phone", &input.phone, 40)?,
            short("email", &input.email, 254)?,
            short("notes", &input.notes, 4000)?,
            now,
            plan.map(|p| p.id),
            input.auto_renew,
            max_sessions(input.max_sessions.unwrap_or(1))?,
            input.wan_check_exempt,
            input
                .wan_tcp_ports
                .as_deref()
                .map(crate::wire::tcp_ports_json)
                .transpose()?
        ],
    )?;
    get_visible(
        conn,
        &Scope::Direct {
            tenant_id: owner.id,
        },
        conn.last_insert_rowid(),
    )
}

/// Applies a patch. `new_owner` is the already-authorized target of a move, if any.
pub fn update(
    conn: &Connection,
    row: &SubscriberRow,
    p: &SubscriberPatch,
    new_owner: Option<&Tenant>,
    secrets: &SecretBox,
) -> Result<SubscriberRow> {
    let s = &row.sub;
    let owner = match new_owner {
        Some(t) => t.clone(),
        None => tenant::get(conn, s.tenant_id)?.expect("owner exists (foreign key)"),
    };
    let username = p
        .username
        .as_deref()
        .map(validate_username)
        .transpose()?
        .unwrap_or(s.username.clone());
    if let Some(pw) = &p.password {
        validate_ppp_password(pw)?;
    }
    let status = p.status.unwrap_or(s.status);
    if p.status == Some(SubscriberStatus::Expired) {
        return Err(Error::invalid(
            "status: 'expired' is set by the system when a subscriber runs out",
        ));
    }
    let expires = match &p.expires_at {
        Some(v) => v
            .as_deref()
            .map(|t| parse_time("expires_at", t))
            .transpose()?,
        None => row.expires_at,
    };
    let ip = match &p.static_ipv4 {
        Some(v) => v.as_deref().map(parse_ipv4).transpose()?,
        None => s.static_ipv4,
    };
    let mac = match &p.mac {
        Some(v) => v.as_deref().map(normalize_mac).transpose()?,
        None => s.mac.clone(),
    };
    let site_id = match p.site_id {
        Some(v) => v,
        None => s.site_id,
    };
    // The site must suit the (possibly new) owner.
    let site_id = site_id
        .map(|id| super::site::usable_by(conn, &owner, id).map(|s| s.id))
        .transpose()?;
    // A change reads against what is stored (the site or address it keeps): conflicts.
    if ip.is_some() && site_id.is_none() {
        return Err(Error::conflict(
            "needs_site",
            "static_ipv4 needs a site_id: an address is routed at a site",
        ));
    }
    let plan_id = match p.plan_id {
        Some(v) => v,
        None => s.plan_id,
    };
    // The plan must suit the (possibly new) owner too.
    let plan_id = plan_id
        .map(|id| {
            super::plan::usable_by(conn, &owner, id).map(|p| p.id).map_err(|e| {
                if p.plan_id.is_none() && owner.id != s.tenant_id {
                    Error::conflict(
                        "plan_unavailable",
                        format!("the subscriber's plan is not available to '{}': set plan_id along with tenant_id", owner.name),
                    )
                } else {
                    e
                }
            })
        })
        .transpose()?;
    let auto_renew = p.auto_renew.unwrap_or(s.auto_renew);
    if auto_renew && plan_id.is_none() {
        return Err(Error::conflict(
            "needs_plan",
            "auto_renew needs a plan_id: renewal charges the plan's price",
        ));
    }
    if owner.id != s.tenant_id {
        move_capacity(conn, &owner, &[s.id])?;
    }
    conn.cached_exec(
        "UPDATE subscribers SET tenant_id = ?2, site_id = ?3, username = ?4, password_sealed = coalesce(?5, password_sealed),
             status = ?6, expires_at = ?7, static_ipv4 = ?8, mac = ?9, name = ?10, phone = ?11, email = ?12,
             notes = ?13, updated_at = ?14, plan_id = ?15, auto_renew = ?16, max_sessions = ?17,
             wan_check_exempt = ?18, wan_tcp_ports = ?19
         WHERE id = ?1",
        params![
            s.id,
            owner.id,
            site_id,
            username,
            p.password.as_deref().map(|pw| secrets.seal(pw)),
            status.as_str(),
            expires,
            ip.map(|i| i.to_string()),
            mac,
            p.name.as_deref().map(|v| short("name", v, 200)).transpose()?.unwrap_or(s.name.clone()),
            p.phone.as_deref().map(|v| short("phone", v, 40)).transpose()?.unwrap_or(s.phone.clone()),
            p.email.as_deref().map(|v| short("email", v, 254)).transpose()?.unwrap_or(s.email.clone()),
            p.notes.as_deref().map(|v| short("notes", v, 4000)).transpose()?.unwrap_or(s.notes.clone()),
            super::now(),
            plan_id,
            auto_renew,
            max_sessions(p.max_sessions.unwrap_or(s.max_sessions))?,
            p.wan_check_exempt.unwrap_or(s.wan_check_exempt),
            match &p.wan_tcp_ports {
                Some(Some(list)) => Some(crate::wire::tcp_ports_json(list)?),
                Some(None) => None,
                None => s
                    .wan_tcp_ports
                    .as_deref()
                    .map(crate::wire::tcp_ports_json)
                    .transpose()?,
            }
        ],
    )?;
    get_visible(
        conn,
        &Scope::Direct {
            tenant_id: owner.id,
        },
        s.id,
    )
}

/// Refuses a move of `ids` to `owner` that would put a limited tenant over its limit;
/// subscribers already inside a tenant's subtree do not add to its count.
fn move_capacity(conn: &Connection, owner: &Tenant, ids: &[i64]) -> Result<()> {
    let ids_json = serde_json::to_string(ids).expect("ids serialize");
    tenant::check_capacity(conn, owner, Counted::Subscribers, |t| {
        Ok(conn.cached_row(
            "SELECT count(*) FROM subscribers s JOIN tenants t ON t.id = s.tenant_id
             WHERE s.id IN (SELECT value FROM json_each(?1)) AND NOT (t.path GLOB ?2)",
            params![ids_json, format!("{}*", t.path)],
            |r| r.get(0),
        )?)
    })
}

/// Bulk actions apply to every listed subscriber or to none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// active → suspended (others are left as they are).
    Suspend,
    /// suspended → active (others are left as they are).
    Reconnect,
    /// Move to `tenant_id`, within your subtree.
    SetReseller,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    pub action: BulkAction,
    /// 1 to 1000 subscriber ids.
    #[schema(min_items = 1, max_items = 1000)]
    pub ids: Vec<i64>,
    /// For `set_reseller`: the new owning tenant.
    pub tenant_id: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct BulkResult {
    /// Subscribers the action changed.
    pub changed: Vec<i64>,
    /// Subscribers it did not need to change (already in the target state).
    pub unchanged: Vec<i64>,
}

/// Loads every id within scope, or fails naming the first one that is not.
pub fn get_all_visible(
    conn: &Connection,
    scope: &Scope,
    ids: &[i64],
) -> Result<Vec<SubscriberRow>> {
    ids.iter()
        .map(|&id| {
            get_visible(conn, scope, id).map_err(|e| {
                if e.kind == crate::error::ErrorKind::NotFound {
                    Error::not_found(&format!("subscriber {id}"))
                } else {
                    e
                }
            })
        })
        .collect()
}

pub fn bulk(
    conn: &Connection,
    rows: &[SubscriberRow],
    action: BulkAction,
    new_owner: Option<&Tenant>,
) -> Result<BulkResult> {
    let mut out = BulkResult::default();
    let now = super::now();
    match action {
        BulkAction::Suspend | BulkAction::Reconnect => {
            let (from, to) = if action == BulkAction::Suspend {
                (SubscriberStatus::Active, SubscriberStatus::Suspended)
            } else {
                (SubscriberStatus::Suspended, SubscriberStatus::Active)
            };
            for r in rows {
                if r.sub.status == from {
                    conn.cached_exec(
                        "UPDATE subscribers SET status = ?2, updated_at = ?3 WHERE id = ?1",
                        params![r.sub.id, to.as_str(), now],
                    )?;
                    out.changed.push(r.sub.id);
                } else {
                    out.unchanged.push(r.sub.id);
                }
            }
        }
        BulkAction::SetReseller => {
            let owner = new_owner.expect("set_reseller is resolved by the caller");
            let moving: Vec<i64> = rows
                .iter()
                .filter(|r| r.sub.tenant_id != owner.id)
                .map(|r| r.sub.id)
                .collect();
            move_capacity(conn, owner, &moving)?;
            for r in rows {
                if r.sub.tenant_id == owner.id {
                    out.unchanged.push(r.sub.id);
                    continue;
                }
                if let Some(plan) = r.sub.plan_id {
                    super::plan::usable_by(conn, owner, plan).map_err(|_| {
                        Error::conflict(
                            "plan_unavailable",
                            format!(
                                "subscriber {} is on plan {plan}, which '{}' does not sell; change its plan first",
                                r.sub.id, owner.name
                            ),
                        )
                    })?;
                }
                if let Some(site) = r.sub.site_id {
                    super::site::usable_by(conn, owner, site).map_err(|_| {
                        Error::conflict(
                            "site_unavailable",
                            format!(
                                "subscriber {} is on site {site}, which '{}' cannot use; move it to another site first",
                                r.sub.id, owner.name
                            ),
                        )
                    })?;
                }
                conn.cached_exec(
                    "UPDATE subscribers SET tenant_id = ?2, updated_at = ?3 WHERE id = ?1",
                    params![r.sub.id, owner.id, now],
                )?;
                out.changed.push(r.sub.id);
            }
        }
    }
    Ok(out)
}

/// Unscoped by design: server-side lookups that must see everything (demo seeding).
pub fn count_all(conn: &Connection) -> Result<i64> {
    Ok(conn.cached_row("SELECT count(*) FROM subscribers", [], |r| r.get(0))?)
}
