//! Enrollment: single-use, expiring tokens for a site, and trading one for an agent
//! credential and a tunnel address.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use outpost_protocol as proto;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::AgentsConfig;
use crate::crypto::sha256;
use crate::db::Cached;
use crate::error::{Error, Result};

/// An enrollment token as listed (its secret is shown only at creation).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentToken {
    pub id: i64,
    pub site_id: i64,
    pub created_at: String,
    pub expires_at: String,
    pub used_at: Option<String>,
    pub agent_id: Option<i64>,
}

/// Returned once, when a token is created.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    #[serde(flatten)]
    pub token: EnrollmentToken,
    /// Pass to `outpost-agent enroll --token`. Single use; cannot be shown again.
    pub secret: String,
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EnrollmentToken> {
    Ok(EnrollmentToken {
        id: r.get(0)?,
        site_id: r.get(1)?,
        created_at: crate::db::rfc3339(r.get(2)?),
        expires_at: crate::db::rfc3339(r.get(3)?),
        used_at: r.get::<_, Option<i64>>(4)?.map(crate::db::rfc3339),
        agent_id: r.get(5)?,
    })
}

pub fn create_token(
    conn: &Connection,
    site_id: i64,
    created_by: i64,
    ttl_secs: i64,
    secret: &str,
) -> Result<EnrollmentToken> {
    let now = crate::db::now();
    conn.cached_exec(
        "INSERT INTO enrollment_tokens (site_id, token_hash, created_by, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![site_id, sha256(secret.as_bytes()), created_by, now, now + ttl_secs],
    )?;
    Ok(conn.cached_row(
        "SELECT id, site_id, created_at, expires_at, used_at, agent_id FROM enrollment_tokens WHERE id = ?1",
        [conn.last_insert_rowid()],
        token_row,
    )?)
}

pub fn list_tokens(conn: &Connection, site_id: i64) -> Result<Vec<EnrollmentToken>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, site_id, created_at, expires_at, used_at, agent_id FROM enrollment_tokens WHERE site_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([site_id], token_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn validate_enroll(req: &proto::EnrollRequest) -> Result<()> {
    use base64::Engine;
    if req.protocol_version != proto::PROTOCOL_VERSION {
        return Err(Error::unprocessable(
            "protocol_mismatch",
            format!(
                "this controller speaks agent protocol {}, the agent {}: upgrade the older one",
                proto::PROTOCOL_VERSION,
                req.protocol_version
            ),
        ));
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(&req.wireguard_public_key)
        .unwrap_or_default();
    if key.len() != 32 {
        return Err(Error::invalid(
            "wireguard_public_key must be a base64 WireGuard key (32 bytes)",
        ));
    }
    // As the schema says: printable ASCII, no spaces (a host name, punycode for IDN).
    let h = &req.hostname;
    if h.is_empty() || h.len() > 253 || !h.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "hostname must be 1 to 253 printable ASCII characters without spaces",
        ));
    }
    if req.agent_version.is_empty() || req.agent_version.len() > 64 {
        return Err(Error::invalid("agent_version must be 1 to 64 characters"));
    }
    Ok(())
}

/// Trades a token for an agent identity. The token is spent; an earlier agent of the
/// same site is revoked (the box was replaced or reinstalled).
pub fn enroll(
    conn: &Connection,
    req: &proto::EnrollRequest,
    credential: &str,
    cfg: &AgentsConfig,
) -> Result<proto::EnrollResponse> {
    validate_enroll(req)?;
    let now = crate::db::now();
    let token: Option<(i64, i64)> = conn
        .cached_row(
            "SELECT id, site_id FROM enrollment_tokens WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
            params![sha256(req.token.trim().as_bytes()), now],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((token_id, site_id)) = token else {
        return Err(Error::new(
            crate::error::ErrorKind::Unauthenticated,
            "invalid_token",
            "the enrollment token is not valid: unknown, already used or expired; create a new one for the site",
        ));
    };
    conn.cached_exec(
        "UPDATE agents SET revoked_at = ?2 WHERE site_id = ?1 AND revoked_at IS NULL",
        params![site_id, now],
    )?;
    let address = allocate_address(conn, cfg)?;
    conn.cached_exec(
        "INSERT INTO agents (site_id, credential_hash, wireguard_public_key, hostname, version, tunnel_address, enrolled_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            site_id,
            sha256(credential.as_bytes()),
            req.wireguard_public_key.trim(),
            req.hostname.trim(),
            req.agent_version,
            address.to_string(),
            now
        ],
    )?;
    let agent_id = conn.last_insert_rowid();
    conn.cached_exec(
        "UPDATE enrollment_tokens SET used_at = ?2, agent_id = ?3 WHERE id = ?1",
        params![token_id, now, agent_id],
    )?;
    Ok(proto::EnrollResponse {
        agent_id,
        site_id,
        credential: credential.to_string(),
        tunnel: proto::TunnelParams {
            address: format!("{address}/32"),
            controller_public_key: cfg.wireguard_public_key.clone(),
            controller_endpoint: cfg.wireguard_endpoint.clone(),
            controller_address: cfg.controller_tunnel_address.to_string(),
            persistent_keepalive_secs: cfg.persistent_keepalive_secs,
        },
        protocol_version: proto::PROTOCOL_VERSION,
    })
}

/// The lowest free host address of the tunnel network (live agents keep theirs).
fn allocate_address(conn: &Connection, cfg: &AgentsConfig) -> Result<Ipv4Addr> {
    let used: BTreeSet<String> = {
        let mut stmt =
            conn.prepare_cached("SELECT tunnel_address FROM agents WHERE revoked_at IS NULL")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<Result<_, _>>()?
    };
    cfg.tunnel_network
        .hosts()
        .find(|a| *a != cfg.controller_tunnel_address && !used.contains(&a.to_string()))
        .ok_or_else(|| {
            Error::conflict(
                "tunnel_network_full",
                "agents.tunnel_network has no free address left",
            )
        })
}
