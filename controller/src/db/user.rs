//! Logins: operator staff, reseller users and managers.

use super::Cached;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::paging::list_filter;
use super::row::{owned_row, stored_row};
use super::{Filter, Paging};
use crate::error::{Error, Result};
use crate::scope::{PermSet, Permission, RolePreset, Scope, UserKind};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: i64,
    pub tenant_id: i64,
    pub kind: UserKind,
    pub email: String,
    pub name: String,
    pub phone: String,
    /// Granted functions (managers). Operator and reseller logins hold every function
    /// within their scope and show the full list.
    pub permissions: PermSet,
    pub status: UserStatus,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Disabled,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(value_type = crate::wire::Name)]
    pub name: String,
    #[serde(default)]
    pub phone: String,
    /// 10 to 128 characters.
    #[schema(min_length = 10, max_length = 128)]
    pub password: String,
    pub kind: UserKind,
    /// The tenant the user belongs to (acts for); defaults to the caller's.
    pub tenant_id: Option<i64>,
    /// Managers only: granted functions. Combined with `preset` when both are given.
    #[serde(default)]
    pub permissions: Vec<Permission>,
    /// Managers only: a named permission set.
    pub preset: Option<RolePreset>,
}

impl NewUser {
    /// Body rules across fields, for the OpenAPI document (see `http::cross_field_rules`):
    /// only a manager takes `permissions` or a `preset`.
    pub const SCHEMA_RULES: &str = r#"[
        {"if": {"not": {"properties": {"kind": {"const": "manager"}}, "required": ["kind"]}},
         "then": {"properties": {"permissions": {"maxItems": 0}, "preset": {"type": "null"}}}}
    ]"#;
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[schema(value_type = Option<crate::wire::Name>)]
    pub name: Option<String>,
    pub phone: Option<String>,
    pub status: Option<UserStatus>,
    /// Managers only: replaces the granted functions.
    pub permissions: Option<Vec<Permission>>,
    /// Sets a new password (10 to 128 characters) and ends the user's sessions.
    #[schema(min_length = 10, max_length = 128)]
    pub password: Option<String>,
}

stored_row! {
    /// A user row with what login and request checks need.
    #[derive(Debug, Clone)]
    pub struct UserRow in COLS, read by from_row {
        pub id: i64 = "u.id",
        pub tenant_id: i64 = "u.tenant_id",
        pub tenant_path: String = "t.path",
        pub kind: UserKind = "u.kind" => stored_kind,
        pub email: String = "u.email",
        pub name: String = "u.name",
        pub phone: String = "u.phone",
        pub password_hash: String = "u.password_hash",
        pub permissions: PermSet = "u.permissions" => stored_permissions,
        pub status: UserStatus = "u.status" => stored_status,
        pub created_at: i64 = "u.created_at",
        pub updated_at: i64 = "u.updated_at",
    }
}

// The schema's CHECK keeps kind to these three.
fn stored_kind(s: String) -> UserKind {
    UserKind::parse(&s).unwrap_or(UserKind::Manager)
}

fn stored_permissions(s: String) -> PermSet {
    PermSet::from_json(&s)
}

fn stored_status(s: String) -> UserStatus {
    if s == "active" {
        UserStatus::Active
    } else {
        UserStatus::Disabled
    }
}

impl UserRow {
    pub fn view(&self) -> User {
        User {
            id: self.id,
            tenant_id: self.tenant_id,
            kind: self.kind,
            email: self.email.clone(),
            name: self.name.clone(),
            phone: self.phone.clone(),
            permissions: match self.kind {
                UserKind::Manager => self.permissions.clone(),
                _ => PermSet::all(),
            },
            status: self.status,
            created_at: super::rfc3339(self.created_at),
            updated_at: super::rfc3339(self.updated_at),
        }
    }
}

/// Unscoped, for authentication.
pub fn get(conn: &Connection, id: i64) -> Result<Option<UserRow>> {
    Ok(conn
        .cached_row(
            &format!(
                "SELECT {COLS} FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE u.id = ?"
            ),
            [id],
            from_row,
        )
        .optional()?)
}

/// Unscoped, for login.
pub fn get_by_email(conn: &Connection, email: &str) -> Result<Option<UserRow>> {
    Ok(conn
        .cached_row(
            &format!(
                "SELECT {COLS} FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE u.email = ?"
            ),
            [email.trim()],
            from_row,
        )
        .optional()?)
}

pub fn get_visible(conn: &Connection, scope: &Scope, id: i64) -> Result<UserRow> {
    let select = format!("SELECT {COLS} FROM users u JOIN tenants t ON t.id = u.tenant_id");
    owned_row(conn, scope, &select, "u", id, from_row, "user")
}

list_filter! {
    pub struct UserFilter {
        /// Name or email contains (case-insensitive).
        pub q: Option<String>,
        pub tenant_id: Option<i64>,
        pub kind: Option<UserKind>,
    }
}

pub fn list(
    conn: &Connection,
    scope: &Scope,
    f: &UserFilter,
    paging: Paging,
) -> Result<Vec<UserRow>> {
    let mut w = Filter::scoped(scope, "u.tenant_id");
    w.search(&["u.name", "u.email"], f.q.as_deref())
        .and_opt("u.tenant_id = ?", f.tenant_id)
        .and_opt("u.kind = ?", f.kind.map(|k| k.as_str().to_string()));
    let select = format!("SELECT {COLS} FROM users u JOIN tenants t ON t.id = u.tenant_id");
    w.page(conn, &select, "u.id", paging, from_row)
}

pub fn validate_email(s: &str) -> Result<String> {
    let e = s.trim().to_ascii_lowercase();
    let valid = e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && match e.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
            }
            None => false,
        };
    if valid {
        Ok(e)
    } else {
        Err(Error::invalid(format!(
            "email: '{s}' is not an email address"
        )))
    }
}

pub fn validate_password(field: &str, p: &str) -> Result<()> {
    let n = p.chars().count();
    if !(10..=128).contains(&n) {
        return Err(Error::invalid(format!(
            "{field} must be 10 to 128 characters long"
        )));
    }
    Ok(())
}

/// A user row to insert. The caller has already checked who may create what.
pub struct Insert<'a> {
    pub tenant_id: i64,
    pub kind: UserKind,
    pub email: &'a str,
    pub name: &'a str,
    pub phone: &'a str,
    pub password_hash: &'a str,
    pub permissions: &'a PermSet,
    pub created_by: Option<i64>,
}

pub fn insert(conn: &Connection, u: &Insert<'_>) -> Result<UserRow> {
    let now = super::now();
    conn.cached_exec(
        "INSERT INTO users (tenant_id, kind, email, name, phone, password_hash, permissions, created_by, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
        params![
            u.tenant_id,
            u.kind.as_str(),
            u.email,
            u.name,
            u.phone,
            u.password_hash,
            u.permissions.to_json(),
            u.created_by,
            now
        ],
    )?;
    Ok(get(conn, conn.last_insert_rowid())?.expect("just inserted"))
}

pub fn update(
    conn: &Connection,
    u: &UserRow,
    name: &str,
    phone: &str,
    status: UserStatus,
    permissions: &PermSet,
    password_hash: Option<&str>,
) -> Result<UserRow> {
    conn.cached_exec(
        "UPDATE users SET name = ?2, phone = ?3, status = ?4, permissions = ?5,
             password_hash = coalesce(?6, password_hash), updated_at = ?7 WHERE id = ?1",
        params![
            u.id,
            name,
            phone,
            status.as_str(),
            permissions.to_json(),
            password_hash,
            super::now()
        ],
    )?;
    Ok(get(conn, u.id)?.expect("exists"))
}

/// Replaces a user's password and ends every session of theirs but `keep` (the one that
/// changed it, if any): whoever knew the old password is locked out with it.
pub fn set_password(conn: &Connection, u: &UserRow, hash: &str, keep: Option<i64>) -> Result<()> {
    update(
        conn,
        u,
        &u.name,
        &u.phone,
        u.status,
        &u.permissions,
        Some(hash),
    )?;
    super::session::revoke_all_for_user(conn, u.id, keep)?;
    Ok(())
}

pub fn count_operator_staff(conn: &Connection) -> Result<i64> {
    Ok(conn.cached_row(
        "SELECT count(*) FROM users WHERE kind = 'operator'",
        [],
        |r| r.get(0),
    )?)
}
