//! `/agent/v1`: what agents call, authenticated by their own credential (never a
//! person's), and always for their own site: the site comes from the credential, not
//! from the request. The routes people use to enroll and watch agents are under
//! `/api/v1/sites` ([`super::sites`]) and `/api/v1/subscribers` ([`super::subscribers`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use outpost_protocol as proto;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiQuery, AppState, ErrorBody};
use crate::crypto::new_bearer;
use crate::db::agent::{self, AgentIdentity};
use crate::db::audit::{self, Entry, Who};
use crate::error::{Error, Result};
use crate::security::SecurityEvent;

/// Enrolment: on the public listener, where an agent without a tunnel can reach it.
pub fn enroll_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(enroll))
}

/// Everything after enrolment: inside the tunnel when there is one.
pub fn sync_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(state))
        .routes(routes!(ack))
        .routes(routes!(events))
        .routes(routes!(rotate_key))
        .routes(routes!(confirm_rotation))
}

/// An authenticated agent.
pub struct Agent(pub AgentIdentity);

impl FromRequestParts<AppState> for Agent {
    type Rejection = Error;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Error> {
        // The scheme name is case-insensitive (RFC 7235 §2.1), as for people's tokens.
        let secret = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_start().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, s)| s.trim().to_string())
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
        let me = st
            .db
            .read(move |c| agent::authenticate(c, &secret))
            .await?
            .ok_or_else(|| {
                Error::unauthorized("unknown or revoked agent credential; enroll again")
            })?;
        if st.tunnel.is_some() {
            // Inside the tunnel WireGuard vouches for the source address (a peer can only
            // send from its allowed IP), so address and credential must name one agent.
            let from = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            if !from.is_some_and(|ip| me.owns(ip)) {
                let from = from.map(|a| a.to_string()).unwrap_or_default();
                let event = SecurityEvent::new(
                    Who {
                        ip: from.clone(),
                        ..agent_who(me)
                    },
                    "agent.wrong_tunnel_address",
                    serde_json::json!({
                        "agent_id": me.agent_id, "from": from,
                        "tunnel_address": me.tunnel_address.map(|a| a.to_string()),
                    }),
                )
                .target("site", me.site_id);
                let refusal = Error::forbidden(
                    "wrong_tunnel_address",
                    "this credential belongs to another agent's tunnel address",
                )
                .with_security(event);
                // Recorded in a transaction of its own, like every refusal worth it.
                return st.db.write(move |_| Err(refusal)).await;
            }
        }
        Ok(Agent(me))
    }
}

/// An authenticated agent and the address its call came from (inside the tunnel: one
/// of the agent's own, [`Agent`] checked).
pub struct AgentFrom {
    pub me: AgentIdentity,
    pub from: Option<IpAddr>,
}

impl FromRequestParts<AppState> for AgentFrom {
    type Rejection = Error;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Error> {
        let Agent(me) = Agent::from_request_parts(parts, st).await?;
        let from = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(AgentFrom { me, from })
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
    request_body = proto::EnrollRequest,
    responses((status = 200, body = proto::EnrollResponse), (status = 401, body = ErrorBody)))]
async fn enroll(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<proto::EnrollRequest>,
) -> Result<Json<proto::EnrollResponse>> {
    let credential = new_bearer("opa_");
    let (tunnel, secrets) = (st.tunnel.clone(), st.secrets.clone());
    let resp = st
        .db
        .write(move |tx| {
            let e = agent::enroll(tx, &req, &credential, tunnel.as_deref(), &secrets)?;
            let r = e.response;
            let tenant: i64 = tx.query_row("SELECT tenant_id FROM sites WHERE id = ?1", [r.site_id], |row| row.get(0))?;
            let address = r.tunnel.as_ref().map(|t| t.address.clone());
            let who = agent_who(AgentIdentity { agent_id: r.agent_id, site_id: r.site_id, tunnel_address: None, rotation_address: None });
            audit::record(
                tx,
                &Entry::new(&who, tenant, "agent.enroll", "site", r.site_id).after(&serde_json::json!({
                    "agent_id": r.agent_id, "hostname": req.hostname, "version": req.agent_version,
                    "wireguard_public_key": req.wireguard_public_key, "tunnel_address": address,
                    "peers_removed": e.peers.remove,
                })),
            )?;
            // Last, so a refusal above leaves the interface as it was; a failure here
            // rolls the enrolment back.
            if let Some(t) = &tunnel {
                t.apply(&e.peers)?;
            }
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
    #[param(maximum = 9223372036854775807_u64)]
    pub since: u64,
    /// Seconds to wait for a change (0..=60; agents are configured within it).
    #[param(maximum = 60)]
    pub wait: Option<u32>,
}

/// The site's desired state since a revision: at once if something changed, else after
/// up to `wait` seconds. Held as a task, not a thread, so thousands may wait.
#[utoipa::path(get, path = "/agent/v1/state", tag = "agent", params(StateParams), security(("agent" = [])),
    responses((status = 200, body = proto::StateResponse), (status = 422, body = ErrorBody, description = "The agent speaks another protocol version (`protocol_mismatch`)")))]
async fn state(
    State(st): State<AppState>,
    Agent(me): Agent,
    ApiQuery(q): ApiQuery<StateParams>,
) -> Result<Json<proto::StateResponse>> {
    if q.since > i64::MAX as u64 || q.wait.is_some_and(|w| w > proto::MAX_WAIT_SECS) {
        return Err(Error::bad_request(
            "bad_query",
            format!(
                "since is at most 2^63-1 and wait at most {}",
                proto::MAX_WAIT_SECS
            ),
        ));
    }
    let wait = q.wait.unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait as u64);
    // Subscribe before reading, so a change committed in between still wakes us.
    let mut feed = st.db.feed.subscribe();
    let mut closing = st.db.feed.closing();
    loop {
        let secrets = st.secrets.clone();
        let since = q.since;
        let resp = st
            .db
            .read(move |c| agent::state(c, me.site_id, since, &secrets))
            .await?;
        if resp.kind != proto::StateKind::Unchanged
            || tokio::time::Instant::now() >= deadline
            || *closing.borrow()
        {
            return Ok(Json(resp));
        }
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, feed.changed()) => match changed {
                Ok(Ok(())) => continue,
                _ => return Ok(Json(resp)),
            },
            // The controller is stopping: the answer so far, now (see `Feed::close`).
            _ = closing.wait_for(|c| *c) => return Ok(Json(resp)),
        }
    }
}

/// Acknowledge an applied revision with a digest of what the agent enforces.
#[utoipa::path(post, path = "/agent/v1/ack", tag = "agent", security(("agent" = [])),
    request_body = proto::Ack,
    responses((status = 204, description = "Recorded")))]
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
#[utoipa::path(post, path = "/agent/v1/events", tag = "agent", security(("agent" = [])),
    request_body = proto::EventBatch,
    responses((status = 200, body = proto::EventsAccepted)))]
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

/// The audit entry of a key rotation step, on the agent's site, from the address the
/// call came from; a step that changed nothing (`audit` null) records none.
fn audit_rotation_step(
    tx: &rusqlite::Connection,
    me: AgentIdentity,
    from: Option<IpAddr>,
    action: &str,
    audit: &serde_json::Value,
) -> Result<()> {
    if audit.is_null() {
        return Ok(());
    }
    let tenant = site_tenant(tx, me.site_id)?;
    let who = Who {
        ip: from.map(|a| a.to_string()).unwrap_or_default(),
        ..agent_who(me)
    };
    audit::record(
        tx,
        &Entry::new(&who, tenant, action, "site", me.site_id).after(audit),
    )?;
    Ok(())
}

/// Begin a make-before-break rotation of the agent's WireGuard key: the new key's peer
/// is added with a second overlay address and preshared key (returned), next to the old
/// one. The same key presented again gets the same answer.
#[utoipa::path(post, path = "/agent/v1/rotate-key", tag = "agent", security(("agent" = [])),
    request_body = proto::RotateKey,
    responses((status = 200, body = proto::TunnelParams),
        (status = 400, body = ErrorBody, description = "Not a WireGuard key, or the agent's or controller's own (`invalid`)"),
        (status = 409, body = ErrorBody, description = "Another agent has the key (`wireguard_key_in_use`), or there is no tunnel (`no_tunnel`)")))]
async fn rotate_key(
    State(st): State<AppState>,
    AgentFrom { me, from }: AgentFrom,
    ApiJson(req): ApiJson<proto::RotateKey>,
) -> Result<Json<proto::TunnelParams>> {
    let (tunnel, secrets) = (st.tunnel.clone(), st.secrets.clone());
    let params = st
        .db
        .write(move |tx| {
            let r = agent::begin_rotation(tx, me, &req, tunnel.as_deref(), &secrets)?;
            audit_rotation_step(tx, me, from, "agent.rotate_key.begin", &r.audit)?;
            // Last: a failure rolls the step back and leaves the interface as it was.
            if let Some(t) = &tunnel {
                t.apply(&r.peers)?;
            }
            Ok(r.response)
        })
        .await?;
    Ok(Json(params))
}

/// Finish a key rotation: called from the new key's address once it has a handshake,
/// it makes the new key and address the agent's and removes the old key's peer.
/// Repeating it after it succeeded is no error.
#[utoipa::path(post, path = "/agent/v1/rotate-key/confirm", tag = "agent", security(("agent" = [])),
    request_body = proto::RotateKey,
    responses((status = 204, description = "The new key is the agent's; the old one's peer is gone"),
        (status = 409, body = ErrorBody, description = "No rotation to this key (`no_such_rotation`), or not yet from its address (`rotation_not_ready`)")))]
async fn confirm_rotation(
    State(st): State<AppState>,
    AgentFrom { me, from }: AgentFrom,
    ApiJson(req): ApiJson<proto::RotateKey>,
) -> Result<StatusCode> {
    let tunnel = st.tunnel.clone();
    let from_new = from.is_some_and(|ip| me.rotation_address.map(IpAddr::V4) == Some(ip));
    let handshake = match &tunnel {
        Some(t) => {
            let (t, key) = (t.clone(), req.new_public_key.trim().to_string());
            tokio::task::spawn_blocking(move || t.handshake_seen(&key))
                .await
                .map_err(|e| Error::internal(&e))?
        }
        None => None,
    };
    st.db
        .write(move |tx| {
            let r = agent::confirm_rotation(tx, me, &req, from_new, handshake)?;
            audit_rotation_step(tx, me, from, "agent.rotate_key", &r.audit)?;
            if let Some(t) = &tunnel {
                t.apply(&r.peers)?;
            }
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn site_tenant(tx: &rusqlite::Connection, site_id: i64) -> Result<i64> {
    Ok(tx.query_row(
        "SELECT tenant_id FROM sites WHERE id = ?1",
        [site_id],
        |r| r.get(0),
    )?)
}
