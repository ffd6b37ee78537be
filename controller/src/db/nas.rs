//! NAS devices (MikroTik, accel-ppp, …) that ask a site's agent for RADIUS.

use std::net::IpAddr;

use super::Cached;
use rusqlite::{Connection, Row, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::paging::list_filter;
use super::row::owned_row;
use super::tenant::{Tenant, validate_name};
use super::{Filter, Paging};
use crate::crypto::SecretBox;
use crate::error::{Error, Result};
use crate::scope::Scope;

/// The RADIUS dialect a NAS speaks (which rate attributes it understands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NasKind {
    Mikrotik,
    AccelPpp,
    Generic,
}

impl NasKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NasKind::Mikrotik => "mikrotik",
            NasKind::AccelPpp => "accel-ppp",
            NasKind::Generic => "generic",
        }
    }
    fn parse(s: &str) -> NasKind {
        match s {
            "mikrotik" => NasKind::Mikrotik,
            "accel-ppp" => NasKind::AccelPpp,
            _ => NasKind::Generic,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Nas {
    pub id: i64,
    pub tenant_id: i64,
    pub site_id: i64,
    pub name: String,
    #[schema(value_type = String)]
    pub ip: IpAddr,
    pub kind: NasKind,
    /// Where CoA and Disconnect-Request are sent (RFC 5176; 3799 by default).
    pub coa_port: u16,
    /// Refuse Access-Requests without a Message-Authenticator (BlastRADIUS mitigation).
    pub require_message_authenticator: bool,
    /// The RADIUS shared secret: only in single reads by someone who manages sites.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNas {
    #[schema(value_type = crate::wire::Name)]
    pub name: String,
    pub site_id: i64,
    #[schema(value_type = crate::wire::IpAddress)]
    pub ip: IpAddr,
    /// RADIUS shared secret, 8 to 128 printable characters.
    #[schema(pattern = r"^[!-~]{8,128}$")]
    pub secret: String,
    pub kind: NasKind,
    /// Where the NAS listens for Disconnect/CoA (default 3799).
    #[schema(minimum = 1, maximum = 65535)]
    pub coa_port: Option<u16>,
    pub require_message_authenticator: Option<bool>,
    /// Owning tenant; defaults to the caller's.
    pub tenant_id: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NasPatch {
    #[schema(value_type = Option<crate::wire::Name>)]
    pub name: Option<String>,
    #[schema(value_type = Option<crate::wire::IpAddress>)]
    pub ip: Option<IpAddr>,
    #[schema(pattern = r"^[!-~]{8,128}$")]
    pub secret: Option<String>,
    pub kind: Option<NasKind>,
    #[schema(minimum = 1, maximum = 65535)]
    pub coa_port: Option<u16>,
    pub require_message_authenticator: Option<bool>,
}

struct NasRow {
    nas: Nas,
    secret_sealed: Vec<u8>,
}

const COLS: &str = "n.id, n.tenant_id, n.site_id, n.name, n.ip, n.kind, n.coa_port, n.require_message_authenticator,
    n.secret_sealed, n.created_at, n.updated_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<NasRow> {
    let ip: String = r.get(4)?;
    Ok(NasRow {
        nas: Nas {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            site_id: r.get(2)?,
            name: r.get(3)?,
            ip: ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            kind: NasKind::parse(&r.get::<_, String>(5)?),
            coa_port: r.get(6)?,
            require_message_authenticator: r.get(7)?,
            secret: None,
            created_at: super::rfc3339(r.get(9)?),
            updated_at: super::rfc3339(r.get(10)?),
        },
        secret_sealed: r.get(8)?,
    })
}

fn validate_secret(s: &str) -> Result<()> {
    let n = s.chars().count();
    if !(8..=128).contains(&n) || !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Error::invalid(
            "secret must be 8 to 128 printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

fn validate_port(p: u16) -> Result<()> {
    if p == 0 {
        return Err(Error::invalid("coa_port must be between 1 and 65535"));
    }
    Ok(())
}

/// Reads one NAS in scope. `with_secret` opens the sealed secret.
pub fn get_visible(
    conn: &Connection,
    scope: &Scope,
    id: i64,
    secrets: Option<&SecretBox>,
) -> Result<Nas> {
    let select = format!("SELECT {COLS} FROM nas n");
    let row = owned_row(conn, scope, &select, "n", id, from_row, "NAS")?;
    let mut nas = row.nas;
    if let Some(b) = secrets {
        nas.secret = Some(
            b.open(&row.secret_sealed)
                .map_err(|e| Error::internal(&e))?,
        );
    }
    Ok(nas)
}

list_filter! {
    pub struct NasFilter {
        pub site_id: Option<i64>,
        pub tenant_id: Option<i64>,
    }
}

pub fn list(conn: &Connection, scope: &Scope, f: &NasFilter, paging: Paging) -> Result<Vec<Nas>> {
    let mut w = Filter::scoped(scope, "n.tenant_id");
    w.and_opt("n.site_id = ?", f.site_id)
        .and_opt("n.tenant_id = ?", f.tenant_id);
    let select = format!("SELECT {COLS} FROM nas n");
    let rows = w.page(conn, &select, "n.id", paging, from_row)?;
    Ok(rows.into_iter().map(|r| r.nas).collect())
}

pub fn create(
    conn: &Connection,
    owner: &Tenant,
    input: &NewNas,
    secrets: &SecretBox,
) -> Result<Nas> {
    let name = validate_name("name", &input.name, 120)?;
    validate_secret(&input.secret)?;
    let coa_port = input.coa_port.unwrap_or(3799);
    validate_port(coa_port)?;
    let site = super::site::usable_by(conn, owner, input.site_id)?;
    let now = super::now();
    conn.cached_exec(
        "INSERT INTO nas (tenant_id, site_id, name, ip, secret_sealed, kind, coa_port, require_message_authenticator, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
        params![
            owner.id,
            site.id,
            name,
            input.ip.to_string(),
            secrets.seal(&input.secret),
            input.kind.as_str(),
            coa_port,
            input.require_message_authenticator.unwrap_or(true),
            now
        ],
    )?;
    get_visible(
        conn,
        &Scope::Direct {
            tenant_id: owner.id,
        },
        conn.last_insert_rowid(),
        None,
    )
}

pub fn update(conn: &Connection, nas: &Nas, p: &NasPatch, secrets: &SecretBox) -> Result<Nas> {
    let name = match &p.name {
        Some(n) => validate_name("name", n, 120)?,
        None => nas.name.clone(),
    };
    if let Some(s) = &p.secret {
        validate_secret(s)?;
    }
    let coa_port = p.coa_port.unwrap_or(nas.coa_port);
    validate_port(coa_port)?;
    conn.cached_exec(
        "UPDATE nas SET name = ?2, ip = ?3, kind = ?4, coa_port = ?5, require_message_authenticator = ?6,
             secret_sealed = coalesce(?7, secret_sealed), updated_at = ?8 WHERE id = ?1",
        params![
            nas.id,
            name,
            p.ip.unwrap_or(nas.ip).to_string(),
            p.kind.unwrap_or(nas.kind).as_str(),
            coa_port,
            p.require_message_authenticator.unwrap_or(nas.require_message_authenticator),
            p.secret.as_deref().map(|s| secrets.seal(s)),
            super::now()
        ],
    )?;
    get_visible(
        conn,
        &Scope::Direct {
            tenant_id: nas.tenant_id,
        },
        nas.id,
        None,
    )
}
