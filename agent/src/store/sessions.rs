//! PPP/IPoE sessions online by accounting: the `sessions` table, mirrored in memory
//! by username and by address, and the RADIUS [`Backend`] that journals accounting and
//! moves sessions on and off line in one transaction.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use outpost_protocol as proto;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Result, Store, StoreError};
use crate::clock::now;
use crate::radius::{Backend, BackendError};

/// An online session as enforcement needs it: where to send a Disconnect, and which
/// addresses to block while its subscriber is cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineSession {
    pub nas_ip: String,
    pub session_id: String,
    pub username: String,
    pub framed_ip: Option<IpAddr>,
    pub framed_ipv6: Option<IpAddr>,
}

/// The online sessions in memory, indexed by username and by address, so enforcement
/// finds a subscriber's addresses without reading the table.
#[derive(Default)]
pub(super) struct Sessions {
    by_key: HashMap<(String, String), OnlineSession>,
    by_user: HashMap<String, Vec<(String, String)>>,
    by_addr: HashMap<IpAddr, (String, String)>,
}

impl Sessions {
    /// Puts `s` online; returns the usernames of the other sessions it took an address
    /// from (which went offline).
    pub(super) fn upsert(&mut self, s: OnlineSession) -> Vec<String> {
        let mut displaced = Vec::new();
        let key = (s.nas_ip.clone(), s.session_id.clone());
        // An interim without Framed-IP-Address keeps the address the Start gave.
        let (v4, v6) = match self.by_key.get(&key) {
            Some(old) => (
                s.framed_ip.or(old.framed_ip),
                s.framed_ipv6.or(old.framed_ipv6),
            ),
            None => (s.framed_ip, s.framed_ipv6),
        };
        // One address is online once: a session still holding it missed its Stop (the
        // NAS rebooted, a packet was lost). The newest claim wins, so a stale record of a
        // blocked subscriber cannot block whoever holds the address now.
        for ip in [v4, v6].into_iter().flatten() {
            if let Some(other) = self.by_addr.get(&ip).cloned()
                && other != key
                && let Some(gone) = self.remove(&other)
            {
                displaced.push(gone.username);
            }
        }
        self.remove(&key);
        for ip in [v4, v6].into_iter().flatten() {
            self.by_addr.insert(ip, key.clone());
        }
        self.by_user
            .entry(s.username.clone())
            .or_default()
            .push(key.clone());
        self.by_key.insert(
            key,
            OnlineSession {
                framed_ip: v4,
                framed_ipv6: v6,
                ..s
            },
        );
        displaced
    }

    /// Takes a session offline; returns it if it was online.
    fn remove(&mut self, key: &(String, String)) -> Option<OnlineSession> {
        let old = self.by_key.remove(key)?;
        {
            if let Some(keys) = self.by_user.get_mut(&old.username) {
                keys.retain(|k| k != key);
                if keys.is_empty() {
                    self.by_user.remove(&old.username);
                }
            }
            for ip in [old.framed_ip, old.framed_ipv6].into_iter().flatten() {
                if self.by_addr.get(&ip) == Some(key) {
                    self.by_addr.remove(&ip);
                }
            }
        }
        Some(old)
    }

    fn close_nas(&mut self, nas_ip: &str) {
        let keys: Vec<_> = self
            .by_key
            .keys()
            .filter(|k| k.0 == nas_ip)
            .cloned()
            .collect();
        for k in keys {
            let _ = self.remove(&k);
        }
    }
}
impl Store {
    /// Every online session, ordered by NAS and Acct-Session-Id.
    pub fn sessions(&self) -> Vec<OnlineSession> {
        let s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<OnlineSession> = s.by_key.values().cloned().collect();
        all.sort_by(|a, b| (&a.nas_ip, &a.session_id).cmp(&(&b.nas_ip, &b.session_id)));
        all
    }

    /// The online sessions of `username`, with their addresses.
    pub fn sessions_of(&self, username: &str) -> Vec<OnlineSession> {
        let s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.by_user
            .get(username)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| s.by_key.get(k).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Mirrors a committed accounting record into the in-memory sessions and wakes
    /// enforcement when an address appeared, moved or went away for a subscriber whose
    /// addresses it uses ([`Store::edge_follows`]).
    fn note_session(&self, a: &proto::Accounting) {
        let key = (a.nas_ip.clone(), a.session_id.clone());
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let before = s.by_key.get(&key).map(|o| (o.framed_ip, o.framed_ipv6));
        let mut displaced = Vec::new();
        match a.status {
            proto::AcctStatus::Start | proto::AcctStatus::InterimUpdate => {
                displaced = s.upsert(OnlineSession {
                    nas_ip: a.nas_ip.clone(),
                    session_id: a.session_id.clone(),
                    username: a.username.clone(),
                    framed_ip: a.framed_ip.as_deref().and_then(|ip| ip.parse().ok()),
                    framed_ipv6: a.framed_ipv6.as_deref().and_then(|ip| ip.parse().ok()),
                });
            }
            proto::AcctStatus::Stop => {
                let _ = s.remove(&key);
            }
        }
        let after = s.by_key.get(&key).map(|o| (o.framed_ip, o.framed_ipv6));
        drop(s);
        let wake = (before != after && self.edge_follows(&a.username))
            || displaced.iter().any(|u| self.edge_follows(u));
        if wake {
            self.changed.notify_one();
        }
    }

    /// Whether enforcement uses the session addresses of `username`: those of a
    /// subscriber it cuts off (by the same rule it applies, `edge::standing`) or shapes.
    /// Anyone else's sessions do not change what it decides; waking it for them made it
    /// decide the whole site again for every accounting record (with 100,000
    /// subscribers that took the core: 5,000 records a second). A subscriber who expires
    /// while online is found by enforcement's own timer at the expiry.
    fn edge_follows(&self, username: &str) -> bool {
        let desired = self.desired.read().unwrap_or_else(|p| p.into_inner());
        let Some(sub) = desired.subscribers.get(username) else {
            // Not a subscriber of this site: enforcement never looks its sessions up.
            return false;
        };
        crate::edge::standing(sub, now()).is_some()
            || (sub.rate.is_some() && desired.settings.as_ref().is_some_and(|s| s.shaping_enabled))
    }
    /// All online sessions.
    pub fn online_total(&self) -> u32 {
        self.online
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }
}

/// What one journaled record did inside its transaction, applied to the in-memory
/// mirrors once the transaction is committed ([`Store::note_recorded`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Recorded {
    /// Its outbox sequence number (0: dropped by a full outbox, see `append`).
    pub(super) seq: u64,
    /// How many sessions its username has more (or fewer) online.
    delta: i32,
    /// Whether it moved the session table.
    moved: bool,
}

impl Store {
    /// Journals `event` inside `tx` and, for accounting, moves the session table: Start
    /// and Interim-Update put the session online, Stop takes it off. `ahead` counts the
    /// records journaled earlier in the same transaction, for the outbox bound.
    pub(super) fn record_in(
        &self,
        tx: &rusqlite::Transaction<'_>,
        event: &proto::EventBody,
        ahead: u64,
    ) -> Result<Recorded> {
        let seq = self.append_at(tx, now(), event, ahead)?;
        let mut delta = 0i32;
        // Whether the record moved the session table; a record older than the
        // session's end is journaled (the controller decides about its traffic) but
        // brings nothing back online.
        let mut moved = false;
        if let proto::EventBody::Accounting(a) = event {
            let at = a.event_time.unwrap_or_else(now);
            match a.status {
                proto::AcctStatus::Start | proto::AcctStatus::InterimUpdate => {
                    let ended: Option<i64> = tx
                        .prepare_cached(
                            "SELECT ended_at FROM stopped_sessions WHERE nas_ip = ?1 AND session_id = ?2",
                        )?
                        .query_row(params![a.nas_ip, a.session_id], |r| r.get(0))
                        .optional()?;
                    if ended.is_none_or(|ended| at > ended) {
                        if ended.is_some() {
                            // A newer session under a reused id (a rebooted NAS).
                            tx.prepare_cached(
                                "DELETE FROM stopped_sessions WHERE nas_ip = ?1 AND session_id = ?2",
                            )?
                            .execute(params![a.nas_ip, a.session_id])?;
                        }
                        let known = tx
                            .prepare_cached(
                                "SELECT 1 FROM sessions WHERE nas_ip = ?1 AND session_id = ?2",
                            )?
                            .exists(params![a.nas_ip, a.session_id])?;
                        tx.prepare_cached(
                            "INSERT INTO sessions (nas_ip, session_id, username, framed_ip, framed_ipv6, started_at, updated_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                             ON CONFLICT (nas_ip, session_id) DO UPDATE SET framed_ip = coalesce(excluded.framed_ip, framed_ip),
                                 framed_ipv6 = coalesce(excluded.framed_ipv6, framed_ipv6),
                                 updated_at = excluded.updated_at",
                        )?
                        .execute(params![a.nas_ip, a.session_id, a.username, a.framed_ip, a.framed_ipv6, now()])?;
                        if !known {
                            delta = 1;
                        }
                        moved = true;
                    }
                }
                proto::AcctStatus::Stop => {
                    let gone = tx
                        .prepare_cached(
                            "DELETE FROM sessions WHERE nas_ip = ?1 AND session_id = ?2",
                        )?
                        .execute(params![a.nas_ip, a.session_id])?;
                    delta = -(gone as i32);
                    end_session(tx, &a.nas_ip, &a.session_id, at)?;
                    moved = true;
                }
            }
        }
        Ok(Recorded { seq, delta, moved })
    }

    /// Brings the backlog and the in-memory sessions up to a committed record.
    pub(super) fn note_recorded(&self, event: &proto::EventBody, done: Recorded) {
        if done.seq > 0 {
            self.backlog.fetch_add(1, Ordering::AcqRel);
        }
        let proto::EventBody::Accounting(a) = event else {
            return;
        };
        if done.moved {
            self.note_session(a);
        }
        if done.delta != 0 {
            let mut online = self.online.lock().unwrap_or_else(|p| p.into_inner());
            let n = online.entry(a.username.clone()).or_insert(0);
            *n = (*n as i32 + done.delta).max(0) as u32;
        }
    }
}

/// Online sessions per username, from the session table.
pub(super) fn count_online(conn: &Connection) -> Result<HashMap<String, u32>> {
    let mut online = HashMap::new();
    let mut stmt = conn.prepare("SELECT username, count(*) FROM sessions GROUP BY username")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (u, n) = row?;
        online.insert(u, n as u32);
    }
    Ok(online)
}
/// How long an ended session is remembered (see `stopped_sessions` in the agent's
/// migration 0004).
const REMEMBER_ENDED_SECS: i64 = 86_400;

/// Remembers that session `session_id` of `nas_ip` ended at `at` (the NAS's event
/// time), and forgets ends older than a day.
fn end_session(
    tx: &rusqlite::Transaction<'_>,
    nas_ip: &str,
    session_id: &str,
    at: i64,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO stopped_sessions (nas_ip, session_id, ended_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (nas_ip, session_id) DO UPDATE SET ended_at = max(ended_at, excluded.ended_at)",
    )?
    .execute(params![nas_ip, session_id, at])?;
    tx.prepare_cached("DELETE FROM stopped_sessions WHERE ended_at < ?1")?
        .execute([now() - REMEMBER_ENDED_SECS])?;
    Ok(())
}

pub(super) fn backend_err(what: &str, e: StoreError) -> BackendError {
    BackendError::new(what.to_string(), e)
}

impl Backend for Store {
    fn nas(&self, ip: IpAddr) -> Option<Arc<proto::NasState>> {
        self.desired
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .nas
            .get(&ip)
            .cloned()
    }

    fn subscriber(&self, username: &str) -> Option<Arc<proto::SubscriberState>> {
        self.desired
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .subscribers
            .get(username)
            .cloned()
    }

    fn settings(&self) -> proto::SiteSettings {
        Store::settings(self)
    }

    fn online_sessions(&self, username: &str) -> u32 {
        self.online
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(username)
            .copied()
            .unwrap_or(0)
    }

    fn record(&self, event: proto::EventBody) -> Result<(), BackendError> {
        self.record_batch(vec![event])
            .pop()
            .unwrap_or_else(|| Err(BackendError::msg("journal accounting: no result")))
    }

    fn record_batch(&self, events: Vec<proto::EventBody>) -> Vec<Result<(), BackendError>> {
        self.record_together(events)
    }

    fn close_nas_sessions(&self, nas_ip: &str, reason: &str) -> Result<u32, BackendError> {
        let mut conn = self.conn();
        let mut run = || -> Result<u32> {
            let tx = conn.transaction()?;
            let closed = tx.execute("DELETE FROM sessions WHERE nas_ip = ?1", [nas_ip])? as u32;
            // The NAS lost its queue with its sessions and numbers them anew: an old id
            // from now on is a new session, whatever its clock says.
            tx.execute("DELETE FROM stopped_sessions WHERE nas_ip = ?1", [nas_ip])?;
            self.append(
                &tx,
                &proto::EventBody::NasSessionsClosed {
                    nas_ip: nas_ip.to_string(),
                    closed,
                    reason: reason.to_string(),
                },
            )?;
            tx.commit()?;
            Ok(closed)
        };
        let closed = run().map_err(|e| backend_err("close NAS sessions", e))?;
        drop(conn);
        self.backlog.fetch_add(1, Ordering::AcqRel);
        let online = count_online(&self.conn()).map_err(|e| backend_err("recount sessions", e))?;
        *self.online.lock().unwrap_or_else(|p| p.into_inner()) = online;
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .close_nas(nas_ip);
        self.changed.notify_one();
        Ok(closed)
    }
}
