//! Authentication: who is calling, from where, and with what rights.
//!
//! - [`Actor`] is an extractor: it resolves the session cookie or `Bearer` token, checks
//!   the user and every tenant above it are active, and enforces `allowed_ips` on every
//!   request (a session that moves to a refused address is revoked).
//! - [`ClientMeta`] is the caller's address (from the socket; from `X-Forwarded-For`
//!   only behind a configured trusted proxy) and user agent.
//! - Login, logout, `me`, password change, API tokens and impersonation live here too.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, SameSite};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, AppState};
use crate::crypto::new_bearer;
use crate::db::audit::{self, Entry, SecurityEvent, Who};
use crate::db::tenant::{self, Reseller};
use crate::db::user::{self, User, UserRow};
use crate::db::{self as store, session};
use crate::error::{Error, Result};
use crate::ops::auth::{self, Refusal, standing};
use crate::scope::{Actor, Credential, PermSet};

pub const SESSION_COOKIE: &str = "outpost_session";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login, logout))
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(impersonate))
}

/// The caller's address and user agent.
#[derive(Debug, Clone)]
pub struct ClientMeta {
    pub ip: IpAddr,
    pub user_agent: String,
}

/// The client address: the socket peer, unless that peer is a trusted proxy, in which
/// case the right-most `X-Forwarded-For` hop that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

impl FromRequestParts<AppState> for ClientMeta {
    type Rejection = Error;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or_else(|| {
                Error::internal(&std::io::Error::other(
                    "no peer address: serve with connect info",
                ))
            })?;
        let ip = client_ip(peer, &parts.headers, &state.config.http.trusted_proxies);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(400)
            .collect();
        Ok(ClientMeta { ip, user_agent })
    }
}

/// The credential secret a request carries: its `Bearer` token, else its session cookie.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    // The scheme name is case-insensitive (RFC 7235 §2.1).
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some((scheme, t)) = v.trim_start().split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some(t.trim().to_string());
    }
    cookie(headers, SESSION_COOKIE)
}

/// The value of the request's cookie `name` (the API's session, the panel's CSRF and
/// return cookies).
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| Cookie::parse(c.trim().to_string()).ok())
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = Error;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let meta = ClientMeta::from_request_parts(parts, state).await?;
        let secret = bearer(&parts.headers)
            .ok_or_else(|| Error::unauthorized("log in first (session cookie or Bearer token)"))?;
        let loaded = state
            .db
            .read(move |c| {
                let Some(found) = session::find(c, &secret)? else {
                    return Ok(None);
                };
                let Some(u) = user::get(c, found.user_id)? else {
                    return Ok(None);
                };
                let chain = tenant::chain(c, &u.tenant_path)?;
                let imp = match found.impersonator_id {
                    Some(id) => {
                        user::get(c, id)?.map(|i| (i.id, format!("{} <{}>", i.name, i.email)))
                    }
                    None => None,
                };
                Ok(Some((found, u, chain, imp)))
            })
            .await?;
        let Some((found, u, chain, impersonator)) = loaded else {
            return Err(Error::unauthorized(
                "the session has ended or the token is not valid; log in again",
            ));
        };
        let actor = Actor {
            user_id: u.id,
            name: u.name.clone(),
            email: u.email.clone(),
            kind: u.kind,
            tenant_id: u.tenant_id,
            tenant_path: u.tenant_path.clone(),
            permissions: u.permissions.clone(),
            impersonator,
            credential: found.credential.clone(),
            ip: meta.ip,
            user_agent: meta.user_agent,
        };
        match standing(&u, &chain, meta.ip) {
            None => {}
            Some(Refusal::Disabled(msg)) => {
                return Err(Error::forbidden("account_disabled", msg));
            }
            Some(Refusal::Address { tenant }) => {
                let cred = found.credential.clone();
                let event = SecurityEvent::new(
                    &actor,
                    "security.ip_not_allowed",
                    json!({ "ip": meta.ip.to_string(), "restricted_by": tenant, "phase": "request" }),
                );
                // Cut the session: it moved to an address its reseller does not allow.
                state
                    .db
                    .write(move |tx| {
                        session::revoke(tx, &cred)?;
                        audit::record_security(tx, &event)
                    })
                    .await?;
                return Err(Error::forbidden(
                    "ip_not_allowed",
                    format!(
                        "logins for '{tenant}' are not allowed from {}; the session has been ended",
                        meta.ip
                    ),
                ));
            }
        }
        // Mark the credential used, at most once a minute (it is a write).
        if store::now() - found.last_seen_at >= 60 {
            let cred = found.credential;
            let _ = state.db.write(move |tx| session::touch(tx, &cred)).await;
        }
        Ok(actor)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

/// The logged-in user, its tenant and its effective permissions.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub user: User,
    pub tenant: Reseller,
    /// The functions this login may use.
    pub permissions: PermSet,
    /// Set while an operator or reseller user acts as this user.
    pub impersonator: Option<String>,
}

pub(crate) fn session_cookie(state: &AppState, token: String) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, token))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.config.auth.cookie_secure)
        .path("/")
        .max_age(time::Duration::hours(
            state.config.auth.session_ttl_hours as i64,
        ))
        .build()
}

pub(crate) fn with_cookie(cookie: Cookie<'static>, body: impl IntoResponse) -> Response {
    let mut resp = body.into_response();
    if let Ok(v) = cookie.encoded().to_string().parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// Log in with email and password; sets an HttpOnly, SameSite=Strict session cookie.
#[utoipa::path(post, path = "/api/v1/session", tag = "session", security(()), request_body = LoginRequest,
    responses((status = 200, body = Me), (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody),
              (status = 429, body = super::ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    meta: ClientMeta,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response> {
    let from = auth::LoginFrom {
        ip: meta.ip,
        user_agent: &meta.user_agent,
        domain: None,
    };
    let s = auth::login(&state, &req.email, &req.password, &from).await?;
    let me = build_me(&state, &s.user, None).await?;
    Ok(with_cookie(session_cookie(&state, s.token), Json(me)))
}

async fn build_me(state: &AppState, u: &UserRow, impersonator: Option<String>) -> Result<Me> {
    let tid = u.tenant_id;
    let t = state
        .read_one("tenant", move |c| tenant::get(c, tid))
        .await?;
    let user = u.view();
    Ok(Me {
        permissions: user.permissions.clone(),
        user,
        tenant: t.view(None, &state.currency),
        impersonator,
    })
}

/// Log out: ends the credential this request used.
#[utoipa::path(delete, path = "/api/v1/session", tag = "session",
    responses((status = 204), (status = 401, body = super::ErrorBody)))]
async fn logout(State(state): State<AppState>, actor: Actor) -> Result<Response> {
    auth::logout(&state, &actor).await?;
    let expired = Cookie::build((SESSION_COOKIE, ""))
        .path("/")
        .max_age(time::Duration::ZERO)
        .http_only(true)
        .build();
    Ok(with_cookie(expired, StatusCode::NO_CONTENT))
}

/// Who am I: the logged-in user, its tenant and effective permissions.
#[utoipa::path(get, path = "/api/v1/me", tag = "session",
    responses((status = 200, body = Me), (status = 401, body = super::ErrorBody)))]
async fn me(State(state): State<AppState>, actor: Actor) -> Result<Json<Me>> {
    let id = actor.user_id;
    let u = state.read_one("user", move |c| user::get(c, id)).await?;
    Ok(Json(
        build_me(&state, &u, actor.impersonator.map(|i| i.1)).await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    /// 10 to 128 characters.
    #[schema(min_length = 10, max_length = 128)]
    pub new_password: String,
}

/// Change your own password. Ends your other sessions and revokes your API tokens.
#[utoipa::path(put, path = "/api/v1/me/password", tag = "session", request_body = PasswordChange,
    responses((status = 204), (status = 401, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn change_password(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(req): ApiJson<PasswordChange>,
) -> Result<StatusCode> {
    if actor.impersonator.is_some() {
        return Err(Error::forbidden(
            "impersonating",
            "an impersonated session cannot change the user's password",
        ));
    }
    user::validate_password("new_password", &req.new_password)?;
    let id = actor.user_id;
    let u = state.read_one("user", move |c| user::get(c, id)).await?;
    let hasher = state.hasher.clone();
    let stored = u.password_hash.clone();
    let slot = state.password_checks.slot().await?;
    let (ok, new_hash) = slot
        .run(move || {
            let ok = hasher.verify(&req.current_password, &stored);
            (
                ok,
                if ok {
                    hasher.hash(&req.new_password).ok()
                } else {
                    None
                },
            )
        })
        .await?;
    if !ok {
        return Err(Error::forbidden(
            "wrong_password",
            "current_password is incorrect",
        ));
    }
    let new_hash =
        new_hash.ok_or_else(|| Error::internal(&std::io::Error::other("hashing failed")))?;
    let who = Who::from(&actor);
    let keep = match actor.credential {
        Credential::Session { id } => Some(id),
        Credential::ApiToken { .. } => None,
    };
    state
        .db
        .write(move |tx| {
            user::set_password(tx, &u, &new_hash, keep)?;
            audit::record(
                tx,
                &Entry::new(&who, u.tenant_id, "user.password_change", "user", u.id),
            )
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Your API tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "session",
    responses((status = 200, body = Vec<session::ApiToken>), (status = 401, body = super::ErrorBody)))]
async fn list_tokens(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<Json<Vec<session::ApiToken>>> {
    let id = actor.user_id;
    Ok(Json(
        state.db.read(move |c| session::list_tokens(c, id)).await?,
    ))
}

/// Create an API token for scripts. The secret is shown once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "session", request_body = session::NewApiToken,
    responses((status = 201, body = session::CreatedApiToken), (status = 422, body = super::ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(req): ApiJson<session::NewApiToken>,
) -> Result<(StatusCode, Json<session::CreatedApiToken>)> {
    let name = tenant::validate_name("name", &req.name, 120)?;
    let expires_at = match req.expires_in_days {
        None => None,
        Some(d) if (1..=3650).contains(&d) => Some(store::now() + d * 86_400),
        Some(_) => {
            return Err(Error::invalid("expires_in_days must be between 1 and 3650"));
        }
    };
    let secret = new_bearer("opt_");
    let who = Who::from(&actor);
    let (uid, tid, sec) = (actor.user_id, actor.tenant_id, secret.clone());
    let token = state
        .db
        .write(move |tx| {
            let t = session::create_token(tx, uid, &name, expires_at, &sec)?;
            audit::record(
                tx,
                &Entry::new(&who, tid, "api_token.create", "api_token", t.id).after(&t),
            )?;
            Ok(t)
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(session::CreatedApiToken { token, secret }),
    ))
}

/// Revoke one of your API tokens.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "session", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody)))]
async fn revoke_token(
    State(state): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode> {
    let who = Who::from(&actor);
    let (uid, tid) = (actor.user_id, actor.tenant_id);
    state
        .db
        .write(move |tx| {
            let before = session::get_token(tx, uid, id)?;
            // Revoking a revoked token is the same answer and no new entry.
            if before.revoked {
                return Ok(());
            }
            session::revoke(tx, &Credential::ApiToken { id })?;
            audit::record(
                tx,
                &Entry::new(&who, tid, "api_token.revoke", "api_token", id).before(&before),
            )?;
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Act as another user of your subtree (support). The new session records you as the
/// impersonator on every audit entry. Operator and reseller logins only.
#[utoipa::path(post, path = "/api/v1/users/{id}/impersonate", tag = "users", params(("id" = i64, Path)),
    responses((status = 200, body = Me), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
async fn impersonate(
    State(state): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response> {
    let s = auth::impersonate(&state, &actor, id).await?;
    let me = build_me(
        &state,
        &s.user,
        Some(format!("{} <{}>", actor.name, actor.email)),
    )
    .await?;
    let mut cookie = session_cookie(&state, s.token);
    cookie.set_max_age(time::Duration::seconds(s.ttl));
    Ok(with_cookie(cookie, Json(me)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "198.51.100.7, 203.0.113.9, 10.1.1.1".parse().unwrap(),
        );
        // From an untrusted peer the header is ignored entirely.
        assert_eq!(
            client_ip("192.0.2.1".parse().unwrap(), &h, &trusted),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        // From a trusted proxy: the right-most hop that is not itself trusted.
        assert_eq!(
            client_ip("10.0.0.2".parse().unwrap(), &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // Garbage in the header falls back to the peer.
        let mut g = HeaderMap::new();
        g.insert("x-forwarded-for", "nonsense".parse().unwrap());
        assert_eq!(
            client_ip("10.0.0.2".parse().unwrap(), &g, &trusted),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
    }
}
