//! Enrollment: single-use, expiring tokens for a site, and trading one for an agent
//! credential and a tunnel address.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use outpost_protocol as proto;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::TunnelConfig;
use crate::crypto::SecretBox;
use crate::crypto::sha256;
use crate::db::Cached;
use crate::error::{Error, Result};
use crate::tunnel::{PeerChange, Tunnel};

/// An enrollment token as listed (its secret is shown only at creation).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentToken {
    pub id: i64,
    pub site_id: i64,
    pub created_at: String,
    pub expires_at: String,
    pub used_at: Option<String>,
    pub agent_id: Option<i64>,
    /// When it was revoked unused; a revoked token enrols nothing.
    pub revoked_at: Option<String>,
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
        revoked_at: r.get::<_, Option<i64>>(6)?.map(crate::db::rfc3339),
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
    Ok(conn.cached_row(TOKEN_BY_ID, [conn.last_insert_rowid()], token_row)?)
}

const TOKEN_BY_ID: &str = "SELECT id, site_id, created_at, expires_at, used_at, agent_id, revoked_at FROM enrollment_tokens WHERE id = ?1";

/// One token by id (not found when there is none; the caller checks its site's scope).
pub fn get_token(conn: &Connection, id: i64) -> Result<EnrollmentToken> {
    conn.cached_row(TOKEN_BY_ID, [id], token_row)
        .optional()?
        .ok_or_else(|| Error::not_found("enrollment token"))
}

/// Revokes a token nobody has used: it enrols nothing from now on. A used token is a
/// conflict (its agent is revoked on its own), as is one revoked already.
pub fn revoke_token(conn: &Connection, id: i64) -> Result<EnrollmentToken> {
    let t = get_token(conn, id)?;
    if t.used_at.is_some() {
        return Err(Error::conflict(
            "token_used",
            "this enrollment token has enrolled an agent already; revoke the site's agent instead",
        ));
    }
    if t.revoked_at.is_some() {
        return Err(Error::conflict(
            "token_revoked",
            "this enrollment token is revoked already",
        ));
    }
    conn.cached_exec(
        "UPDATE enrollment_tokens SET revoked_at = ?2 WHERE id = ?1 AND used_at IS NULL",
        params![id, crate::db::now()],
    )?;
    get_token(conn, id)
}

pub fn list_tokens(conn: &Connection, site_id: i64) -> Result<Vec<EnrollmentToken>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, site_id, created_at, expires_at, used_at, agent_id, revoked_at FROM enrollment_tokens WHERE site_id = ?1 ORDER BY id",
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

/// What an enrolment decided: the answer for the agent and the change to the tunnel's
/// peers (applied before the transaction commits).
#[derive(Debug)]
pub struct Enrolled {
    pub response: proto::EnrollResponse,
    pub peers: PeerChange,
}

/// Trades a token for an agent identity. The token is spent; an earlier agent of the
/// same site is revoked (the box was replaced or reinstalled) and its peer removed.
/// With a tunnel, the agent gets an overlay address never handed out before and a
/// fresh preshared key, and its peer is added.
pub fn enroll(
    conn: &Connection,
    req: &proto::EnrollRequest,
    credential: &str,
    tunnel: Option<&Tunnel>,
    secrets: &SecretBox,
) -> Result<Enrolled> {
    validate_enroll(req)?;
    let key = req.wireguard_public_key.trim();
    if tunnel.is_some_and(|t| t.public_key == key) {
        return Err(Error::invalid(
            "wireguard_public_key is the controller's own key; the agent generates its own",
        ));
    }
    let now = crate::db::now();
    let token: Option<(i64, i64)> = conn
        .cached_row(
            "SELECT id, site_id FROM enrollment_tokens WHERE token_hash = ?1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?2",
            params![sha256(req.token.trim().as_bytes()), now],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((token_id, site_id)) = token else {
        return Err(Error::new(
            crate::error::ErrorKind::Unauthenticated,
            "invalid_token",
            "the enrollment token is not valid: unknown, already used, revoked or expired; create a new one for the site",
        ));
    };
    let mut peers = PeerChange {
        add: vec![],
        remove: revoke_live(conn, site_id, now)?,
    };
    if key_in_use(conn, key)? {
        return Err(Error::conflict(
            "wireguard_key_in_use",
            "another live agent has this WireGuard public key; generate a new key pair and enroll again",
        ));
    }
    let tunnel_params = match tunnel {
        Some(t) => {
            let address = allocate_address(conn, &t.config)?;
            Some((address, outpost_wg::generate_preshared_key()))
        }
        None => None,
    };
    conn.cached_exec(
        "INSERT INTO agents (site_id, credential_hash, wireguard_public_key, hostname, version, tunnel_address, enrolled_at,
                             preshared_key_sealed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            site_id,
            sha256(credential.as_bytes()),
            key,
            req.hostname.trim(),
            req.agent_version,
            tunnel_params.as_ref().map(|(a, _)| a.to_string()).unwrap_or_default(),
            now,
            tunnel_params.as_ref().map(|(_, psk)| secrets.seal(psk)),
        ],
    )?;
    let agent_id = conn.last_insert_rowid();
    if let Some((address, _)) = &tunnel_params {
        conn.cached_exec(
            "INSERT INTO tunnel_addresses (address, agent_id, allocated_at) VALUES (?1, ?2, ?3)",
            params![address.to_string(), agent_id, now],
        )?;
    }
    conn.cached_exec(
        "UPDATE enrollment_tokens SET used_at = ?2, agent_id = ?3 WHERE id = ?1",
        params![token_id, now, agent_id],
    )?;
    let tunnel = match (tunnel, tunnel_params) {
        (Some(t), Some((address, psk))) => {
            peers
                .add
                .push(Tunnel::agent_peer(key, address, Some(psk.clone())));
            Some(t.params(address, &psk))
        }
        _ => None,
    };
    Ok(Enrolled {
        response: proto::EnrollResponse {
            agent_id,
            site_id,
            credential: credential.to_string(),
            tunnel,
            protocol_version: proto::PROTOCOL_VERSION,
        },
        peers,
    })
}

/// Whether a live agent holds this WireGuard public key, as its own or as the new key
/// of a rotation under way: enrolment and rotation both refuse such a key.
pub(super) fn key_in_use(conn: &Connection, key: &str) -> Result<bool> {
    Ok(conn.cached_row(
        "SELECT EXISTS (SELECT 1 FROM agents WHERE revoked_at IS NULL
                          AND (wireguard_public_key = ?1 OR rotation_public_key = ?1))",
        [key],
        |r| r.get(0),
    )?)
}

/// Revokes the site's live agent, if any: its credential stops working and its overlay
/// addresses become tombstones. Returns its public keys (the one of a rotation under
/// way too), whose peers are to be removed.
fn revoke_live(conn: &Connection, site_id: i64, now: i64) -> Result<Vec<String>> {
    let old: Option<(i64, String, Option<String>)> = conn
        .cached_row(
            "SELECT id, wireguard_public_key, rotation_public_key FROM agents WHERE site_id = ?1 AND revoked_at IS NULL",
            [site_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((id, key, rotation_key)) = old else {
        return Ok(vec![]);
    };
    conn.cached_exec(
        "UPDATE agents SET revoked_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    conn.cached_exec(
        "UPDATE tunnel_addresses SET freed_at = ?2 WHERE agent_id = ?1 AND freed_at IS NULL",
        params![id, now],
    )?;
    Ok(std::iter::once(key).chain(rotation_key).collect())
}

/// Revokes the site's agent (the box is retired or compromised): the change to the
/// tunnel removes its peer. Not found when the site has no live agent.
pub fn revoke(conn: &Connection, site_id: i64) -> Result<PeerChange> {
    let remove = revoke_live(conn, site_id, crate::db::now())?;
    if remove.is_empty() {
        return Err(Error::not_found("agent for this site"));
    }
    Ok(PeerChange {
        add: vec![],
        remove,
    })
}

/// Every live agent's peer, for bringing the interface up (also after a restart), and
/// the new key's peer of each rotation under way.
pub fn live_peers(conn: &Connection, secrets: &SecretBox) -> Result<Vec<outpost_wg::Peer>> {
    let mut stmt = conn.prepare_cached(
        "SELECT wireguard_public_key, tunnel_address, preshared_key_sealed, id FROM agents
         WHERE revoked_at IS NULL AND tunnel_address <> ''
         UNION ALL
         SELECT rotation_public_key, rotation_address, rotation_psk_sealed, id FROM agents
         WHERE revoked_at IS NULL AND rotation_public_key IS NOT NULL
         ORDER BY 4",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<Vec<u8>>>(2)?,
        ))
    })?;
    let mut peers = Vec::new();
    for row in rows {
        let (key, address, psk) = row?;
        let address: Ipv4Addr = address.parse().map_err(|_| {
            Error::invalid(format!("stored tunnel address '{address}' is not IPv4"))
        })?;
        let psk = match psk {
            Some(sealed) => Some(secrets.open(&sealed).map_err(|e| Error::internal(&e))?),
            None => None,
        };
        peers.push(Tunnel::agent_peer(&key, address, psk));
    }
    Ok(peers)
}

/// The lowest host address of the overlay never handed out before (tombstones
/// included), other than the controller's.
pub(super) fn allocate_address(conn: &Connection, cfg: &TunnelConfig) -> Result<Ipv4Addr> {
    let taken: BTreeSet<String> = {
        let mut stmt = conn.prepare_cached("SELECT address FROM tunnel_addresses")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let controller = cfg.controller_address();
    cfg.network
        .hosts()
        .find(|a| *a != controller && !taken.contains(&a.to_string()))
        .ok_or_else(|| {
            Error::conflict(
                "tunnel_network_full",
                format!(
                    "tunnel.network {} has no address left that was never handed out; widen it",
                    cfg.network
                ),
            )
        })
}
