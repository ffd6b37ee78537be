//! `/api/v1/users`: operator staff, reseller logins and managers.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, AppState, Page};
use crate::db::user::{self, NewUser, User, UserFilter, UserPatch};
use crate::error::Result;
use crate::ops::users as ops;
use crate::scope::{Actor, Permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user))
}

/// Users of your part of the tree (a manager: of its own tenant).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(UserFilter),
    responses((status = 200, body = Page<User>)))]
async fn list_users(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<UserFilter>,
) -> Result<Json<Page<User>>> {
    actor.require(Permission::ManageStaff)?;
    let page = st.list_page(&actor, f, user::list, |u| u.id).await?;
    Ok(Json(page.map(|u| u.view())))
}

/// Create a login: operator staff (operator only), a reseller login (operator and
/// reseller logins), or a manager with granted permissions.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = User)))]
async fn create_user(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(input): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<User>)> {
    actor.require(Permission::ManageStaff)?;
    let (email, name, perms) = ops::check_new(&actor, &input)?;
    let hash = ops::hash_password(&st, input.password.clone()).await?;
    let created = st
        .db
        .write(move |tx| ops::create_user(tx, &actor, &input, &email, &name, &perms, &hash))
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// One user of your part of the tree.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path)),
    responses((status = 200, body = User)))]
async fn get_user(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<User>> {
    actor.require(Permission::ManageStaff)?;
    let user = st.read_scoped(&actor, move |c, s| user::get_visible(c, s, id));
    Ok(Json(user.await?.view()))
}

/// Change a user: name, phone, status, a manager's permissions, or set a new password.
/// Disabling a user or setting its password ends its sessions and tokens.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path)), request_body = UserPatch,
    responses((status = 200, body = User)))]
async fn update_user(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(p): ApiJson<UserPatch>,
) -> Result<Json<User>> {
    actor.require(Permission::ManageStaff)?;
    if let Some(pw) = &p.password {
        user::validate_password("password", pw)?;
    }
    let hash = match p.password.clone() {
        Some(pw) => Some(ops::hash_password(&st, pw).await?),
        None => None,
    };
    let view = st
        .db
        .write(move |tx| ops::update_user(tx, &actor, id, &p, hash.as_deref()))
        .await?;
    Ok(Json(view))
}
