//! Notices: what staff tell their subscribers for a while, shown in the subscriber
//! portal and on the edge's suspended page. Needs the `send_notifications` function.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, AppState, Page};
use crate::db::notice::{self, NewNotice, Notice, NoticeFilter, NoticePatch};
use crate::error::Result;
use crate::ops::notices as ops;
use crate::scope::{Actor, Permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notices, create_notice))
        .routes(routes!(get_notice, update_notice, delete_notice))
}

/// Notices for your part of the tree, newest first.
#[utoipa::path(get, path = "/api/v1/notices", tag = "notices", params(NoticeFilter),
    responses((status = 200, body = Page<Notice>)))]
async fn list_notices(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<NoticeFilter>,
) -> Result<Json<Page<Notice>>> {
    actor.require(Permission::SendNotifications)?;
    Ok(Json(st.list_page(&actor, f, notice::list, |n| n.id).await?))
}

/// Post a notice for your subscribers: all of them (a manager's: its tenant's direct
/// customers), or those on one of your plans, or at one of your sites, from `starts_at`
/// until `ends_at`.
#[utoipa::path(post, path = "/api/v1/notices", tag = "notices", request_body = NewNotice,
    responses((status = 201, body = Notice)))]
async fn create_notice(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(input): ApiJson<NewNotice>,
) -> Result<(StatusCode, Json<Notice>)> {
    actor.require(Permission::SendNotifications)?;
    let n = st
        .db
        .write(move |tx| ops::create_notice(tx, &actor, &input))
        .await?;
    Ok((StatusCode::CREATED, Json(n)))
}

/// One notice of your part of the tree.
#[utoipa::path(get, path = "/api/v1/notices/{id}", tag = "notices", params(("id" = i64, Path)),
    responses((status = 200, body = Notice)))]
async fn get_notice(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Notice>> {
    actor.require(Permission::SendNotifications)?;
    let n = st.read_scoped(&actor, move |c, s| notice::get_visible(c, s, id));
    Ok(Json(n.await?))
}

/// Change a notice: its text, audience or times.
#[utoipa::path(patch, path = "/api/v1/notices/{id}", tag = "notices", params(("id" = i64, Path)),
    request_body = NoticePatch, responses((status = 200, body = Notice)))]
async fn update_notice(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(p): ApiJson<NoticePatch>,
) -> Result<Json<Notice>> {
    actor.require(Permission::SendNotifications)?;
    let n = st
        .db
        .write(move |tx| ops::update_notice(tx, &actor, id, &p))
        .await?;
    Ok(Json(n))
}

/// Take a notice down (the edge drops it with the next state it syncs).
#[utoipa::path(delete, path = "/api/v1/notices/{id}", tag = "notices", params(("id" = i64, Path)),
    responses((status = 204, description = "Deleted")))]
async fn delete_notice(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode> {
    actor.require(Permission::SendNotifications)?;
    st.db
        .write(move |tx| ops::delete_notice(tx, &actor, id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
