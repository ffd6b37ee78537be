//! Logins: operator staff, reseller logins and managers, and what a manager may be
//! granted.

use rusqlite::Connection;

use crate::db::audit::Entry;
use crate::db::session;
use crate::db::tenant::{self, Counted, validate_name};
use crate::db::user::{self, NewUser, User, UserPatch, UserStatus};
use crate::error::{Error, Result};
use crate::scope::{Actor, OPERATOR_TENANT, PermSet, Permission, UserKind};

/// What permission set a new or changed manager gets, refusing escalation: a manager
/// can grant only functions it holds itself.
pub fn grant(
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

/// Creates a login in `input.tenant_id` (by default the actor's tenant) with a checked
/// email, name and permission set and an already hashed password.
pub fn create_user(
    tx: &Connection,
    actor: &Actor,
    input: &NewUser,
    email: &str,
    name: &str,
    perms: &PermSet,
    hash: &str,
) -> Result<User> {
    let t = tenant::assignable(tx, actor, input.tenant_id, "user.create")?;
    match input.kind {
        UserKind::Operator if !(actor.is_operator_staff() && t.id == OPERATOR_TENANT) => {
            return Err(Error::forbidden(
                "permission_denied",
                "only operator staff create operator staff",
            ));
        }
        UserKind::Reseller if t.id == OPERATOR_TENANT => {
            return Err(Error::conflict(
                "tenant_mismatch",
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
            email,
            name,
            phone: input.phone.trim(),
            password_hash: hash,
            permissions: perms,
            created_by: Some(actor.user_id),
        },
    )?;
    let view = u.view();
    Entry::by(actor, u.tenant_id, "user.create", "user", u.id)
        .after(&view)
        .record(tx)?;
    Ok(view)
}

/// Changes a login the actor can see; disabling it or setting its password (given
/// already hashed) ends its sessions and tokens.
pub fn update_user(
    tx: &Connection,
    actor: &Actor,
    id: i64,
    p: &UserPatch,
    hash: Option<&str>,
) -> Result<User> {
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
        // Whether a user takes permissions depends on its stored kind: a conflict, not a
        // malformed request.
        Some(list) => grant(actor, u.kind, list, None).map_err(|e| {
            if e.kind == crate::error::ErrorKind::Invalid {
                Error::conflict("not_a_manager", e.message)
            } else {
                e
            }
        })?,
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
    let after = user::update(tx, &u, &name, &phone, status, &perms, hash)?;
    if status == UserStatus::Disabled || hash.is_some() {
        session::revoke_all_for_user(tx, u.id, None)?;
    }
    let mut after_view = serde_json::to_value(after.view()).expect("serializes");
    if hash.is_some() {
        after_view["password"] = "[changed]".into();
    }
    Entry::by(actor, u.tenant_id, "user.update", "user", u.id)
        .before(&u.view())
        .after(&after_view)
        .record(tx)?;
    Ok(after.view())
}

/// A new login's checked email and name and the permission set it gets (see
/// [`grant`]), before its password is hashed.
pub fn check_new(actor: &Actor, input: &NewUser) -> Result<(String, String, PermSet)> {
    let email = user::validate_email(&input.email)?;
    let name = validate_name("name", &input.name, 120)?;
    user::validate_password("password", &input.password)?;
    let perms = grant(actor, input.kind, &input.permissions, input.preset)?;
    Ok((email, name, perms))
}

/// Hashes a password on the password gate's threads, a few at a time, as logins check
/// them.
pub async fn hash_password(st: &crate::AppState, password: String) -> Result<String> {
    let hasher = st.hasher.clone();
    st.password_checks
        .slot()
        .await?
        .run(move || hasher.hash(&password))
        .await?
        .map_err(|e| Error::internal(&e))
}
