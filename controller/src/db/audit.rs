//! The audit log: one entry per mutating call, written in the same transaction as the
//! change. Entries are append-only (triggers refuse UPDATE and DELETE) and hash-chained:
//! each entry's hash covers its own fields and the previous entry's hash, so editing or
//! removing a row behind the database's back breaks the chain at that row.

use super::Cached;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::paging::list_filter;
use super::row::stored_row;
use super::{Filter, Paging};
use crate::error::Result;
use crate::scope::Scope;
pub use crate::security::{SecurityEvent, Who};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry to append.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub who: std::borrow::Cow<'a, Who>,
    /// The tenant owning the target (whose users may read the entry).
    pub tenant_id: i64,
    /// `subscriber.update`, `security.transfer_denied`, …
    pub action: &'a str,
    pub target_kind: Option<&'a str>,
    pub target_id: Option<i64>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// Further targets (bulk actions), findable by the target filter.
    pub more_targets: &'a [i64],
    pub security: bool,
}

impl<'a> Entry<'a> {
    /// An entry about one target, with no before/after yet.
    pub fn new(
        who: &'a Who,
        tenant_id: i64,
        action: &'a str,
        target_kind: &'a str,
        target_id: i64,
    ) -> Self {
        Entry::about(
            std::borrow::Cow::Borrowed(who),
            tenant_id,
            action,
            target_kind,
            target_id,
        )
    }

    /// An entry about one target for something `actor` did (with its impersonator).
    pub fn by(
        actor: &crate::scope::Actor,
        tenant_id: i64,
        action: &'a str,
        target_kind: &'a str,
        target_id: i64,
    ) -> Self {
        let who = std::borrow::Cow::Owned(Who::from(actor));
        Entry::about(who, tenant_id, action, target_kind, target_id)
    }

    fn about(
        who: std::borrow::Cow<'a, Who>,
        tenant_id: i64,
        action: &'a str,
        target_kind: &'a str,
        target_id: i64,
    ) -> Self {
        Entry {
            who,
            tenant_id,
            action,
            target_kind: Some(target_kind),
            target_id: Some(target_id),
            before: None,
            after: None,
            more_targets: &[],
            security: false,
        }
    }
    pub fn before(mut self, v: &impl Serialize) -> Self {
        self.before = Some(serde_json::to_value(v).expect("audit value serializes"));
        self
    }
    pub fn after(mut self, v: &impl Serialize) -> Self {
        self.after = Some(serde_json::to_value(v).expect("audit value serializes"));
        self
    }
    pub fn security(mut self) -> Self {
        self.security = true;
        self
    }

    /// Writes the entry (see [`record`]).
    pub fn record(&self, conn: &Connection) -> Result<i64> {
        record(conn, self)
    }
}

/// Field names whose values never reach the audit log.
const SECRET_KEYS: &[&str] = &[
    "password",
    "password_hash",
    "secret",
    "token",
    "current_password",
    "new_password",
];

/// Replaces secret values with a marker, at any depth.
pub fn redact(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, val) in map.iter_mut() {
                    if SECRET_KEYS.contains(&k.as_str()) && !val.is_null() {
                        *val = Value::String("[redacted]".into());
                    } else {
                        walk(val);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// The fields covered by an entry's hash, in a fixed order.
#[derive(Serialize)]
struct Hashed<'a> {
    id: i64,
    at: i64,
    actor_user_id: Option<i64>,
    actor_name: &'a str,
    impersonator_id: Option<i64>,
    impersonator_name: Option<&'a str>,
    tenant_id: i64,
    action: &'a str,
    target_kind: Option<&'a str>,
    target_id: Option<i64>,
    before: Option<&'a str>,
    after: Option<&'a str>,
    ip: &'a str,
    user_agent: &'a str,
    security: bool,
}

fn chain_hash(prev: &str, h: &Hashed<'_>) -> String {
    let mut d = Sha256::new();
    d.update(prev.as_bytes());
    d.update([0x1f]);
    d.update(serde_json::to_vec(h).expect("audit fields serialize"));
    hex::encode(d.finalize())
}

/// Appends one entry; returns its id. Must run inside the change's transaction.
pub fn record(conn: &Connection, e: &Entry<'_>) -> Result<i64> {
    let (last_id, prev): (i64, String) = conn
        .cached_row(
            "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, GENESIS.to_string()));
    let id = last_id + 1;
    let at = super::now();
    let before = e.before.clone().map(|v| redact(v).to_string());
    let after = e.after.clone().map(|v| redact(v).to_string());
    let h = Hashed {
        id,
        at,
        actor_user_id: e.who.user_id,
        actor_name: &e.who.name,
        impersonator_id: e.who.impersonator.as_ref().map(|i| i.0),
        impersonator_name: e.who.impersonator.as_ref().map(|i| i.1.as_str()),
        tenant_id: e.tenant_id,
        action: e.action,
        target_kind: e.target_kind,
        target_id: e.target_id,
        before: before.as_deref(),
        after: after.as_deref(),
        ip: &e.who.ip,
        user_agent: &e.who.user_agent,
        security: e.security,
    };
    let hash = chain_hash(&prev, &h);
    conn.cached_exec(
        "INSERT INTO audit_log (id, at, actor_user_id, actor_name, impersonator_id, impersonator_name,
             tenant_id, action, target_kind, target_id, before, after, ip, user_agent, security, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        params![
            id, at, h.actor_user_id, h.actor_name, h.impersonator_id, h.impersonator_name,
            h.tenant_id, h.action, h.target_kind, h.target_id, h.before, h.after, h.ip,
            h.user_agent, h.security, prev, hash
        ],
    )?;
    if let Some(kind) = e.target_kind {
        let mut stmt = conn.prepare_cached(
            "INSERT OR IGNORE INTO audit_targets (audit_id, target_kind, target_id) VALUES (?1, ?2, ?3)",
        )?;
        for t in e.more_targets {
            stmt.execute(params![id, kind, t])?;
        }
    }
    Ok(id)
}

pub fn record_security(conn: &Connection, ev: &SecurityEvent) -> Result<i64> {
    tracing::warn!(action = %ev.action, actor = %ev.who.name, ip = %ev.who.ip, "security event");
    record(
        conn,
        &Entry {
            who: std::borrow::Cow::Borrowed(&ev.who),
            tenant_id: ev.who.tenant_id,
            action: &ev.action,
            target_kind: ev.target_kind.as_deref(),
            target_id: ev.target_id,
            before: None,
            after: Some(ev.detail.clone()),
            more_targets: &[],
            security: true,
        },
    )
}

stored_row! {
    /// An audit entry as the API shows it.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct AuditEntry in COLS, read by from_row {
        pub id: i64 = "a.id",
        /// RFC 3339.
        pub at: String = "a.at" => super::rfc3339,
        pub actor_user_id: Option<i64> = "a.actor_user_id",
        pub actor_name: String = "a.actor_name",
        pub impersonator_id: Option<i64> = "a.impersonator_id",
        pub impersonator_name: Option<String> = "a.impersonator_name",
        pub tenant_id: i64 = "a.tenant_id",
        pub action: String = "a.action",
        pub target_kind: Option<String> = "a.target_kind",
        pub target_id: Option<i64> = "a.target_id",
        pub before: Option<Value> = "a.before" => stored_json,
        pub after: Option<Value> = "a.after" => stored_json,
        pub ip: String = "a.ip",
        pub user_agent: String = "a.user_agent",
        pub security: bool = "a.security",
    }
}

/// A stored before/after: JSON text, or nothing (unreadable text reads as nothing).
fn stored_json(s: Option<String>) -> Option<Value> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

list_filter! {
    /// Newest first: a `cursor` goes to entries older than that id.
    pub struct AuditFilter {
        /// Only entries by this user.
        pub actor_user_id: Option<i64>,
        /// Exact action (`subscriber.update`) or a prefix ending in a dot (`subscriber.`).
        pub action: Option<String>,
        pub target_kind: Option<String>,
        pub target_id: Option<i64>,
        /// Only security events.
        pub security: Option<bool>,
        /// RFC 3339 lower bound (inclusive).
        #[param(value_type = Option<String>, format = DateTime)]
        pub since: Option<crate::db::paging::QueryTime>,
        /// RFC 3339 upper bound (exclusive).
        #[param(value_type = Option<String>, format = DateTime)]
        pub until: Option<crate::db::paging::QueryTime>,
    }
}

/// Newest first, within `scope`.
pub fn list(
    conn: &Connection,
    scope: &Scope,
    f: &AuditFilter,
    since: Option<i64>,
    until: Option<i64>,
    paging: Paging,
) -> Result<Vec<AuditEntry>> {
    let mut w = Filter::scoped(scope, "a.tenant_id");
    w.and_opt("a.actor_user_id = ?", f.actor_user_id);
    match f.action.as_deref() {
        Some(prefix) if prefix.ends_with('.') => {
            w.and("substr(a.action, 1, length(?)) = ?", prefix.to_string())
        }
        action => w.and_opt("a.action = ?", action.map(str::to_string)),
    };
    match (&f.target_kind, f.target_id) {
        (Some(kind), Some(id)) => {
            // Direct target, or one of a bulk entry's further targets.
            w.and_with(
                "a.id IN (SELECT id FROM audit_log WHERE target_kind = ? AND target_id = ?
                          UNION SELECT audit_id FROM audit_targets WHERE target_kind = ? AND target_id = ?)",
                vec![kind.clone().into(), id.into(), kind.clone().into(), id.into()],
            );
        }
        (kind, id) => {
            w.and_opt("a.target_kind = ?", kind.clone())
                .and_opt("a.target_id = ?", id);
        }
    }
    w.and_opt("a.security = ?", f.security)
        .and_opt("a.at >= ?", since)
        .and_opt("a.at < ?", until);
    let select = format!("SELECT {COLS} FROM audit_log a");
    w.newest_first()
        .page(conn, &select, "a.id", paging, from_row)
}

/// The outcome of walking the chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every entry's hash matches; `entries` were checked.
    Intact { entries: u64 },
    /// The first entry whose stored hash or link does not match.
    Broken { id: i64, reason: String },
}

/// Walks the whole log in id order and recomputes every hash.
pub fn verify(conn: &Connection) -> rusqlite::Result<Verdict> {
    let mut stmt = conn.prepare(
        "SELECT id, at, actor_user_id, actor_name, impersonator_id, impersonator_name, tenant_id,
                action, target_kind, target_id, before, after, ip, user_agent, security, prev_hash, hash
         FROM audit_log ORDER BY id",
    )?;
    let mut rows = stmt.query([])?;
    let mut prev = GENESIS.to_string();
    let mut expected_id = 1i64;
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let actor_name: String = r.get(3)?;
        let impersonator_name: Option<String> = r.get(5)?;
        let action: String = r.get(7)?;
        let target_kind: Option<String> = r.get(8)?;
        let before: Option<String> = r.get(10)?;
        let after: Option<String> = r.get(11)?;
        let ip: String = r.get(12)?;
        let user_agent: String = r.get(13)?;
        let stored_prev: String = r.get(15)?;
        let stored_hash: String = r.get(16)?;
        if id != expected_id {
            return Ok(Verdict::Broken {
                id: expected_id,
                reason: format!("entry {expected_id} is missing (next entry is {id})"),
            });
        }
        if stored_prev != prev {
            return Ok(Verdict::Broken {
                id,
                reason: "its link to the previous entry does not match".into(),
            });
        }
        let h = Hashed {
            id,
            at: r.get(1)?,
            actor_user_id: r.get(2)?,
            actor_name: &actor_name,
            impersonator_id: r.get(4)?,
            impersonator_name: impersonator_name.as_deref(),
            tenant_id: r.get(6)?,
            action: &action,
            target_kind: target_kind.as_deref(),
            target_id: r.get(9)?,
            before: before.as_deref(),
            after: after.as_deref(),
            ip: &ip,
            user_agent: &user_agent,
            security: r.get(14)?,
        };
        let computed = chain_hash(&prev, &h);
        if computed != stored_hash {
            return Ok(Verdict::Broken {
                id,
                reason: "its contents do not match its hash".into(),
            });
        }
        prev = stored_hash;
        expected_id += 1;
        n += 1;
    }
    Ok(Verdict::Intact { entries: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_reaches_nested_secrets() {
        let v = serde_json::json!({"username":"a","password":"p","nas":[{"secret":"s","ip":"1"}],"token":null});
        let r = redact(v);
        assert_eq!(r["password"], "[redacted]");
        assert_eq!(r["nas"][0]["secret"], "[redacted]");
        assert_eq!(r["nas"][0]["ip"], "1");
        assert_eq!(r["username"], "a");
        assert!(r["token"].is_null());
    }
}

/// An entry's hashed fields, owned: for checking entries kept outside the live chain
/// (a restored reseller's audit segment, `backup::reseller`).
#[derive(Debug, Clone)]
pub struct HashedOwned {
    pub id: i64,
    pub at: i64,
    pub actor_user_id: Option<i64>,
    pub actor_name: String,
    pub impersonator_id: Option<i64>,
    pub impersonator_name: Option<String>,
    pub tenant_id: i64,
    pub action: String,
    pub target_kind: Option<String>,
    pub target_id: Option<i64>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub ip: String,
    pub user_agent: String,
    pub security: bool,
}

impl HashedOwned {
    /// The hash this entry has when it follows `prev`, as [`record`] computes it.
    pub fn hash_after(&self, prev: &str) -> String {
        chain_hash(
            prev,
            &Hashed {
                id: self.id,
                at: self.at,
                actor_user_id: self.actor_user_id,
                actor_name: &self.actor_name,
                impersonator_id: self.impersonator_id,
                impersonator_name: self.impersonator_name.as_deref(),
                tenant_id: self.tenant_id,
                action: &self.action,
                target_kind: self.target_kind.as_deref(),
                target_id: self.target_id,
                before: self.before.as_deref(),
                after: self.after.as_deref(),
                ip: &self.ip,
                user_agent: &self.user_agent,
                security: self.security,
            },
        )
    }
}
