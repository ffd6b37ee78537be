//! `/api/v1/resellers`: the reseller tree below the caller.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, AppState, Page};
use crate::backup;
use crate::db::brand::{self, BrandSettings, BrandView};
use crate::db::tenant::{self, NewReseller, Reseller, ResellerFilter, ResellerPatch};
use crate::error::Result;
use crate::ops::resellers as ops;
use crate::scope::{Actor, Permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_resellers, create_reseller))
        .routes(routes!(get_reseller, update_reseller, delete_reseller))
        .routes(routes!(get_brand, set_brand))
        .routes(routes!(export_reseller))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(restore_reseller))
                // An archive of a reseller with 100,000 subscribers is tens of MiB.
                .layer(axum::extract::DefaultBodyLimit::max(ARCHIVE_MAX)),
        )
}

/// The largest archive a restore accepts.
const ARCHIVE_MAX: usize = 512 << 20;

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

/// Delete a reseller below you that holds nothing: no subscribers, no money (balance or
/// ledger history: the ledger is kept for ever, so such a reseller is disabled instead),
/// no sites, plans or sub-resellers. Its staff, their sessions and tokens go with it.
/// Otherwise 409 `reseller_not_empty`, naming what it holds; nothing is orphaned.
#[utoipa::path(delete, path = "/api/v1/resellers/{id}", tag = "resellers", params(("id" = i64, Path)),
    responses((status = 204, description = "Deleted"),
        (status = 409, description = "The reseller still holds subscribers, money, sites, plans or sub-resellers (`reseller_not_empty`): nothing is deleted")))]
async fn delete_reseller(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode> {
    actor.require(Permission::ManageResellers)?;
    let cur = st.currency.clone();
    st.db
        .write(move |tx| ops::delete_reseller(tx, &actor, id, &cur))
        .await?;
    Ok(StatusCode::NO_CONTENT)
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

/// Export a reseller's subtree (your own tenant or one below you): its tenants, users,
/// sites, NAS, plans, rate cards, subscribers, ledger, renewals, audit entries and brand,
/// as one archive with a manifest (schema version, row counts, checksums), signed with
/// this controller's ed25519 key and encrypted with age to its own identity
/// (`archive.sign`, `archive.age` in the data directory). Secrets travel opened inside
/// the encryption. Audited. Needs a reseller or operator login.
#[utoipa::path(post, path = "/api/v1/resellers/{id}/export", tag = "resellers", params(("id" = i64, Path)),
    responses((status = 200, description = "The archive (age-encrypted)", content_type = "application/octet-stream", body = Vec<u8>)))]
async fn export_reseller(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<impl axum::response::IntoResponse> {
    actor.require(Permission::ManageResellers)?;
    let keys = archive_keys(&st)?;
    let secrets = st.secrets.clone();
    let scope = actor.scope();
    let signer = keys.signer();
    let body = st
        .db
        .read(move |c| backup::reseller::export(c, Some(&scope), id, &secrets, &signer))
        .await?;
    let manifest = body.manifest.clone();
    let who = crate::security::Who::from(&actor);
    st.db
        .write(move |tx| backup::reseller::record_export(tx, &who, id, &manifest))
        .await?;
    let sealed = tokio::task::spawn_blocking(move || keys.seal(&body.to_bytes())).await?;
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/octet-stream".to_string(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"reseller-{id}.outpost-archive\""),
            ),
        ],
        sealed,
    ))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct RestoreQuery {
    /// Report what would change and write nothing.
    #[serde(default)]
    dry_run: bool,
    /// Where a reseller this installation lacks goes (default: the archive's parent).
    parent_id: Option<i64>,
}

/// Restore a reseller archive (the body, as `export` wrote it). Into the reseller it
/// names when that exists (in your subtree), else as a new reseller under its parent or
/// `parent_id` (where you may create resellers). Rows get new ids where theirs are
/// taken. Ledger rows come back only with a reseller the restore creates; the archived
/// audit entries are kept as a segment whose digest the `reseller.restore` entry holds.
/// A dry run reports the same and writes nothing; an altered archive (decryption,
/// signature, checksums) or any conflict writes nothing.
#[utoipa::path(post, path = "/api/v1/resellers/restore", tag = "resellers", params(RestoreQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = backup::reseller::RestoreReport)))]
async fn restore_reseller(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(q): ApiQuery<RestoreQuery>,
    archive: axum::body::Bytes,
) -> Result<Json<backup::reseller::RestoreReport>> {
    actor.require(Permission::ManageResellers)?;
    if !matches!(actor.scope(), crate::scope::Scope::Subtree { .. }) {
        return Err(crate::error::Error::forbidden(
            "permission_denied",
            "restoring a subtree needs a reseller or operator login",
        ));
    }
    let keys = archive_keys(&st)?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&archive));
    let body = tokio::task::spawn_blocking(move || {
        keys.open(&archive)
            .and_then(|b| backup::archive::Body::parse(&b))
    })
    .await??;
    let secrets = st.secrets.clone();
    let opts = backup::reseller::RestoreOptions {
        dry_run: q.dry_run,
        parent_id: q.parent_id,
        max_depth: st.config.tree.max_depth,
    };
    let report = st
        .db
        .write(move |tx| {
            let who = crate::security::Who::from(&actor);
            backup::reseller::restore(tx, Some(&actor), &who, &body, &sha, &secrets, &opts)
        })
        .await?;
    Ok(Json(report))
}

fn archive_keys(st: &AppState) -> Result<backup::archive::Keys> {
    backup::archive::Keys::load_or_create(&st.config.data_dir)
        .map_err(|e| crate::error::Error::internal(e.as_ref()))
}
