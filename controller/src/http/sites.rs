//! `/api/v1/sites` and `/api/v1/nas`: where agents run, the NAS devices they serve,
//! and what people do with a site's agent (enrollment tokens, status, events).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, AppState, Page, Paging};
use crate::crypto::new_bearer;
use crate::db::agent::{self, AgentStatus, CreatedEnrollmentToken, EnrollmentToken, SiteEvent};
use crate::db::nas::{self, Nas, NasFilter, NasPatch, NewNas};
use crate::db::site::{self, NewSite, Site, SiteFilter, SitePatch};
use crate::error::{Error, Result};
use crate::ops::sites as ops;
use crate::scope::{Actor, Permission, Scope};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sites, create_site))
        .routes(routes!(get_site, update_site))
        .routes(routes!(list_nas, create_nas))
        .routes(routes!(get_nas, update_nas))
        .routes(routes!(list_enrollment_tokens, create_enrollment_token))
        .routes(routes!(revoke_enrollment_token))
        .routes(routes!(agent_status, revoke_agent))
        .routes(routes!(site_events))
}

/// Sites in your part of the tree.
#[utoipa::path(get, path = "/api/v1/sites", tag = "sites", params(SiteFilter),
    responses((status = 200, body = Page<Site>)))]
async fn list_sites(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<SiteFilter>,
) -> Result<Json<Page<Site>>> {
    actor.require(Permission::ManageSites)?;
    Ok(Json(st.list_page(&actor, f, site::list, |s| s.id).await?))
}

/// Create a site (owned by `tenant_id`, by default your own tenant).
#[utoipa::path(post, path = "/api/v1/sites", tag = "sites", request_body = NewSite,
    responses((status = 201, body = Site)))]
async fn create_site(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(input): ApiJson<NewSite>,
) -> Result<(StatusCode, Json<Site>)> {
    actor.require(Permission::ManageSites)?;
    let s = st
        .db
        .write(move |tx| ops::create_site(tx, &actor, &input))
        .await?;
    Ok((StatusCode::CREATED, Json(s)))
}

/// One site.
#[utoipa::path(get, path = "/api/v1/sites/{id}", tag = "sites", params(("id" = i64, Path)),
    responses((status = 200, body = Site)))]
async fn get_site(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Site>> {
    actor.require(Permission::ManageSites)?;
    let site = st.read_scoped(&actor, move |c, s| site::get_visible(c, s, id));
    Ok(Json(site.await?))
}

/// Rename or describe a site.
#[utoipa::path(patch, path = "/api/v1/sites/{id}", tag = "sites", params(("id" = i64, Path)), request_body = SitePatch,
    responses((status = 200, body = Site)))]
async fn update_site(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(p): ApiJson<SitePatch>,
) -> Result<Json<Site>> {
    actor.require(Permission::ManageSites)?;
    let s = st
        .db
        .write(move |tx| ops::update_site(tx, &actor, id, &p))
        .await?;
    Ok(Json(s))
}

/// NAS devices in your part of the tree (without their secrets).
#[utoipa::path(get, path = "/api/v1/nas", tag = "nas", params(NasFilter),
    responses((status = 200, body = Page<Nas>)))]
async fn list_nas(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<NasFilter>,
) -> Result<Json<Page<Nas>>> {
    actor.require(Permission::ManageSites)?;
    Ok(Json(st.list_page(&actor, f, nas::list, |n| n.id).await?))
}

/// Register a NAS at a site. The RADIUS secret is stored sealed.
#[utoipa::path(post, path = "/api/v1/nas", tag = "nas", request_body = NewNas,
    responses((status = 201, body = Nas)))]
async fn create_nas(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(input): ApiJson<NewNas>,
) -> Result<(StatusCode, Json<Nas>)> {
    actor.require(Permission::ManageSites)?;
    let secrets = st.secrets.clone();
    let n = st
        .db
        .write(move |tx| ops::create_nas(tx, &actor, &input, &secrets))
        .await?;
    Ok((StatusCode::CREATED, Json(n)))
}

/// One NAS, with its RADIUS secret.
#[utoipa::path(get, path = "/api/v1/nas/{id}", tag = "nas", params(("id" = i64, Path)),
    responses((status = 200, body = Nas)))]
async fn get_nas(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Nas>> {
    actor.require(Permission::ManageSites)?;
    let secrets = st.secrets.clone();
    let nas = st.read_scoped(&actor, move |c, s| {
        nas::get_visible(c, s, id, Some(&secrets))
    });
    Ok(Json(nas.await?))
}

/// Change a NAS: name, address, secret, dialect, CoA port, Message-Authenticator policy.
#[utoipa::path(patch, path = "/api/v1/nas/{id}", tag = "nas", params(("id" = i64, Path)), request_body = NasPatch,
    responses((status = 200, body = Nas)))]
async fn update_nas(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(p): ApiJson<NasPatch>,
) -> Result<Json<Nas>> {
    actor.require(Permission::ManageSites)?;
    let secrets = st.secrets.clone();
    let n = st
        .db
        .write(move |tx| ops::update_nas(tx, &actor, id, &p, &secrets))
        .await?;
    Ok(Json(n))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentToken {
    /// Hours until it expires (1..=168, default 24).
    #[schema(minimum = 1, maximum = 168)]
    pub ttl_hours: Option<i64>,
}

/// Enrollment tokens of a site (never their secrets).
#[utoipa::path(get, path = "/api/v1/sites/{id}/enrollment-tokens", tag = "sites", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<EnrollmentToken>)))]
async fn list_enrollment_tokens(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Vec<EnrollmentToken>>> {
    actor.require(Permission::ManageSites)?;
    about_site(&st, &actor, id, agent::list_tokens).await
}

/// Create a single-use, expiring enrollment token for a site. The secret is shown once.
#[utoipa::path(post, path = "/api/v1/sites/{id}/enrollment-tokens", tag = "sites", params(("id" = i64, Path)),
    request_body = NewEnrollmentToken,
    responses((status = 201, body = CreatedEnrollmentToken)))]
async fn create_enrollment_token(
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
        .write(move |tx| ops::create_enrollment_token(tx, &actor, id, ttl * 3600, &sec))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEnrollmentToken { token, secret }),
    ))
}

/// Revoke an enrollment token nobody has used yet: it enrols nothing from now on. A
/// used token answers 409 (revoke the site's agent instead), as does one revoked already.
#[utoipa::path(delete, path = "/api/v1/enrollment-tokens/{id}", tag = "sites", params(("id" = i64, Path)),
    responses((status = 204, description = "Revoked"),
              (status = 409, body = super::ErrorBody, description = "Used already, or revoked already")))]
async fn revoke_enrollment_token(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode> {
    actor.require(Permission::ManageSites)?;
    st.db
        .write(move |tx| ops::revoke_enrollment_token(tx, &actor, id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The site's agent: version, last seen, applied revision and drift, and its tunnel
/// (address, last handshake, endpoint, bytes) when the controller runs one.
#[utoipa::path(get, path = "/api/v1/sites/{id}/agent", tag = "sites", params(("id" = i64, Path)),
    responses((status = 200, body = AgentStatus)))]
async fn agent_status(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<AgentStatus>> {
    actor.require(Permission::ManageSites)?;
    let Json(mut status) = about_site(&st, &actor, id, agent::status).await?;
    if let Some(t) = st.tunnel.clone() {
        let key = status.wireguard_public_key.clone();
        status.tunnel = tokio::task::spawn_blocking(move || t.peer(&key))
            .await
            .map_err(|e| Error::internal(&e))?;
    }
    Ok(Json(status))
}

/// Revoke the site's agent: its credential stops working and its tunnel peer is removed
/// at once. Enrol a replacement with a new token.
#[utoipa::path(delete, path = "/api/v1/sites/{id}/agent", tag = "sites", params(("id" = i64, Path)),
    responses((status = 204, description = "Revoked")))]
async fn revoke_agent(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode> {
    actor.require(Permission::ManageSites)?;
    let tunnel = st.tunnel.clone();
    st.db
        .write(move |tx| {
            let change = ops::revoke_agent(tx, &actor, id)?;
            match &tunnel {
                Some(t) => t.apply(&change),
                None => Ok(()),
            }
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    #[serde(rename = "type")]
    #[param(rename = "type")]
    #[param(inline)]
    pub kind: Option<SiteEventKind>,
    /// Only events that happened before this unix time (the `at` of the last one seen).
    pub before: Option<i64>,
    /// 1..=500, default 100.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// The kinds of event an agent reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SiteEventKind {
    Accounting,
    AuthReject,
    NasSessionsClosed,
    Coa,
    WanCheck,
}

impl SiteEventKind {
    fn as_str(self) -> &'static str {
        match self {
            SiteEventKind::Accounting => "accounting",
            SiteEventKind::AuthReject => "auth_reject",
            SiteEventKind::NasSessionsClosed => "nas_sessions_closed",
            SiteEventKind::Coa => "coa",
            SiteEventKind::WanCheck => "wan_check",
        }
    }
}

/// What the site's agent reported, newest first: accounting, rejects (with the reason
/// the NAS was not told), NAS restarts, and the NAS's answers to Disconnect/CoA.
#[utoipa::path(get, path = "/api/v1/sites/{id}/events", tag = "sites", params(("id" = i64, Path), EventFilter),
    responses((status = 200, body = Vec<SiteEvent>)))]
async fn site_events(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(f): ApiQuery<EventFilter>,
) -> Result<Json<Vec<SiteEvent>>> {
    actor.require(Permission::ManageSites)?;
    let limit = Paging::new(None, f.limit)?.limit;
    about_site(&st, &actor, id, move |c, id| {
        agent::site_events(c, id, f.kind.map(SiteEventKind::as_str), f.before, limit)
    })
    .await
}

/// Reads something about a site the actor can see (404 for any other), given the site's id.
async fn about_site<T: Send + 'static>(
    st: &AppState,
    actor: &Actor,
    id: i64,
    read: impl FnOnce(&rusqlite::Connection, i64) -> Result<T> + Send + 'static,
) -> Result<Json<T>> {
    let site = move |c: &rusqlite::Connection, s: &Scope| read(c, site::get_visible(c, s, id)?.id);
    Ok(Json(st.read_scoped(actor, site).await?))
}
