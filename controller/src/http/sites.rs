//! `/api/v1/sites` and `/api/v1/nas`: where agents run and the NAS devices they serve.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, AppState, ErrorBody, Page, page, paging};
use crate::db::audit::{self, Entry, Who};
use crate::db::nas::{self, Nas, NasFilter, NasPatch, NewNas};
use crate::db::site::{self, NewSite, Site, SiteFilter, SitePatch};
use crate::db::tenant;
use crate::error::Result;
use crate::scope::{Actor, Permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sites, create_site))
        .routes(routes!(get_site, update_site))
        .routes(routes!(list_nas, create_nas))
        .routes(routes!(get_nas, update_nas))
}

/// Sites in your part of the tree.
#[utoipa::path(get, path = "/api/v1/sites", tag = "sites", params(SiteFilter),
    responses((status = 200, body = Page<Site>), (status = 403, body = ErrorBody)))]
async fn list_sites(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<SiteFilter>,
) -> Result<Json<Page<Site>>> {
    actor.require(Permission::ManageSites)?;
    let (after, limit) = paging(f.cursor.as_deref(), f.limit)?;
    let scope = actor.scope();
    let rows = st
        .db
        .read(move |c| site::list(c, &scope, &f, after, limit + 1))
        .await?;
    Ok(Json(page(rows, limit, |s| s.id)))
}

/// Create a site (owned by `tenant_id`, by default your own tenant).
#[utoipa::path(post, path = "/api/v1/sites", tag = "sites", request_body = NewSite,
    responses((status = 201, body = Site), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn create_site(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(input): ApiJson<NewSite>,
) -> Result<(StatusCode, Json<Site>)> {
    actor.require(Permission::ManageSites)?;
    let s = st
        .db
        .write(move |tx| {
            let owner = tenant::assignable(tx, &actor, input.tenant_id, "site.create")?;
            let s = site::create(tx, &owner, &input)?;
            audit::record(
                tx,
                &Entry::new(&Who::from(&actor), owner.id, "site.create", "site", s.id).after(&s),
            )?;
            Ok(s)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(s)))
}

/// One site.
#[utoipa::path(get, path = "/api/v1/sites/{id}", tag = "sites", params(("id" = i64, Path)),
    responses((status = 200, body = Site), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_site(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Site>> {
    actor.require(Permission::ManageSites)?;
    let scope = actor.scope();
    Ok(Json(
        st.db
            .read(move |c| site::get_visible(c, &scope, id))
            .await?,
    ))
}

/// Rename or describe a site.
#[utoipa::path(patch, path = "/api/v1/sites/{id}", tag = "sites", params(("id" = i64, Path)), request_body = SitePatch,
    responses((status = 200, body = Site), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn update_site(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(p): ApiJson<SitePatch>,
) -> Result<Json<Site>> {
    actor.require(Permission::ManageSites)?;
    let s = st
        .db
        .write(move |tx| {
            let before = site::get_visible(tx, &actor.scope(), id)?;
            let after = site::update(tx, &before, &p)?;
            audit::record(
                tx,
                &Entry::new(
                    &Who::from(&actor),
                    after.tenant_id,
                    "site.update",
                    "site",
                    id,
                )
                .before(&before)
                .after(&after),
            )?;
            Ok(after)
        })
        .await?;
    Ok(Json(s))
}

/// NAS devices in your part of the tree (without their secrets).
#[utoipa::path(get, path = "/api/v1/nas", tag = "nas", params(NasFilter),
    responses((status = 200, body = Page<Nas>), (status = 403, body = ErrorBody)))]
async fn list_nas(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<NasFilter>,
) -> Result<Json<Page<Nas>>> {
    actor.require(Permission::ManageSites)?;
    let (after, limit) = paging(f.cursor.as_deref(), f.limit)?;
    let scope = actor.scope();
    let rows = st
        .db
        .read(move |c| nas::list(c, &scope, &f, after, limit + 1))
        .await?;
    Ok(Json(page(rows, limit, |n| n.id)))
}

/// Register a NAS at a site. The RADIUS secret is stored sealed.
#[utoipa::path(post, path = "/api/v1/nas", tag = "nas", request_body = NewNas,
    responses((status = 201, body = Nas), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn create_nas(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(input): ApiJson<NewNas>,
) -> Result<(StatusCode, Json<Nas>)> {
    actor.require(Permission::ManageSites)?;
    let secrets = st.secrets.clone();
    let n = st
        .db
        .write(move |tx| {
            let owner = tenant::assignable(tx, &actor, input.tenant_id, "nas.create")?;
            let n = nas::create(tx, &owner, &input, &secrets)?;
            audit::record(
                tx,
                &Entry::new(&Who::from(&actor), owner.id, "nas.create", "nas", n.id).after(&n),
            )?;
            Ok(n)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(n)))
}

/// One NAS, with its RADIUS secret.
#[utoipa::path(get, path = "/api/v1/nas/{id}", tag = "nas", params(("id" = i64, Path)),
    responses((status = 200, body = Nas), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_nas(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Nas>> {
    actor.require(Permission::ManageSites)?;
    let scope = actor.scope();
    let secrets = st.secrets.clone();
    Ok(Json(
        st.db
            .read(move |c| nas::get_visible(c, &scope, id, Some(&secrets)))
            .await?,
    ))
}

/// Change a NAS: name, address, secret, dialect, CoA port, Message-Authenticator policy.
#[utoipa::path(patch, path = "/api/v1/nas/{id}", tag = "nas", params(("id" = i64, Path)), request_body = NasPatch,
    responses((status = 200, body = Nas), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
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
        .write(move |tx| {
            let before = nas::get_visible(tx, &actor.scope(), id, None)?;
            let after = nas::update(tx, &before, &p, &secrets)?;
            let mut after_json = serde_json::to_value(&after).expect("serializes");
            if p.secret.is_some() {
                after_json["secret"] = "[changed]".into();
            }
            audit::record(
                tx,
                &Entry::new(&Who::from(&actor), after.tenant_id, "nas.update", "nas", id)
                    .before(&before)
                    .after(&after_json),
            )?;
            Ok(after)
        })
        .await?;
    Ok(Json(n))
}
