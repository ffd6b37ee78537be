//! Agents: enrollment, the per-site change feed, acknowledgements, and the events
//! (accounting, rejects) they ship back.
//!
//! The feed itself is written by triggers (`migrations/controller/0003_agents.sql`):
//! every change to what a site enforces inserts a `site_changes` row whose id is the
//! revision. Here it is read: a snapshot of the site, or the rows changed since a
//! revision, each at its current state.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use outpost_protocol as proto;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Cached;
use crate::config::AgentsConfig;
use crate::crypto::{SecretBox, sha256};
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
        created_at: super::rfc3339(r.get(2)?),
        expires_at: super::rfc3339(r.get(3)?),
        used_at: r.get::<_, Option<i64>>(4)?.map(super::rfc3339),
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
    let now = super::now();
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

/// Who an agent credential belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentIdentity {
    pub agent_id: i64,
    pub site_id: i64,
}

pub fn authenticate(conn: &Connection, secret: &str) -> Result<Option<AgentIdentity>> {
    if !secret.starts_with("opa_") {
        return Ok(None);
    }
    Ok(conn
        .cached_row(
            "SELECT id, site_id FROM agents WHERE credential_hash = ?1 AND revoked_at IS NULL",
            [sha256(secret.as_bytes())],
            |r| {
                Ok(AgentIdentity {
                    agent_id: r.get(0)?,
                    site_id: r.get(1)?,
                })
            },
        )
        .optional()?)
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
        .decode(req.wireguard_public_key.trim())
        .unwrap_or_default();
    if key.len() != 32 {
        return Err(Error::invalid(
            "wireguard_public_key must be a base64 WireGuard key (32 bytes)",
        ));
    }
    let h = req.hostname.trim();
    if h.is_empty() || h.len() > 253 || h.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            "hostname must be 1 to 253 characters without spaces",
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
    let now = super::now();
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

/// The newest revision of a site's feed.
pub fn site_head(conn: &Connection, site_id: i64) -> Result<u64> {
    Ok(conn.cached_row(
        "SELECT coalesce(max(revision), 0) FROM site_changes WHERE site_id = ?1",
        [site_id],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// Paths of disabled tenants: a subscriber below any of them is disabled at the edge.
fn disabled_paths(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT path FROM tenants WHERE status = 'disabled'")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const SUB_SELECT: &str = "SELECT s.id, s.username, s.password_sealed, s.status, s.expires_at, s.static_ipv4, s.mac,
        s.max_sessions, s.tenant_id, t.path, p.download_kbps, p.upload_kbps, p.burst_download_kbps, p.burst_upload_kbps
    FROM subscribers s JOIN tenants t ON t.id = s.tenant_id LEFT JOIN plans p ON p.id = s.plan_id";

fn subscribers(
    conn: &Connection,
    where_: &str,
    args: &[&dyn rusqlite::ToSql],
    secrets: &SecretBox,
) -> Result<Vec<proto::SubscriberState>> {
    let off = disabled_paths(conn)?;
    let mut stmt = conn.prepare_cached(&format!("{SUB_SELECT} WHERE {where_} ORDER BY s.id"))?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let sealed: Vec<u8> = r.get(2)?;
        let path: String = r.get(9)?;
        let status = match r.get::<_, String>(3)?.as_str() {
            _ if off.iter().any(|p| path.starts_with(p.as_str())) => {
                proto::SubscriberStatus::Disabled
            }
            "active" => proto::SubscriberStatus::Active,
            "suspended" => proto::SubscriberStatus::Suspended,
            "expired" => proto::SubscriberStatus::Expired,
            _ => proto::SubscriberStatus::Disabled,
        };
        let down: Option<i64> = r.get(10)?;
        let up: Option<i64> = r.get(11)?;
        out.push(proto::SubscriberState {
            id: r.get(0)?,
            username: r.get(1)?,
            password: secrets.open(&sealed).map_err(|e| Error::internal(&e))?,
            status,
            expires_at: r.get(4)?,
            static_ipv4: r.get(5)?,
            mac: r.get(6)?,
            max_sessions: r.get::<_, i64>(7)? as u32,
            tenant_id: r.get(8)?,
            rate: match (down, up) {
                (Some(d), Some(u)) => Some(proto::Rate {
                    download_kbps: d as u64,
                    upload_kbps: u as u64,
                    burst_download_kbps: r.get::<_, Option<i64>>(12)?.map(|v| v as u64),
                    burst_upload_kbps: r.get::<_, Option<i64>>(13)?.map(|v| v as u64),
                }),
                _ => None,
            },
        });
    }
    Ok(out)
}

fn nas_list(
    conn: &Connection,
    where_: &str,
    args: &[&dyn rusqlite::ToSql],
    secrets: &SecretBox,
) -> Result<Vec<proto::NasState>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, ip, secret_sealed, kind, coa_port, require_message_authenticator FROM nas WHERE {where_} ORDER BY id"
    ))?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let sealed: Vec<u8> = r.get(2)?;
        out.push(proto::NasState {
            id: r.get(0)?,
            ip: r.get(1)?,
            secret: secrets.open(&sealed).map_err(|e| Error::internal(&e))?,
            kind: match r.get::<_, String>(3)?.as_str() {
                "mikrotik" => proto::NasKind::Mikrotik,
                "accel-ppp" => proto::NasKind::AccelPpp,
                _ => proto::NasKind::Generic,
            },
            coa_port: r.get(4)?,
            require_message_authenticator: r.get(5)?,
        });
    }
    Ok(out)
}

fn settings(conn: &Connection, site_id: i64) -> Result<proto::SiteSettings> {
    Ok(conn.cached_row(
        "SELECT acct_interim_interval_secs, shaping_enabled FROM sites WHERE id = ?1",
        [site_id],
        |r| {
            Ok(proto::SiteSettings {
                acct_interim_interval_secs: r.get(0)?,
                shaping_enabled: r.get(1)?,
            })
        },
    )?)
}

/// The whole desired state of a site.
pub fn snapshot(
    conn: &Connection,
    site_id: i64,
    secrets: &SecretBox,
) -> Result<proto::StateResponse> {
    Ok(proto::StateResponse {
        kind: proto::StateKind::Snapshot,
        revision: site_head(conn, site_id)?,
        subscribers: subscribers(conn, "s.site_id = ?1", &[&site_id], secrets)?,
        removed_subscribers: vec![],
        nas: nas_list(conn, "site_id = ?1", &[&site_id], secrets)?,
        removed_nas: vec![],
        settings: Some(settings(conn, site_id)?),
        brands: site_brands(conn, site_id)?,
    })
}

/// The state a site should have, as of `since`: a snapshot when `since` is 0 or not
/// a revision this feed could have given (ahead of it: the controller was restored),
/// the changed rows otherwise, or `Unchanged`. Reads in one transaction so the
/// revision and the rows agree.
pub fn state(
    conn: &Connection,
    site_id: i64,
    since: u64,
    secrets: &SecretBox,
) -> Result<proto::StateResponse> {
    let tx = conn.unchecked_transaction()?;
    let head = site_head(&tx, site_id)?;
    if since == 0 || since > head {
        return snapshot(&tx, site_id, secrets);
    }
    if since == head {
        return Ok(proto::StateResponse {
            kind: proto::StateKind::Unchanged,
            revision: head,
            subscribers: vec![],
            removed_subscribers: vec![],
            nas: vec![],
            removed_nas: vec![],
            settings: None,
            brands: vec![],
        });
    }
    let mut changed: Vec<(String, i64)> = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT DISTINCT entity, entity_id FROM site_changes WHERE site_id = ?1 AND revision > ?2 AND revision <= ?3",
        )?;
        let rows = stmt.query_map(params![site_id, since as i64, head as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        for r in rows {
            changed.push(r?);
        }
    }
    let ids = |entity: &str| -> String {
        serde_json::to_string(
            &changed
                .iter()
                .filter(|c| c.0 == entity)
                .map(|c| c.1)
                .collect::<Vec<_>>(),
        )
        .expect("ids")
    };
    let (sub_ids, nas_ids) = (ids("subscriber"), ids("nas"));
    let subs = subscribers(
        &tx,
        "s.site_id = ?1 AND s.id IN (SELECT value FROM json_each(?2))",
        &[&site_id, &sub_ids],
        secrets,
    )?;
    let nas = nas_list(
        &tx,
        "site_id = ?1 AND id IN (SELECT value FROM json_each(?2))",
        &[&site_id, &nas_ids],
        secrets,
    )?;
    let present_subs: BTreeSet<i64> = subs.iter().map(|s| s.id).collect();
    let present_nas: BTreeSet<i64> = nas.iter().map(|n| n.id).collect();
    // A settings change also stands for a brand change (0004's trigger): send the
    // settings and all the site's brands then; otherwise the brands of the subscribers
    // sent, whose owner may be new to the site.
    let (settings, brands) = if changed.iter().any(|c| c.0 == "settings") {
        (Some(settings(&tx, site_id)?), site_brands(&tx, site_id)?)
    } else {
        let mut owners: Vec<i64> = subs.iter().map(|s| s.tenant_id).collect();
        owners.sort_unstable();
        owners.dedup();
        (None, super::brand::effective(&tx, &owners)?)
    };
    Ok(proto::StateResponse {
        kind: proto::StateKind::Delta,
        revision: head,
        removed_subscribers: changed
            .iter()
            .filter(|c| c.0 == "subscriber" && !present_subs.contains(&c.1))
            .map(|c| c.1)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        removed_nas: changed
            .iter()
            .filter(|c| c.0 == "nas" && !present_nas.contains(&c.1))
            .map(|c| c.1)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        nas,
        brands,
        settings,
        subscribers: subs,
    })
}

/// The effective brand of every tenant owning a subscriber at the site.
fn site_brands(conn: &Connection, site_id: i64) -> Result<Vec<proto::Brand>> {
    let mut owners = Vec::new();
    let mut stmt =
        conn.prepare_cached("SELECT DISTINCT tenant_id FROM subscribers WHERE site_id = ?1")?;
    for id in stmt.query_map([site_id], |r| r.get::<_, i64>(0))? {
        owners.push(id?);
    }
    super::brand::effective(conn, &owners)
}

/// The hex SHA-256 of the site's state as the controller sees it.
pub fn expected_digest(conn: &Connection, site_id: i64, secrets: &SecretBox) -> Result<String> {
    let s = snapshot(conn, site_id, secrets)?;
    Ok(hex::encode(sha256(
        proto::digest_input(&s.subscribers, &s.nas).as_bytes(),
    )))
}

/// Records what the agent applied; the digest is compared when it claims the head.
pub fn ack(
    conn: &Connection,
    who: AgentIdentity,
    a: &proto::Ack,
    secrets: &SecretBox,
) -> Result<Option<bool>> {
    if a.digest.len() != 64 || !a.digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid("digest must be a hex SHA-256"));
    }
    let head = site_head(conn, who.site_id)?;
    if a.revision > head {
        return Err(Error::unprocessable(
            "revision_ahead",
            format!(
                "revision {} is ahead of this site's feed ({head}); fetch a snapshot",
                a.revision
            ),
        ));
    }
    let matches = if a.revision == head {
        Some(expected_digest(conn, who.site_id, secrets)? == a.digest.to_ascii_lowercase())
    } else {
        None
    };
    conn.cached_exec(
        "UPDATE agents SET applied_revision = ?2, reported_digest = ?3, digest_matches = ?4, version = ?5, last_seen_at = ?6 WHERE id = ?1",
        params![who.agent_id, a.revision as i64, a.digest, matches, a.agent_version, super::now()],
    )?;
    Ok(matches)
}

pub fn touch(conn: &Connection, who: AgentIdentity) -> Result<()> {
    conn.cached_exec(
        "UPDATE agents SET last_seen_at = ?2 WHERE id = ?1",
        params![who.agent_id, super::now()],
    )?;
    Ok(())
}

/// Stores a batch; each (agent, seq) once. Accounting updates sessions and usage only
/// the first time its record is stored, so a redelivered batch counts nothing twice.
pub fn ingest(
    conn: &Connection,
    who: AgentIdentity,
    batch: &proto::EventBatch,
) -> Result<proto::EventsAccepted> {
    if batch.events.is_empty() || batch.events.len() > proto::MAX_BATCH {
        return Err(Error::invalid(format!(
            "a batch holds 1 to {} events",
            proto::MAX_BATCH
        )));
    }
    let now = super::now();
    let mut through = 0u64;
    for e in &batch.events {
        if e.seq == 0 || e.seq > i64::MAX as u64 {
            return Err(Error::invalid("event seq must be 1 or more"));
        }
        let kind = match &e.body {
            proto::EventBody::Accounting(_) => "accounting",
            proto::EventBody::AuthReject { .. } => "auth_reject",
            proto::EventBody::NasSessionsClosed { .. } => "nas_sessions_closed",
            proto::EventBody::Coa(_) => "coa",
        };
        let inserted = conn.cached_exec(
            "INSERT OR IGNORE INTO agent_events (agent_id, seq, site_id, at, type, body, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                who.agent_id,
                e.seq as i64,
                who.site_id,
                e.at,
                kind,
                serde_json::to_string(&e.body).expect("events serialize"),
                now
            ],
        )?;
        if inserted == 1 {
            apply(conn, who.site_id, e)?;
        }
        through = through.max(e.seq);
    }
    Ok(proto::EventsAccepted { through })
}

fn apply(conn: &Connection, site_id: i64, e: &proto::Event) -> Result<()> {
    match &e.body {
        proto::EventBody::Accounting(a) => {
            let subscriber: Option<i64> = conn
                .cached_row(
                    "SELECT id FROM subscribers WHERE username = ?1",
                    [&a.username],
                    |r| r.get(0),
                )
                .optional()?;
            let prev: Option<(i64, i64)> = conn
                .cached_row(
                    "SELECT input_octets, output_octets FROM online_sessions WHERE site_id = ?1 AND nas_ip = ?2 AND session_id = ?3",
                    params![site_id, a.nas_ip, a.session_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (inp, out) = (a.input_octets as i64, a.output_octets as i64);
            // Counters only grow within a session; a smaller value is a NAS restart
            // of the counter, so the whole new value is new traffic.
            let delta = |now: i64, before: i64| if now >= before { now - before } else { now };
            let (din, dout) = match prev {
                Some((pi, po)) => (delta(inp, pi), delta(out, po)),
                None => (inp, out),
            };
            if let Some(sid) = subscriber
                && (din > 0 || dout > 0)
            {
                let day = time::OffsetDateTime::from_unix_timestamp(e.at)
                    .map(|t| t.date().to_string())
                    .unwrap_or_else(|_| "1970-01-01".into());
                conn.cached_exec(
                    "INSERT INTO usage_daily (subscriber_id, day, input_octets, output_octets) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (subscriber_id, day) DO UPDATE SET input_octets = input_octets + excluded.input_octets,
                         output_octets = output_octets + excluded.output_octets",
                    params![sid, day, din, dout],
                )?;
            }
            match a.status {
                proto::AcctStatus::Stop => {
                    conn.cached_exec(
                        "DELETE FROM online_sessions WHERE site_id = ?1 AND nas_ip = ?2 AND session_id = ?3",
                        params![site_id, a.nas_ip, a.session_id],
                    )?;
                }
                proto::AcctStatus::Start | proto::AcctStatus::InterimUpdate => {
                    conn.cached_exec(
                        "INSERT INTO online_sessions (site_id, nas_ip, session_id, username, subscriber_id, framed_ip,
                             calling_station_id, started_at, updated_at, session_time, input_octets, output_octets)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                         ON CONFLICT (site_id, nas_ip, session_id) DO UPDATE SET framed_ip = coalesce(excluded.framed_ip, framed_ip),
                             updated_at = excluded.updated_at, session_time = excluded.session_time,
                             input_octets = excluded.input_octets, output_octets = excluded.output_octets",
                        params![
                            site_id,
                            a.nas_ip,
                            a.session_id,
                            a.username,
                            subscriber,
                            a.framed_ip,
                            a.calling_station_id,
                            e.at - a.session_time as i64,
                            e.at,
                            a.session_time as i64,
                            inp,
                            out
                        ],
                    )?;
                }
            }
        }
        proto::EventBody::NasSessionsClosed { nas_ip, .. } => {
            conn.cached_exec(
                "DELETE FROM online_sessions WHERE site_id = ?1 AND nas_ip = ?2",
                params![site_id, nas_ip],
            )?;
        }
        proto::EventBody::AuthReject { .. } | proto::EventBody::Coa(_) => {}
    }
    Ok(())
}

/// A site's agent as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentStatus {
    pub agent_id: i64,
    pub site_id: i64,
    pub hostname: String,
    pub version: String,
    pub tunnel_address: String,
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
        "SELECT id, site_id, hostname, version, tunnel_address, enrolled_at, last_seen_at, applied_revision, digest_matches
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
                tunnel_address: r.get(4)?,
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

/// An online session as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OnlineSession {
    pub site_id: i64,
    pub nas_ip: String,
    pub session_id: String,
    pub username: String,
    pub framed_ip: Option<String>,
    pub calling_station_id: Option<String>,
    pub started_at: String,
    pub updated_at: String,
    pub session_time: i64,
    pub input_octets: i64,
    pub output_octets: i64,
}

pub fn sessions_of(conn: &Connection, subscriber_id: i64) -> Result<Vec<OnlineSession>> {
    let mut stmt = conn.prepare_cached(
        "SELECT site_id, nas_ip, session_id, username, framed_ip, calling_station_id, started_at, updated_at, session_time,
                input_octets, output_octets
         FROM online_sessions WHERE subscriber_id = ?1 ORDER BY started_at",
    )?;
    let rows = stmt.query_map([subscriber_id], |r| {
        Ok(OnlineSession {
            site_id: r.get(0)?,
            nas_ip: r.get(1)?,
            session_id: r.get(2)?,
            username: r.get(3)?,
            framed_ip: r.get(4)?,
            calling_station_id: r.get(5)?,
            started_at: super::rfc3339(r.get(6)?),
            updated_at: super::rfc3339(r.get(7)?),
            session_time: r.get(8)?,
            input_octets: r.get(9)?,
            output_octets: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Traffic of one UTC day.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageDay {
    pub day: String,
    /// Bytes from the subscriber.
    pub input_octets: i64,
    /// Bytes to the subscriber.
    pub output_octets: i64,
}

pub fn usage_of(conn: &Connection, subscriber_id: i64, since_day: &str) -> Result<Vec<UsageDay>> {
    let mut stmt = conn.prepare_cached(
        "SELECT day, input_octets, output_octets FROM usage_daily WHERE subscriber_id = ?1 AND day >= ?2 ORDER BY day",
    )?;
    let rows = stmt.query_map(params![subscriber_id, since_day], |r| {
        Ok(UsageDay {
            day: r.get(0)?,
            input_octets: r.get(1)?,
            output_octets: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One event an agent reported, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SiteEvent {
    pub agent_id: i64,
    /// The agent's sequence number.
    pub seq: i64,
    /// When it happened at the site (unix seconds).
    pub at: i64,
    /// When the controller stored it.
    pub received_at: i64,
    /// `accounting`, `auth_reject`, `nas_sessions_closed` or `coa`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event as the agent sent it.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
}

/// A site's events, newest first: those older than `before` (an `at`, exclusive) when
/// given, of one `kind` when given, at most `limit`.
pub fn site_events(
    conn: &Connection,
    site_id: i64,
    kind: Option<&str>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<SiteEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT agent_id, seq, at, received_at, type, body FROM agent_events
         WHERE site_id = ?1 AND (?2 IS NULL OR type = ?2) AND (?3 IS NULL OR at < ?3)
         ORDER BY at DESC, agent_id DESC, seq DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![site_id, kind, before, limit], |r| {
        Ok(SiteEvent {
            agent_id: r.get(0)?,
            seq: r.get(1)?,
            at: r.get(2)?,
            received_at: r.get(3)?,
            kind: r.get(4)?,
            body: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or(serde_json::Value::Null),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
