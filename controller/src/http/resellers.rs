//! `/api/v1/resellers`: the reseller tree below the caller.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, AppState, Page};
use crate::db::brand::{self, BrandSettings, BrandView};
use crate::db::tenant::{self, NewReseller, Reseller, ResellerFilter, ResellerPatch};
use crate::error::Result;
use crate::ops::resellers as ops;
use crate::scope::{Actor, Permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_resellers, create_reseller))
        .routes(routes!(get_reseller, update_reseller))
        .routes(routes!(get_brand, set_brand))
}

/// Resellers and sub-resellers below you (a manager: its tenant's direct children).
#[utoipa::path(get, path = "/api/v1/resellers", tag = "resellers", params(ResellerFilter),
    responses((status = 200, body = Page<Reseller>)))]
async fn list_resellers(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<ResellerFilter>,
) -> Result<Json<Page<Reseller>>> {
    actor.require(Permission::ManageResellers)?;
    let page = st.list_page(&actor, f, tenant::list, |t| t.id).await?;
    Ok(Json(page.map(|t| t.view(None, &st.currency))))
}

/// Create a reseller (under `parent_id`, by default under your own tenant).
#[utoipa::path(post, path = "/api/v1/resellers", tag = "resellers", request_body = NewReseller,
    responses((status = 201, body = Reseller)))]
async fn create_reseller(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(input): ApiJson<NewReseller>,
) -> Result<(StatusCode, Json<Reseller>)> {
    actor.require(Permission::ManageResellers)?;
    let max_depth = st.config.tree.max_depth;
    let cur = st.currency.clone();
    let created = st
        .db
        .write(move |tx| ops::create_reseller(tx, &actor, &input, max_depth, &cur))
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// One reseller below you, or your own tenant, with its usage against its limits.
#[utoipa::path(get, path = "/api/v1/resellers/{id}", tag = "resellers", params(("id" = i64, Path)),
    responses((status = 200, body = Reseller)))]
async fn get_reseller(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Reseller>> {
    actor.require(Permission::ManageResellers)?;
    let cur = st.currency.clone();
    let view = st.read_scoped(&actor, move |c, scope| {
        let t = tenant::get_visible(c, scope, id)?;
        let usage = tenant::usage(c, &t)?;
        Ok(t.view(Some(usage), &cur))
    });
    Ok(Json(view.await?))
}

/// Change a reseller below you: name, status, allowed IPs, features, domain, limits,
/// credit limit and renewal mode.
/// Nobody edits their own tenant's record: its parent does.
#[utoipa::path(patch, path = "/api/v1/resellers/{id}", tag = "resellers", params(("id" = i64, Path)), request_body = ResellerPatch,
    responses((status = 200, body = Reseller)))]
async fn update_reseller(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(p): ApiJson<ResellerPatch>,
) -> Result<Json<Reseller>> {
    actor.require(Permission::ManageResellers)?;
    let cur = st.currency.clone();
    let view = st
        .db
        .write(move |tx| ops::update_reseller(tx, &actor, id, &p, &cur))
        .await?;
    Ok(Json(view))
}

/// The brand a reseller (or your own tenant) shows its subscribers: its own settings
/// and the brand its subscribers actually see, resolved through the tree.
#[utoipa::path(get, path = "/api/v1/resellers/{id}/brand", tag = "resellers", params(("id" = i64, Path)),
    responses((status = 200, body = BrandView)))]
async fn get_brand(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<BrandView>> {
    actor.require(Permission::ManageBranding)?;
    let view = st.read_scoped(&actor, move |c, scope| {
        tenant::get_visible(c, scope, id)?;
        brand::view(c, id)
    });
    Ok(Json(view.await?))
}

/// Replace the brand settings of your own tenant or a reseller below you (which must
/// have rebranding). Sites serving its subscribers, and those of resellers below it
/// that inherit the brand, receive it through the state feed.
#[utoipa::path(put, path = "/api/v1/resellers/{id}/brand", tag = "resellers", params(("id" = i64, Path)),
    request_body = BrandSettings,
    responses((status = 200, body = BrandView)))]
async fn set_brand(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(settings): ApiJson<BrandSettings>,
) -> Result<Json<BrandView>> {
    actor.require(Permission::ManageBranding)?;
    let view = st
        .db
        .write(move |tx| ops::set_brand(tx, &actor, id, settings))
        .await?;
    Ok(Json(view))
}
