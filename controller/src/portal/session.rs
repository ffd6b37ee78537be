//! The portal's sessions and the steps that change them: logging in with the
//! subscriber's own PPPoE / RADIUS credential, logging out, changing that password.
//!
//! A session names one subscriber and nothing else; [`SubscriberScope`] is made only
//! from a live session, and every portal read takes it.

use std::net::IpAddr;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use super::SubscriberScope;
use crate::AppState;
use crate::crypto::{new_bearer, sha256};
use crate::db::audit::{self, Entry, SecurityEvent, Who};
use crate::db::subscriber::{self, SubscriberPatch, SubscriberStatus};
use crate::db::tenant::{self, Tenant, TenantStatus};
use crate::db::throttle::{self, Verdict};
use crate::db::{Cached, now};
use crate::error::{Error, ErrorKind, Result};
use crate::scope::Scope;

/// A live portal session found for a cookie's secret.
#[derive(Debug, Clone)]
pub struct Found {
    pub session_id: i64,
    pub subscriber_id: i64,
    pub username: String,
    pub tenant_id: i64,
    pub tenant_path: String,
}

/// Looks a cookie's secret up among live portal sessions (`opp_…`).
pub fn find(conn: &Connection, secret: &str) -> Result<Option<Found>> {
    if !secret.starts_with("opp_") {
        return Ok(None);
    }
    Ok(conn
        .cached_row(
            "SELECT p.id, s.id, s.username, s.tenant_id, t.path
             FROM portal_sessions p JOIN subscribers s ON s.id = p.subscriber_id
                JOIN tenants t ON t.id = s.tenant_id
             WHERE p.token_hash = ?1 AND p.revoked_at IS NULL AND p.expires_at > ?2",
            params![sha256(secret.as_bytes()), now()],
            |r| {
                Ok(Found {
                    session_id: r.get(0)?,
                    subscriber_id: r.get(1)?,
                    username: r.get(2)?,
                    tenant_id: r.get(3)?,
                    tenant_path: r.get(4)?,
                })
            },
        )
        .optional()?)
}

/// Where a login or change comes from.
pub struct From<'a> {
    pub ip: IpAddr,
    pub user_agent: &'a str,
    /// The reseller whose custom domain the portal is served on: only its subtree's
    /// subscribers log in there.
    pub domain: Option<&'a Tenant>,
}

impl From<'_> {
    fn who(&self, username: &str, tenant_id: i64) -> Who {
        Who {
            user_id: None,
            name: format!("subscriber {username}"),
            impersonator: None,
            tenant_id,
            ip: self.ip.to_string(),
            user_agent: self.user_agent.to_string(),
        }
    }
}

/// The throttle's keys for a subscriber's username: apart from staff e-mails, which
/// cannot start with `subscriber:`.
fn attempt(username: &str, ip: IpAddr) -> throttle::Attempt {
    throttle::Attempt {
        email: format!("subscriber:{}", username.to_ascii_lowercase()),
        ip: ip.to_string(),
    }
}

/// What a login looks up: the subscriber's id, owner, status and sealed password.
struct Login {
    id: i64,
    username: String,
    tenant_id: i64,
    tenant_path: String,
    status: SubscriberStatus,
    sealed: Vec<u8>,
}

fn by_username(conn: &Connection, username: &str) -> Result<Option<Login>> {
    Ok(conn
        .cached_row(
            "SELECT s.id, s.username, s.tenant_id, t.path, s.status, s.password_sealed
             FROM subscribers s JOIN tenants t ON t.id = s.tenant_id WHERE s.username = ?1",
            [username],
            |r| {
                Ok(Login {
                    id: r.get(0)?,
                    username: r.get(1)?,
                    tenant_id: r.get(2)?,
                    tenant_path: r.get(3)?,
                    status: SubscriberStatus::parse(&r.get::<_, String>(4)?),
                    sealed: r.get(5)?,
                })
            },
        )
        .optional()?)
}

/// Compares a typed password with a sealed one, in time that does not depend on where
/// they differ.
fn matches(state: &AppState, sealed: &[u8], typed: &str) -> bool {
    match state.secrets.open(sealed) {
        Ok(p) => crate::panel::constant_eq(p.as_bytes(), typed.as_bytes()),
        Err(_) => false,
    }
}

/// A new portal session: its cookie secret and how long it lives.
pub struct NewSession {
    pub secret: String,
    pub ttl: i64,
}

/// Logs a subscriber in with its PPPoE / RADIUS username and password: counted by the
/// staff logins' throttle before the password is compared (under `subscriber:` keys),
/// refused on another reseller's domain and for a disabled account, audited
/// (`portal.login`, or a security event).
pub async fn login(
    state: &AppState,
    username: &str,
    password: &str,
    from: &From<'_>,
) -> Result<NewSession> {
    let username = username.trim().to_string();
    let cfg = state.config.auth.clone();
    let a = attempt(&username, from.ip);
    let who = from.who(&username, crate::scope::OPERATOR_TENANT);
    let known = crate::ops::auth::count_attempt(
        state,
        a.clone(),
        who,
        "security.portal_login_throttled",
        "username",
    )
    .await?;
    let u = username.clone();
    let found = state.db.read(move |c| by_username(c, &u)).await?;
    let ok = match &found {
        Some(l) => matches(state, &l.sealed, password),
        None => {
            // The same work as a real comparison, so timing does not say which
            // usernames exist.
            let dummy = state.secrets.seal("not a password");
            matches(state, &dummy, password);
            false
        }
    };
    let Some(l) = found.filter(|_| ok) else {
        let event = SecurityEvent::new(
            from.who(&username, crate::scope::OPERATOR_TENANT),
            "security.portal_login_failed",
            json!({ "username": username }),
        );
        state
            .db
            .write(move |tx| audit::record_security(tx, &event))
            .await?;
        return Err(Error::new(
            ErrorKind::Unauthenticated,
            "invalid_credentials",
            "username or password is incorrect",
        ));
    };
    let (a2, c2) = (a.clone(), cfg.clone());
    state
        .db
        .write(move |tx| throttle::succeeded(tx, &c2, &a2, known, now()))
        .await?;
    let who = from.who(&l.username, l.tenant_id);
    if let Some(d) = from.domain
        && !l.tenant_path.starts_with(&d.path)
    {
        let event = SecurityEvent::new(
            who,
            "security.portal_login_wrong_domain",
            json!({ "domain": d.custom_domain, "domain_tenant_id": d.id }),
        )
        .target("subscriber", l.id);
        state
            .db
            .write(move |tx| audit::record_security(tx, &event))
            .await?;
        return Err(Error::forbidden(
            "wrong_domain",
            "this account does not log in at this address; use your provider's own page",
        ));
    }
    let path = l.tenant_path.clone();
    let chain = state.db.read(move |c| tenant::chain(c, &path)).await?;
    if l.status == SubscriberStatus::Disabled
        || chain.iter().any(|t| t.status != TenantStatus::Active)
    {
        return Err(Error::forbidden(
            "account_disabled",
            "this account is disabled; contact your provider",
        ));
    }
    let secret = new_bearer("opp_");
    let ttl = i64::from(state.config.auth.session_ttl_hours) * 3600;
    let (s, ip, ua) = (
        secret.clone(),
        from.ip.to_string(),
        from.user_agent.to_string(),
    );
    state
        .db
        .write(move |tx| {
            let t = now();
            tx.cached_exec(
                "INSERT INTO portal_sessions (token_hash, subscriber_id, ip, user_agent, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![sha256(s.as_bytes()), l.id, ip, ua, t, t + ttl],
            )?;
            let sid = tx.last_insert_rowid();
            Entry::new(&who, l.tenant_id, "portal.login", "subscriber", l.id)
                .after(&json!({ "portal_session": sid }))
                .record(tx)
        })
        .await?;
    Ok(NewSession { secret, ttl })
}

/// Ends the session (`portal.logout`).
pub async fn logout(state: &AppState, me: &SubscriberScope, from: &From<'_>) -> Result<()> {
    let (me, who) = (me.clone(), from.who(&me.username, me.tenant_id));
    state
        .db
        .write(move |tx| {
            tx.cached_exec(
                "UPDATE portal_sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![me.session_id, now()],
            )?;
            Entry::new(&who, me.tenant_id, "portal.logout", "subscriber", me.id())
                .record(tx)
                .map(|_| ())
        })
        .await
}

/// Changes the subscriber's one password (the PPPoE / RADIUS one) after checking the
/// current one (counted by the login throttle, so a left-open session cannot be used to
/// guess it): validated as the API validates it, written through the subscriber's own
/// update (so the feed carries it to the site), audited as `subscriber.password_change`,
/// and every other portal session of the subscriber ended.
pub async fn change_password(
    state: &AppState,
    me: &SubscriberScope,
    current: &str,
    new: &str,
    from: &From<'_>,
) -> Result<()> {
    // The rule `subscriber::update` holds it to, checked before anything is counted.
    let n = new.chars().count();
    if !(1..=128).contains(&n) || new.chars().any(char::is_control) {
        return Err(Error::invalid(
            "password must be 1 to 128 characters without control characters",
        ));
    }
    if current == new {
        return Err(Error::invalid(
            "the new password must differ from the current one",
        ));
    }
    let cfg = state.config.auth.clone();
    let a = attempt(&me.username, from.ip);
    let (a2, c2) = (a.clone(), cfg.clone());
    let verdict = state
        .db
        .write(move |tx| throttle::reserve(tx, &c2, &a2, now()))
        .await?;
    let known = match verdict {
        Verdict::Blocked { retry_after } => {
            return Err(Error::too_many(
                format!("too many wrong passwords; try again in {retry_after} seconds"),
                retry_after,
            ));
        }
        Verdict::Counted { known } => known,
    };
    let who = from.who(&me.username, me.tenant_id);
    let (me2, secrets, new, current) = (
        me.clone(),
        state.secrets.clone(),
        new.to_string(),
        current.to_string(),
    );
    let st = state.clone();
    let changed = state
        .db
        .write(move |tx| {
            let before = row(tx, &me2)?;
            if !matches(&st, &before.password_sealed, &current) {
                let event = SecurityEvent::new(
                    who,
                    "security.portal_password_wrong",
                    json!({ "username": me2.username }),
                )
                .target("subscriber", me2.id());
                audit::record_security(tx, &event)?;
                return Ok(false);
            }
            throttle::succeeded(tx, &cfg, &a, known, now())?;
            let p = SubscriberPatch {
                password: Some(new),
                ..Default::default()
            };
            subscriber::update(tx, &before, &p, None, &secrets)?;
            tx.cached_exec(
                "UPDATE portal_sessions SET revoked_at = ?3
                 WHERE subscriber_id = ?1 AND id <> ?2 AND revoked_at IS NULL",
                params![me2.id(), me2.session_id, now()],
            )?;
            Entry::new(
                &who,
                me2.tenant_id,
                "subscriber.password_change",
                "subscriber",
                me2.id(),
            )
            .before(&json!({ "password": "[old]" }))
            .after(&json!({ "password": "[changed]", "by": "portal" }))
            .record(tx)?;
            Ok(true)
        })
        .await?;
    if !changed {
        return Err(Error::new(
            ErrorKind::Invalid,
            "wrong_password",
            "the current password is not right",
        ));
    }
    Ok(())
}

/// The session's subscriber's own row.
pub fn row(conn: &Connection, me: &SubscriberScope) -> Result<subscriber::SubscriberRow> {
    subscriber::get_visible(
        conn,
        &Scope::Direct {
            tenant_id: me.tenant_id,
        },
        me.id(),
    )
}
