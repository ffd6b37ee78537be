//! `/api/v1/subscribers`: customers, with search, cursor paging and bulk actions, and
//! what their site's agent reported about them (sessions online, usage per day).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, AppState, Page};
use crate::db::agent::{self, OnlineSession, UsageDay};
use crate::db::subscriber::{
    self, BulkRequest, BulkResult, NewSubscriber, Subscriber, SubscriberFilter, SubscriberPatch,
};
use crate::error::{Error, Result};
use crate::ops::subscribers as ops;
use crate::scope::{Actor, Permission, Scope};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_subscribers, create_subscriber))
        .routes(routes!(get_subscriber, update_subscriber))
        .routes(routes!(bulk))
        .routes(routes!(sessions))
        .routes(routes!(usage))
}

/// Search your subscribers (a manager: its tenant's direct customers only).
#[utoipa::path(get, path = "/api/v1/subscribers", tag = "subscribers", params(SubscriberFilter),
    responses((status = 200, body = Page<Subscriber>)))]
async fn list_subscribers(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<SubscriberFilter>,
) -> Result<Json<Page<Subscriber>>> {
    actor.require(Permission::ViewCustomers)?;
    Ok(Json(
        st.list_page(&actor, f, subscriber::list, |s| s.id).await?,
    ))
}

/// Create a subscriber (owned by `tenant_id`, by default your own tenant).
#[utoipa::path(post, path = "/api/v1/subscribers", tag = "subscribers", request_body = NewSubscriber,
    responses((status = 201, body = Subscriber)))]
async fn create_subscriber(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(input): ApiJson<NewSubscriber>,
) -> Result<(StatusCode, Json<Subscriber>)> {
    actor.require(Permission::CreateCustomers)?;
    let secrets = st.secrets.clone();
    let show_password = actor.can(Permission::EditCustomers);
    let created = st
        .db
        .write(move |tx| {
            ops::create_subscriber(tx, &actor, &input, &secrets)?
                .view(show_password.then_some(&secrets))
        })
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// One subscriber. The PPP password is included for those who may edit customers.
#[utoipa::path(get, path = "/api/v1/subscribers/{id}", tag = "subscribers", params(("id" = i64, Path)),
    responses((status = 200, body = Subscriber)))]
async fn get_subscriber(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Subscriber>> {
    actor.require(Permission::ViewCustomers)?;
    let secrets = actor
        .can(Permission::EditCustomers)
        .then(|| st.secrets.clone());
    let view = st.read_scoped(&actor, move |c, s| {
        subscriber::get_visible(c, s, id)?.view(secrets.as_ref())
    });
    Ok(Json(view.await?))
}

/// Change a subscriber. Changing `status` needs suspend/reconnect; any other field needs
/// edit customers. `tenant_id` moves it, only within your subtree.
#[utoipa::path(patch, path = "/api/v1/subscribers/{id}", tag = "subscribers", params(("id" = i64, Path)),
    request_body = SubscriberPatch,
    responses((status = 200, body = Subscriber)))]
async fn update_subscriber(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(p): ApiJson<SubscriberPatch>,
) -> Result<Json<Subscriber>> {
    if p.status.is_some() {
        actor.require(Permission::SuspendReconnect)?;
    }
    if p.edits_fields() || p.status.is_none() {
        actor.require(Permission::EditCustomers)?;
    }
    let secrets = st.secrets.clone();
    let show_password = actor.can(Permission::EditCustomers);
    let view = st
        .db
        .write(move |tx| {
            ops::update_subscriber(tx, &actor, id, &p, &secrets)?
                .view(show_password.then_some(&secrets))
        })
        .await?;
    Ok(Json(view))
}

/// Suspend, reconnect or move many subscribers at once: all of them or none.
#[utoipa::path(post, path = "/api/v1/subscribers/bulk", tag = "subscribers", request_body = BulkRequest,
    responses((status = 200, body = BulkResult)))]
async fn bulk(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(req): ApiJson<BulkRequest>,
) -> Result<Json<BulkResult>> {
    actor.require(ops::bulk_permission(req.action))?;
    let result = st.db.write(move |tx| ops::bulk(tx, &actor, &req)).await?;
    Ok(Json(result))
}

/// A subscriber's sessions online now, from accounting.
#[utoipa::path(get, path = "/api/v1/subscribers/{id}/sessions", tag = "subscribers", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<OnlineSession>)))]
async fn sessions(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Vec<OnlineSession>>> {
    actor.require(Permission::ViewCustomers)?;
    about_subscriber(&st, &actor, id, agent::sessions_of).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// Days back from today (1..=366, default 30).
    #[param(minimum = 1, maximum = 366)]
    pub days: Option<i64>,
}

/// A subscriber's traffic per UTC day, from accounting.
#[utoipa::path(get, path = "/api/v1/subscribers/{id}/usage", tag = "subscribers", params(("id" = i64, Path), UsageParams),
    responses((status = 200, body = Vec<UsageDay>)))]
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
    about_subscriber(&st, &actor, id, move |c, id| agent::usage_of(c, id, &since)).await
}

/// Reads something about a subscriber the actor can see (404 for any other), given the
/// subscriber's id.
async fn about_subscriber<T: Send + 'static>(
    st: &AppState,
    actor: &Actor,
    id: i64,
    read: impl FnOnce(&rusqlite::Connection, i64) -> Result<T> + Send + 'static,
) -> Result<Json<T>> {
    let sub = move |c: &rusqlite::Connection, s: &Scope| {
        read(c, subscriber::get_visible(c, s, id)?.sub.id)
    };
    Ok(Json(st.read_scoped(actor, sub).await?))
}
