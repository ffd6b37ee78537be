//! The per-site change feed agents pull, and their acknowledgements.
//!
//! The feed itself is written by triggers (`migrations/controller/0003_agents.sql`):
//! every change to what a site enforces inserts a `site_changes` row whose id is the
//! revision. Here it is read: a snapshot of the site, or the rows changed since a
//! revision, each at its current state.

use std::collections::BTreeSet;

use outpost_protocol as proto;
use rusqlite::{Connection, params};

use crate::crypto::{SecretBox, sha256};
use crate::db::Cached;
use crate::db::agent::AgentIdentity;
use crate::error::{Error, Result};

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

/// Paths of resellers without WAN checks: no subscriber below any of them is probed.
/// The operator has every feature, so its own flag does not count.
fn wan_check_off_paths(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT path FROM tenants WHERE wan_check_enabled = 0 AND parent_id IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const SUB_SELECT: &str = "SELECT s.id, s.username, s.password_sealed, s.status, s.expires_at, s.static_ipv4, s.mac,
        s.max_sessions, s.tenant_id, t.path, p.download_kbps, p.upload_kbps, p.burst_download_kbps, p.burst_upload_kbps,
        s.wan_check_exempt, coalesce(s.wan_tcp_ports, p.wan_tcp_ports)
    FROM subscribers s JOIN tenants t ON t.id = s.tenant_id LEFT JOIN plans p ON p.id = s.plan_id";

fn subscribers(
    conn: &Connection,
    where_: &str,
    args: &[&dyn rusqlite::ToSql],
    secrets: &SecretBox,
) -> Result<Vec<proto::SubscriberState>> {
    let off = disabled_paths(conn)?;
    let wan_off = wan_check_off_paths(conn)?;
    let mut stmt = conn.prepare_cached(&format!("{SUB_SELECT} WHERE {where_} ORDER BY s.id"))?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let sealed: Vec<u8> = r.get(2)?;
        let path: String = r.get(9)?;
        let status = if off.iter().any(|p| path.starts_with(p.as_str())) {
            proto::SubscriberStatus::Disabled
        } else {
            proto::SubscriberStatus::parse(&r.get::<_, String>(3)?)
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
            wan_check: !r.get::<_, bool>(14)?
                && !wan_off.iter().any(|p| path.starts_with(p.as_str())),
            // The subscriber's own list, else its plan's, else (None) the site's.
            wan_tcp_ports: crate::wire::tcp_ports_read(r.get(15)?),
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
        notices: Some(crate::db::notice::for_site(
            conn,
            site_id,
            crate::db::now(),
        )?),
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
            notices: None,
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
        (None, crate::db::brand::effective(&tx, &owners)?)
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
        // Whole, with every delta: a subscriber's new plan, owner or site may change
        // which notices reach it, and the set is small.
        notices: Some(crate::db::notice::for_site(&tx, site_id, crate::db::now())?),
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
    crate::db::brand::effective(conn, &owners)
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
    if !(1..=64).contains(&a.agent_version.chars().count()) || a.revision > i64::MAX as u64 {
        return Err(Error::invalid(
            "agent_version must be 1 to 64 characters, and revision at most 2^63-1",
        ));
    }
    let head = site_head(conn, who.site_id)?;
    if a.revision > head {
        return Err(Error::conflict(
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
        params![who.agent_id, a.revision as i64, a.digest, matches, a.agent_version, crate::db::now()],
    )?;
    Ok(matches)
}
