//! `/api/v1/users`: operator staff, reseller logins and managers.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, AppState, ErrorBody, Page, Paging};
use crate::db::audit::{self, Entry, Who};
use crate::db::session;
use crate::db::tenant::{self, Counted, validate_name};
use crate::db::user::{self, NewUser, User, UserFilter, UserPatch, UserStatus};
use crate::error::{Error, Result};
use crate::scope::{Actor, OPERATOR_TENANT, PermSet, Permission, UserKind};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update))
}

/// Users of your part of the tree (a manager: of its own tenant).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(UserFilter),
    responses((status = 200, body = Page<User>), (status = 403, body = ErrorBody)))]
async fn list(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<UserFilter>,
) -> Result<Json<Page<User>>> {
    actor.require(Permission::ManageStaff)?;
    let paging = Paging::new(f.cursor.as_deref(), f.limit)?;
    let scope = actor.scope();
    let rows = st
        .db
        .read(move |c| user::list(c, &scope, &f, paging.after, paging.fetch()))
        .await?;
    Ok(Json(
        paging.page(rows.iter().map(|u| u.view()).collect(), |u| u.id),
    ))
}

/// What permission set a new or changed manager gets, refusing escalation: a manager
/// can grant only functions it holds itself.
fn grant(
    actor: &Actor,
    kind: UserKind,
    list: &[Permission],
    preset: Option<crate::scope::RolePreset>,
) -> Result<PermSet> {
    let mut set = PermSet(list.iter().copied().collect());
    if let Some(p) = preset {
        set.0.extend(p.permissions().0);
    }
    if kind != UserKind::Manager {
        if !set.0.is_empty() {
            return Err(Error::invalid(
                "permissions and preset apply to managers only: operator and reseller logins hold every function of their scope",
            ));
        }
        return Ok(PermSet::default());
    }
    if !set.is_subset(&actor.effective_permissions()) {
        let extra: Vec<&str> = set
            .0
            .iter()
            .filter(|p| !actor.can(**p))
            .map(|p| p.as_str())
            .collect();
        return Err(Error::forbidden(
            "permission_denied",
            format!(
                "you cannot grant functions you do not hold: {}",
                extra.join(", ")
            ),
        ));
    }
    Ok(set)
}

/// Create a login: operator staff (operator only), a reseller login (operator and
/// reseller logins), or a manager with granted permissions.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = User), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn create(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(input): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<User>)> {
    actor.require(Permission::ManageStaff)?;
    let email = user::validate_email(&input.email)?;
    let name = validate_name("name", &input.name, 120)?;
    user::validate_password("password", &input.password)?;
    let perms = grant(&actor, input.kind, &input.permissions, input.preset)?;
    let hasher = st.hasher.clone();
    let password = input.password.clone();
    let hash = tokio::task::spawn_blocking(move || hasher.hash(&password))
        .await?
        .map_err(|e| Error::internal(&e))?;
    let created = st
        .db
        .write(move |tx| {
            let t = tenant::assignable(tx, &actor, input.tenant_id, "user.create")?;
            match input.kind {
                UserKind::Operator if !(actor.is_operator_staff() && t.id == OPERATOR_TENANT) => {
                    return Err(Error::forbidden(
                        "permission_denied",
                        "only operator staff create operator staff",
                    ));
                }
                UserKind::Reseller if t.id == OPERATOR_TENANT => {
                    return Err(Error::invalid(
                        "a reseller login belongs to a reseller: set tenant_id",
                    ));
                }
                UserKind::Reseller if actor.kind == UserKind::Manager => {
                    return Err(Error::forbidden(
                        "permission_denied",
                        "managers cannot create reseller logins",
                    ));
                }
                UserKind::Manager => tenant::check_capacity(tx, &t, Counted::Managers, |_| Ok(1))?,
                _ => {}
            }
            let u = user::insert(
                tx,
                &user::Insert {
                    tenant_id: t.id,
                    kind: input.kind,
                    email: &email,
                    name: &name,
                    phone: input.phone.trim(),
                    password_hash: &hash,
                    permissions: &perms,
                    created_by: Some(actor.user_id),
                },
            )?;
            let view = u.view();
            audit::record(
                tx,
                &Entry::new(&Who::from(&actor), u.tenant_id, "user.create", "user", u.id)
                    .after(&view),
            )?;
            Ok(view)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// One user of your part of the tree.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path)),
    responses((status = 200, body = User), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<User>> {
    actor.require(Permission::ManageStaff)?;
    let scope = actor.scope();
    Ok(Json(
        st.db
            .read(move |c| user::get_visible(c, &scope, id))
            .await?
            .view(),
    ))
}

/// Change a user: name, phone, status, a manager's permissions, or set a new password.
/// Disabling a user or setting its password ends its sessions and tokens.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path)), request_body = UserPatch,
    responses((status = 200, body = User), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn update(
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
        Some(pw) => {
            let hasher = st.hasher.clone();
            Some(
                tokio::task::spawn_blocking(move || hasher.hash(&pw))
                    .await?
                    .map_err(|e| Error::internal(&e))?,
            )
        }
        None => None,
    };
    let view = st
        .db
        .write(move |tx| {
            let u = user::get_visible(tx, &actor.scope(), id)?;
            if actor.kind == UserKind::Manager && u.kind != UserKind::Manager {
                return Err(Error::forbidden(
                    "permission_denied",
                    "managers can change only other managers",
                ));
            }
            if u.kind == UserKind::Operator && !actor.is_operator_staff() {
                return Err(Error::not_found("user"));
            }
            if u.id == actor.user_id && (p.status.is_some() || p.permissions.is_some()) {
                return Err(Error::forbidden(
                    "permission_denied",
                    "you cannot change your own status or permissions",
                ));
            }
            let perms = match &p.permissions {
                Some(list) => grant(&actor, u.kind, list, None)?,
                None => u.permissions.clone(),
            };
            let name = p
                .name
                .as_deref()
                .map(|n| validate_name("name", n, 120))
                .transpose()?
                .unwrap_or(u.name.clone());
            let phone = p
                .phone
                .as_deref()
                .map(str::trim)
                .unwrap_or(&u.phone)
                .to_string();
            let status = p.status.unwrap_or(u.status);
            let after = user::update(tx, &u, &name, &phone, status, &perms, hash.as_deref())?;
            if status == UserStatus::Disabled || hash.is_some() {
                session::revoke_all_for_user(tx, u.id, None)?;
            }
            let mut after_view = serde_json::to_value(after.view()).expect("serializes");
            if hash.is_some() {
                after_view["password"] = "[changed]".into();
            }
            audit::record(
                tx,
                &Entry::new(&Who::from(&actor), u.tenant_id, "user.update", "user", u.id)
                    .before(&u.view())
                    .after(&after_view),
            )?;
            Ok(after.view())
        })
        .await?;
    Ok(Json(view))
}
