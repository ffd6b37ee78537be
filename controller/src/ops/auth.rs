//! Logging in and acting as another user: the steps the JSON API (`http::auth`) and the
//! panel (`panel`) share, so both count failed logins the same way, check passwords on
//! the same [`crate::crypto::PasswordGate`], and leave the same audit entries. Each
//! caller only renders the answer (a JSON body and a cookie, or a page and a cookie).

use std::net::IpAddr;

use serde_json::json;

use crate::AppState;
use crate::crypto::new_bearer;
use crate::db::audit::{self, Entry, SecurityEvent, Who};
use crate::db::session;
use crate::db::tenant::{self, Tenant, TenantStatus};
use crate::db::throttle::{self, Verdict};
use crate::db::user::{self, UserRow, UserStatus};
use crate::error::{Error, ErrorKind, Result};
use crate::scope::{Actor, Credential, OPERATOR_TENANT, UserKind};

/// Why a user may not act right now, checked at login and on every request.
pub enum Refusal {
    Disabled(String),
    Address { tenant: String },
}

/// Checks the user's own status, every tenant above it, and their `allowed_ips`.
/// The operator's own `allowed_ips` binds operator staff and operator managers only.
pub fn standing(u: &UserRow, chain: &[Tenant], ip: IpAddr) -> Option<Refusal> {
    if u.status != UserStatus::Active {
        return Some(Refusal::Disabled("this account is disabled".into()));
    }
    if let Some(t) = chain.iter().find(|t| t.status != TenantStatus::Active) {
        return Some(Refusal::Disabled(format!(
            "reseller '{}' is disabled",
            t.name
        )));
    }
    for t in chain
        .iter()
        .filter(|t| t.id != OPERATOR_TENANT || u.tenant_id == OPERATOR_TENANT)
    {
        if !t.allowed_ips.is_empty() && !t.allowed_ips.iter().any(|n| n.contains(&ip)) {
            return Some(Refusal::Address {
                tenant: t.name.clone(),
            });
        }
    }
    None
}

/// Where a login comes from.
pub struct LoginFrom<'a> {
    pub ip: IpAddr,
    pub user_agent: &'a str,
    /// The reseller whose custom domain the login page was served on: only users of
    /// its subtree log in there.
    pub domain: Option<&'a Tenant>,
}

impl LoginFrom<'_> {
    /// Audit identity for a caller that is not (yet) authenticated.
    fn anonymous(&self, name: &str, tenant_id: i64, user_id: Option<i64>) -> Who {
        Who {
            user_id,
            name: name.to_string(),
            impersonator: None,
            tenant_id,
            ip: self.ip.to_string(),
            user_agent: self.user_agent.to_string(),
        }
    }
}

/// A new session: the user and the session cookie's secret.
pub struct NewSession {
    pub user: UserRow,
    pub token: String,
    /// Seconds the session lives.
    pub ttl: i64,
}

/// Counts a login attempt (`attempt`) in the throttle before any password is checked:
/// `Ok(known)` when it may go on (`known`: the address has logged in as this name
/// before), else 429 with the wait, and a `throttled_event` security entry whose detail
/// names the login under `name_field`. Staff logins and the subscriber portal share it.
pub(crate) async fn count_attempt(
    state: &AppState,
    attempt: throttle::Attempt,
    who: Who,
    throttled_event: &'static str,
    name_field: &'static str,
) -> Result<bool> {
    let cfg = state.config.auth.clone();
    let verdict = state
        .db
        .write(move |tx| {
            let v = throttle::reserve(tx, &cfg, &attempt, crate::db::now())?;
            if let Verdict::Blocked { retry_after } = v {
                let event = SecurityEvent::new(
                    who,
                    throttled_event,
                    json!({ name_field: attempt.email, "retry_after": retry_after }),
                );
                audit::record_security(tx, &event)?;
            }
            Ok(v)
        })
        .await?;
    match verdict {
        Verdict::Blocked { retry_after } => Err(Error::too_many(
            format!("too many failed logins; try again in {retry_after} seconds"),
            retry_after,
        )),
        Verdict::Counted { known } => Ok(known),
    }
}

/// Logs in with email and password: throttled per email and address before any hashing,
/// the password checked on the gate's threads, the user's standing checked, a session
/// created and `session.login` audited.
pub async fn login(
    state: &AppState,
    email: &str,
    password: &str,
    from: &LoginFrom<'_>,
) -> Result<NewSession> {
    let cfg = state.config.auth.clone();
    let email = email.trim().to_ascii_lowercase();
    let attempt = throttle::Attempt {
        email: email.clone(),
        ip: from.ip.to_string(),
    };
    // A slot before anything is counted: an attempt refused for want of one (503) has
    // not been judged, and one that is throttled costs no hashing.
    let slot = state.password_checks.slot().await?;
    // Counted before the password is hashed, so concurrent attempts cannot outrun it.
    let who = from.anonymous(&email, OPERATOR_TENANT, None);
    let known = count_attempt(
        state,
        attempt.clone(),
        who,
        "security.login_throttled",
        "email",
    )
    .await?;

    let (hasher, db) = (state.hasher.clone(), state.db.clone());
    let lookup_email = email.clone();
    let found = db
        .read(move |c| user::get_by_email(c, &lookup_email))
        .await?;
    let password = password.to_string();
    let (found, ok) = slot
        .run(move || match found {
            Some(u) => {
                let ok = hasher.verify(&password, &u.password_hash);
                (Some(u), ok)
            }
            None => {
                hasher.verify_dummy(&password);
                (None, false)
            }
        })
        .await?;

    let Some(u) = found.filter(|_| ok) else {
        // Already counted by `reserve`.
        let who = from.anonymous(&email, OPERATOR_TENANT, None);
        let event = SecurityEvent::new(who, "security.login_failed", json!({ "email": email }));
        state
            .db
            .write(move |tx| audit::record_security(tx, &event))
            .await?;
        return Err(Error::new(
            ErrorKind::Unauthenticated,
            "invalid_credentials",
            "email or password is incorrect",
        ));
    };
    state
        .db
        .write(move |tx| throttle::succeeded(tx, &cfg, &attempt, known, crate::db::now()))
        .await?;

    let path = u.tenant_path.clone();
    let chain = state.db.read(move |c| tenant::chain(c, &path)).await?;
    let who = from.anonymous(
        &format!("{} <{}>", u.name, u.email),
        u.tenant_id,
        Some(u.id),
    );
    if let Some(d) = from.domain
        && !u.tenant_path.starts_with(&d.path)
    {
        let event = SecurityEvent::new(
            who,
            "security.login_wrong_domain",
            json!({ "domain": d.custom_domain, "domain_tenant_id": d.id }),
        );
        state
            .db
            .write(move |tx| audit::record_security(tx, &event))
            .await?;
        return Err(Error::forbidden(
            "wrong_domain",
            "this account does not log in at this address; use your provider's panel",
        ));
    }
    match standing(&u, &chain, from.ip) {
        None => {}
        Some(Refusal::Disabled(msg)) => return Err(Error::forbidden("account_disabled", msg)),
        Some(Refusal::Address { tenant }) => {
            let event = SecurityEvent::new(
                who,
                "security.ip_not_allowed",
                json!({ "ip": from.ip.to_string(), "restricted_by": tenant, "phase": "login" }),
            );
            state
                .db
                .write(move |tx| audit::record_security(tx, &event))
                .await?;
            return Err(Error::forbidden(
                "ip_not_allowed",
                format!("logins for '{tenant}' are not allowed from {}", from.ip),
            ));
        }
    }

    let token = new_bearer("ops_");
    let ttl = state.config.auth.session_ttl_hours as i64 * 3600;
    let (tok, uid, ip, ua) = (
        token.clone(),
        u.id,
        from.ip.to_string(),
        from.user_agent.to_string(),
    );
    let tenant_id = u.tenant_id;
    state
        .db
        .write(move |tx| {
            let sid = session::create(tx, &tok, uid, None, &ip, &ua, ttl)?;
            audit::record(
                tx,
                &Entry::new(&who, tenant_id, "session.login", "session", sid),
            )
        })
        .await?;
    Ok(NewSession {
        user: u,
        token,
        ttl,
    })
}

/// How long an impersonation session lives: it is for a support call, not a working day.
pub const IMPERSONATION_TTL: i64 = 3600;

/// Starts a session as user `id` of the actor's subtree (support). The new session
/// records the actor as the impersonator on every audit entry. Operator and reseller
/// logins only, in their own session; operator staff and oneself cannot be targets.
pub async fn impersonate(state: &AppState, actor: &Actor, id: i64) -> Result<NewSession> {
    if actor.kind == UserKind::Manager || actor.impersonator.is_some() {
        return Err(Error::forbidden(
            "permission_denied",
            "only operator and reseller logins, in their own session, may impersonate",
        ));
    }
    let target = state.read_scoped(actor, move |c, s| user::get_visible(c, s, id));
    let target = target.await?;
    if target.id == actor.user_id || target.kind == UserKind::Operator {
        return Err(Error::forbidden(
            "permission_denied",
            "operator staff and yourself cannot be impersonated",
        ));
    }
    let token = new_bearer("ops_");
    let ttl = IMPERSONATION_TTL;
    let who = Who::from(actor);
    let (tok, ip, ua, imp, t) = (
        token.clone(),
        actor.ip.to_string(),
        actor.user_agent.clone(),
        actor.user_id,
        target.clone(),
    );
    state
        .db
        .write(move |tx| {
            session::create(tx, &tok, t.id, Some(imp), &ip, &ua, ttl)?;
            audit::record(
                tx,
                &Entry::new(&who, t.tenant_id, "user.impersonate", "user", t.id).security(),
            )
        })
        .await?;
    Ok(NewSession {
        user: target,
        token,
        ttl,
    })
}

/// Ends the credential the actor's request used (`session.logout` in the audit log).
pub async fn logout(state: &AppState, actor: &Actor) -> Result<()> {
    let who = Who::from(actor);
    let cred = actor.credential.clone();
    let (kind, id) = match cred {
        Credential::Session { id } => ("session", id),
        Credential::ApiToken { id } => ("api_token", id),
    };
    let tenant_id = actor.tenant_id;
    state
        .db
        .write(move |tx| {
            session::revoke(tx, &cred)?;
            audit::record(tx, &Entry::new(&who, tenant_id, "session.logout", kind, id))
        })
        .await?;
    Ok(())
}
