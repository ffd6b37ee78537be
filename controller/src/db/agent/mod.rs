//! Agents: who a credential belongs to and how its site's agent is doing. The rest
//! is split by job: [`enrollment`] (tokens and enrolling), [`feed`] (the per-site
//! change feed agents pull and acknowledge) and [`events`] (what agents ship back:
//! accounting, rejects, NAS restarts, CoA outcomes).

mod enrollment;
mod events;
mod feed;
mod rotation;

pub use enrollment::*;
pub use events::*;
pub use feed::*;
pub use rotation::*;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::crypto::sha256;
use crate::db::Cached;
use crate::error::{Error, Result};

/// Who an agent credential belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentIdentity {
    pub agent_id: i64,
    pub site_id: i64,
    /// Its overlay address: inside the tunnel, requests with its credential must come
    /// from it. `None` for an agent enrolled without a tunnel.
    pub tunnel_address: Option<std::net::Ipv4Addr>,
    /// The second address of a key rotation under way: its calls may come from there
    /// too, through the new key ([`rotation`]).
    pub rotation_address: Option<std::net::Ipv4Addr>,
}

impl AgentIdentity {
    /// Whether a call from `ip` (inside the tunnel) may carry this agent's credential.
    pub fn owns(&self, ip: std::net::IpAddr) -> bool {
        [self.tunnel_address, self.rotation_address]
            .into_iter()
            .flatten()
            .any(|a| std::net::IpAddr::V4(a) == ip)
    }
}

pub fn authenticate(conn: &Connection, secret: &str) -> Result<Option<AgentIdentity>> {
    if !secret.starts_with("opa_") {
        return Ok(None);
    }
    Ok(conn
        .cached_row(
            "SELECT id, site_id, tunnel_address, rotation_address FROM agents WHERE credential_hash = ?1 AND revoked_at IS NULL",
            [sha256(secret.as_bytes())],
            |r| {
                Ok(AgentIdentity {
                    agent_id: r.get(0)?,
                    site_id: r.get(1)?,
                    tunnel_address: r.get::<_, String>(2)?.parse().ok(),
                    rotation_address: r.get::<_, Option<String>>(3)?.and_then(|a| a.parse().ok()),
                })
            },
        )
        .optional()?)
}

pub fn touch(conn: &Connection, who: AgentIdentity) -> Result<()> {
    conn.cached_exec(
        "UPDATE agents SET last_seen_at = ?2 WHERE id = ?1",
        params![who.agent_id, super::now()],
    )?;
    Ok(())
}

/// A site's agent as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentStatus {
    pub agent_id: i64,
    pub site_id: i64,
    pub hostname: String,
    pub version: String,
    /// Its WireGuard public key.
    pub wireguard_public_key: String,
    /// Its overlay address; null when it enrolled without a tunnel.
    pub tunnel_address: Option<String>,
    /// The tunnel peer's live figures; null without a tunnel, or while the peer is not
    /// on the controller's interface.
    pub tunnel: Option<crate::tunnel::TunnelPeer>,
    pub enrolled_at: String,
    pub last_seen_at: Option<String>,
    /// The revision the agent last acknowledged, and the site's newest.
    pub applied_revision: u64,
    pub head_revision: u64,
    /// Whether the digest the agent reported for the head matches the controller's:
    /// null while it is behind the head.
    pub digest_matches: Option<bool>,
    /// true when the agent applied the head and its digest matches.
    pub in_sync: bool,
}

pub fn status(conn: &Connection, site_id: i64) -> Result<AgentStatus> {
    let head = site_head(conn, site_id)?;
    conn.cached_row(
        "SELECT id, site_id, hostname, version, nullif(tunnel_address, ''), enrolled_at, last_seen_at, applied_revision,
                digest_matches, wireguard_public_key
         FROM agents WHERE site_id = ?1 AND revoked_at IS NULL",
        [site_id],
        |r| {
            let applied = r.get::<_, i64>(7)? as u64;
            let matches: Option<bool> = r.get(8)?;
            Ok(AgentStatus {
                agent_id: r.get(0)?,
                site_id: r.get(1)?,
                hostname: r.get(2)?,
                version: r.get(3)?,
                wireguard_public_key: r.get(9)?,
                tunnel_address: r.get(4)?,
                tunnel: None,
                enrolled_at: super::rfc3339(r.get(5)?),
                last_seen_at: r.get::<_, Option<i64>>(6)?.map(super::rfc3339),
                applied_revision: applied,
                head_revision: head,
                digest_matches: if applied == head { matches } else { None },
                in_sync: applied == head && matches == Some(true),
            })
        },
    )
    .optional()?
    .ok_or_else(|| Error::not_found("agent for this site"))
}

/// How the live agents stand, for metrics: each counted once, in the first state that
/// fits — `silent` (not heard from in `silent_after` seconds, or never), `behind`
/// (has not applied its site's newest revision), `digest_mismatch` (applied it, but its
/// digest differs), `in_sync`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    pub in_sync: u64,
    pub behind: u64,
    pub digest_mismatch: u64,
    pub silent: u64,
    /// The most revisions any live agent is behind its site's head.
    pub max_revision_lag: u64,
}

pub fn census(conn: &Connection, now: i64, silent_after: i64) -> Result<Census> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.last_seen_at, a.applied_revision, a.digest_matches,
                (SELECT coalesce(max(revision), 0) FROM site_changes c WHERE c.site_id = a.site_id)
         FROM agents a WHERE a.revoked_at IS NULL",
    )?;
    let mut c = Census::default();
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Option<i64>>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Option<bool>>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (seen, applied, matches, head) = row?;
        c.max_revision_lag = c
            .max_revision_lag
            .max(head.saturating_sub(applied).max(0) as u64);
        match () {
            _ if seen.is_none_or(|t| now - t > silent_after) => c.silent += 1,
            _ if applied < head => c.behind += 1,
            _ if matches != Some(true) => c.digest_mismatch += 1,
            _ => c.in_sync += 1,
        }
    }
    Ok(c)
}
