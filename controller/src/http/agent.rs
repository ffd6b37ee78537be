//! `/agent/v1`: what agents call, authenticated by their own credential (never a
//! person's), and always for their own site: the site comes from the credential, not
//! from the request. Also the `/api/v1` routes people use to enroll and watch agents.

use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use outpost_protocol as proto;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, AppState, ErrorBody};
use crate::crypto::new_bearer;
use crate::db::agent::{
    self, AgentIdentity, AgentStatus, CreatedEnrollmentToken, EnrollmentToken, OnlineSession,
    UsageDay,
};
use crate::db::audit::{self, Entry, Who};
use crate::db::{site, subscriber};
use crate::error::{Error, Result};
use crate::scope::{Actor, Permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(enroll))
        .routes(routes!(state))
        .routes(routes!(ack))
        .routes(routes!(events))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(agent_status))
        .routes(routes!(site_events))
        .routes(routes!(sessions))
        .routes(routes!(usage))
}

/// An authenticated agent.
pub struct Agent(pub AgentIdentity);

impl FromRequestParts<AppState> for Agent {
    type Rejection = Error;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Error> {
        let secret = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|s| s.trim().to_string())
            .ok_or_else(|| {
                Error::unauthorized("agent credential required (Authorization: Bearer opa_…)")
            })?;
        if let Some(v) = parts.headers.get(proto::PROTOCOL_HEADER) {
            let ok = v.to_str().ok().and_then(|v| v.parse::<u32>().ok())
                == Some(proto::PROTOCOL_VERSION);
            if !ok {
                return Err(Error::unprocessable(
                    "protocol_mismatch",
                    format!(
                        "this controller speaks agent protocol {}",
                        proto::PROTOCOL_VERSION
                    ),
                ));
            }
        }
        st.db
            .read(move |c| agent::authenticate(c, &secret))
            .await?
            .map(Agent)
            .ok_or_else(|| Error::unauthorized("unknown or revoked agent credential; enroll again"))
    }
}

fn agent_who(a: AgentIdentity) -> Who {
    Who {
        user_id: None,
        name: format!("agent {} (site {})", a.agent_id, a.site_id),
        impersonator: None,
        tenant_id: crate::scope::OPERATOR_TENANT,
        ip: String::new(),
        user_agent: String::new(),
    }
}

/// Enroll an agent with a single-use token.
#[utoipa::path(post, path = "/agent/v1/enroll", tag = "agent", security(()),
    request_body(content = Object, description = "outpost_protocol::EnrollRequest"),
    responses((status = 200, description = "outpost_protocol::EnrollResponse"), (status = 401, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn enroll(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<proto::EnrollRequest>,
) -> Result<Json<proto::EnrollResponse>> {
    let credential = new_bearer("opa_");
    let cfg = st.config.agents.clone();
    let resp = st
        .db
        .write(move |tx| {
            let r = agent::enroll(tx, &req, &credential, &cfg)?;
            let tenant: i64 = tx.query_row("SELECT tenant_id FROM sites WHERE id = ?1", [r.site_id], |row| row.get(0))?;
            let who = agent_who(AgentIdentity { agent_id: r.agent_id, site_id: r.site_id });
            audit::record(
                tx,
                &Entry::new(&who, tenant, "agent.enroll", "site", r.site_id).after(&serde_json::json!({
                    "agent_id": r.agent_id, "hostname": req.hostname, "version": req.agent_version,
                    "wireguard_public_key": req.wireguard_public_key, "tunnel_address": r.tunnel.address,
                })),
            )?;
            Ok(r)
        })
        .await?;
    Ok(Json(resp))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StateParams {
    /// The revision applied; 0 for a snapshot.
    pub since: u64,
    /// Seconds to wait for a change (0..=60).
    pub wait: Option<u32>,
}

/// The site's desired state since a revision: at once if something changed, else after
/// up to `wait` seconds. Held as a task, not a thread, so thousands may wait.
#[utoipa::path(get, path = "/agent/v1/state", tag = "agent", params(StateParams),
    responses((status = 200, description = "outpost_protocol::StateResponse"), (status = 401, body = ErrorBody)))]
async fn state(
    State(st): State<AppState>,
    Agent(me): Agent,
    ApiQuery(q): ApiQuery<StateParams>,
) -> Result<Json<proto::StateResponse>> {
    let wait = q.wait.unwrap_or(0).min(proto::MAX_WAIT_SECS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait as u64);
    // Subscribe before reading, so a change committed in between still wakes us.
    let mut feed = st.db.feed.subscribe();
    loop {
        let secrets = st.secrets.clone();
        let since = q.since;
        let resp = st
            .db
            .read(move |c| agent::state(c, me.site_id, since, &secrets))
            .await?;
        if resp.kind != proto::StateKind::Unchanged || tokio::time::Instant::now() >= deadline {
            return Ok(Json(resp));
        }
        match tokio::time::timeout_at(deadline, feed.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Ok(Json(resp)),
        }
    }
}

/// Acknowledge an applied revision with a digest of what the agent enforces.
#[utoipa::path(post, path = "/agent/v1/ack", tag = "agent",
    request_body(content = Object, description = "outpost_protocol::Ack"),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn ack(
    State(st): State<AppState>,
    Agent(me): Agent,
    ApiJson(a): ApiJson<proto::Ack>,
) -> Result<StatusCode> {
    let secrets = st.secrets.clone();
    let matches = st
        .db
        .write(move |tx| agent::ack(tx, me, &a, &secrets))
        .await?;
    if matches == Some(false) {
        tracing::warn!(
            site = me.site_id,
            agent = me.agent_id,
            "agent state drifted from the controller's"
        );
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Deliver journaled events; each (agent, seq) is stored once, so redelivery is safe.
#[utoipa::path(post, path = "/agent/v1/events", tag = "agent",
    request_body(content = Object, description = "outpost_protocol::EventBatch"),
    responses((status = 200, description = "outpost_protocol::EventsAccepted"), (status = 401, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn events(
    State(st): State<AppState>,
    Agent(me): Agent,
    ApiJson(b): ApiJson<proto::EventBatch>,
) -> Result<Json<proto::EventsAccepted>> {
    let accepted = st
        .db
        .write(move |tx| {
            agent::touch(tx, me)?;
            agent::ingest(tx, me, &b)
        })
        .await?;
    Ok(Json(accepted))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentToken {
    /// Hours until it expires (1..=168, default 24).
    pub ttl_hours: Option<i64>,
}

/// Enrollment tokens of a site (never their secrets).
#[utoipa::path(get, path = "/api/v1/sites/{id}/enrollment-tokens", tag = "sites", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<EnrollmentToken>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_tokens(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Vec<EnrollmentToken>>> {
    actor.require(Permission::ManageSites)?;
    let scope = actor.scope();
    Ok(Json(
        st.db
            .read(move |c| {
                let s = site::get_visible(c, &scope, id)?;
                agent::list_tokens(c, s.id)
            })
            .await?,
    ))
}

/// Create a single-use, expiring enrollment token for a site. The secret is shown once.
#[utoipa::path(post, path = "/api/v1/sites/{id}/enrollment-tokens", tag = "sites", params(("id" = i64, Path)),
    request_body = NewEnrollmentToken,
    responses((status = 201, body = CreatedEnrollmentToken), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn create_token(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<NewEnrollmentToken>,
) -> Result<(StatusCode, Json<CreatedEnrollmentToken>)> {
    actor.require(Permission::ManageSites)?;
    let ttl = req.ttl_hours.unwrap_or(24);
    if !(1..=168).contains(&ttl) {
        return Err(Error::invalid("ttl_hours must be between 1 and 168"));
    }
    let secret = new_bearer("ope_");
    let sec = secret.clone();
    let token = st
        .db
        .write(move |tx| {
            let s = site::get_visible(tx, &actor.scope(), id)?;
            let t = agent::create_token(tx, s.id, actor.user_id, ttl * 3600, &sec)?;
            audit::record(
                tx,
                &Entry::new(
                    &Who::from(&actor),
                    s.tenant_id,
                    "site.enrollment_token",
                    "site",
                    s.id,
                )
                .after(&t),
            )?;
            Ok(t)
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEnrollmentToken { token, secret }),
    ))
}

/// The site's agent: version, last seen, applied revision and drift.
#[utoipa::path(get, path = "/api/v1/sites/{id}/agent", tag = "sites", params(("id" = i64, Path)),
    responses((status = 200, body = AgentStatus), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn agent_status(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<AgentStatus>> {
    actor.require(Permission::ManageSites)?;
    let scope = actor.scope();
    Ok(Json(
        st.db
            .read(move |c| {
                let s = site::get_visible(c, &scope, id)?;
                agent::status(c, s.id)
            })
            .await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    /// `accounting`, `auth_reject`, `nas_sessions_closed` or `coa`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// Only events that happened before this unix time (the `at` of the last one seen).
    pub before: Option<i64>,
    /// 1..=500, default 100.
    pub limit: Option<u32>,
}

/// What the site's agent reported, newest first: accounting, rejects (with the reason
/// the NAS was not told), NAS restarts, and the NAS's answers to Disconnect/CoA.
#[utoipa::path(get, path = "/api/v1/sites/{id}/events", tag = "sites", params(("id" = i64, Path), EventFilter),
    responses((status = 200, body = Vec<crate::db::agent::SiteEvent>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn site_events(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(f): ApiQuery<EventFilter>,
) -> Result<Json<Vec<crate::db::agent::SiteEvent>>> {
    actor.require(Permission::ManageSites)?;
    let limit = f.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Error::invalid("limit must be 1 to 500"));
    }
    if let Some(k) = &f.kind
        && !["accounting", "auth_reject", "nas_sessions_closed", "coa"].contains(&k.as_str())
    {
        return Err(Error::invalid(
            "type must be accounting, auth_reject, nas_sessions_closed or coa",
        ));
    }
    let scope = actor.scope();
    Ok(Json(
        st.db
            .read(move |c| {
                let s = site::get_visible(c, &scope, id)?;
                crate::db::agent::site_events(c, s.id, f.kind.as_deref(), f.before, limit)
            })
            .await?,
    ))
}

/// A subscriber's sessions online now, from accounting.
#[utoipa::path(get, path = "/api/v1/subscribers/{id}/sessions", tag = "subscribers", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<OnlineSession>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn sessions(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Vec<OnlineSession>>> {
    actor.require(Permission::ViewCustomers)?;
    let scope = actor.scope();
    Ok(Json(
        st.db
            .read(move |c| {
                let s = subscriber::get_visible(c, &scope, id)?;
                agent::sessions_of(c, s.sub.id)
            })
            .await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// Days back from today (1..=366, default 30).
    pub days: Option<i64>,
}

/// A subscriber's traffic per UTC day, from accounting.
#[utoipa::path(get, path = "/api/v1/subscribers/{id}/usage", tag = "subscribers", params(("id" = i64, Path), UsageParams),
    responses((status = 200, body = Vec<UsageDay>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn usage(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<UsageParams>,
) -> Result<Json<Vec<UsageDay>>> {
    actor.require(Permission::ViewCustomers)?;
    let days = q.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(Error::bad_request(
            "bad_days",
            "days must be between 1 and 366",
        ));
    }
    let since = (time::OffsetDateTime::now_utc() - time::Duration::days(days - 1))
        .date()
        .to_string();
    let scope = actor.scope();
    Ok(Json(
        st.db
            .read(move |c| {
                let s = subscriber::get_visible(c, &scope, id)?;
                agent::usage_of(c, s.sub.id, &since)
            })
            .await?,
    ))
}
