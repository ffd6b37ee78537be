//! Login sessions and API tokens. Only SHA-256 hashes of the secrets are stored.

use super::Cached;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::crypto::sha256;
use crate::error::{Error, Result};

/// A live credential found for a bearer secret.
#[derive(Debug, Clone)]
pub struct Found {
    pub user_id: i64,
    pub impersonator_id: Option<i64>,
    pub credential: crate::scope::Credential,
    /// Seconds since the credential was last marked used (to throttle that write).
    pub last_seen_at: i64,
}

pub fn create(
    conn: &Connection,
    token: &str,
    user_id: i64,
    impersonator_id: Option<i64>,
    ip: &str,
    user_agent: &str,
    ttl_secs: i64,
) -> Result<i64> {
    let now = super::now();
    conn.cached_exec(
        "INSERT INTO sessions (token_hash, user_id, impersonator_id, ip, user_agent, created_at, last_seen_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
        params![sha256(token.as_bytes()), user_id, impersonator_id, ip, user_agent, now, now + ttl_secs],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Looks a secret up among live sessions (`ops_…`) or API tokens (`opt_…`).
pub fn find(conn: &Connection, secret: &str) -> Result<Option<Found>> {
    let hash = sha256(secret.as_bytes());
    let now = super::now();
    if secret.starts_with("ops_") {
        Ok(conn
            .cached_row(
                "SELECT id, user_id, impersonator_id, last_seen_at FROM sessions
                 WHERE token_hash = ?1 AND revoked_at IS NULL AND expires_at > ?2",
                params![hash, now],
                |r| {
                    Ok(Found {
                        credential: crate::scope::Credential::Session { id: r.get(0)? },
                        user_id: r.get(1)?,
                        impersonator_id: r.get(2)?,
                        last_seen_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
    } else if secret.starts_with("opt_") {
        Ok(conn
            .cached_row(
                "SELECT id, user_id, coalesce(last_used_at, 0) FROM api_tokens
                 WHERE token_hash = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
                params![hash, now],
                |r| {
                    Ok(Found {
                        credential: crate::scope::Credential::ApiToken { id: r.get(0)? },
                        user_id: r.get(1)?,
                        impersonator_id: None,
                        last_seen_at: r.get(2)?,
                    })
                },
            )
            .optional()?)
    } else {
        Ok(None)
    }
}

pub fn touch(conn: &Connection, c: &crate::scope::Credential) -> Result<()> {
    let now = super::now();
    match c {
        crate::scope::Credential::Session { id } => conn.cached_exec(
            "UPDATE sessions SET last_seen_at = ?2 WHERE id = ?1",
            params![id, now],
        )?,
        crate::scope::Credential::ApiToken { id } => conn.cached_exec(
            "UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1",
            params![id, now],
        )?,
    };
    Ok(())
}

pub fn revoke(conn: &Connection, c: &crate::scope::Credential) -> Result<()> {
    let now = super::now();
    match c {
        crate::scope::Credential::Session { id } => conn.cached_exec(
            "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now],
        )?,
        crate::scope::Credential::ApiToken { id } => conn.cached_exec(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now],
        )?,
    };
    Ok(())
}

/// Ends every session and token of a user (disabled, or password changed).
pub fn revoke_all_for_user(
    conn: &Connection,
    user_id: i64,
    keep_session: Option<i64>,
) -> Result<()> {
    let now = super::now();
    conn.cached_exec(
        "UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL AND id IS NOT ?3",
        params![user_id, now, keep_session],
    )?;
    conn.cached_exec(
        "UPDATE api_tokens SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
        params![user_id, now],
    )?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked: bool,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiToken {
    #[schema(value_type = crate::wire::Name)]
    pub name: String,
    /// 1..=3650; none = until revoked.
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<i64>,
}

/// Shown once, at creation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiToken {
    #[serde(flatten)]
    pub token: ApiToken,
    /// The bearer secret: `Authorization: Bearer opt_…`. It cannot be shown again.
    pub secret: String,
}

fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiToken> {
    Ok(ApiToken {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: super::rfc3339(r.get(2)?),
        last_used_at: r.get::<_, Option<i64>>(3)?.map(super::rfc3339),
        expires_at: r.get::<_, Option<i64>>(4)?.map(super::rfc3339),
        revoked: r.get::<_, Option<i64>>(5)?.is_some(),
    })
}

pub fn create_token(
    conn: &Connection,
    user_id: i64,
    name: &str,
    expires_at: Option<i64>,
    secret: &str,
) -> Result<ApiToken> {
    conn.cached_exec(
        "INSERT INTO api_tokens (user_id, name, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![user_id, name, sha256(secret.as_bytes()), super::now(), expires_at],
    )?;
    get_token(conn, user_id, conn.last_insert_rowid())
}

/// A token of this user (tokens are personal: nobody else's are visible).
pub fn get_token(conn: &Connection, user_id: i64, id: i64) -> Result<ApiToken> {
    conn.cached_row(
        "SELECT id, name, created_at, last_used_at, expires_at, revoked_at FROM api_tokens WHERE user_id = ?1 AND id = ?2",
        params![user_id, id],
        token_from_row,
    )
    .optional()?
    .ok_or_else(|| Error::not_found("API token"))
}

pub fn list_tokens(conn: &Connection, user_id: i64) -> Result<Vec<ApiToken>> {
    let mut stmt = conn.prepare(
        "SELECT id, name, created_at, last_used_at, expires_at, revoked_at FROM api_tokens WHERE user_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([user_id], token_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
