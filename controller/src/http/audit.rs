//! `/api/v1/audit`: the audit log of your part of the tree.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiQuery, AppState, ErrorBody, Page};
use crate::db::audit::{self, AuditEntry, AuditFilter};
use crate::db::subscriber::parse_time;
use crate::error::{ApiError, ApiResult};
use crate::scope::{Actor, Permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Audit entries of your tenant and its descendants (a manager: its own tenant), newest
/// first, filterable by actor, action, target and time.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditFilter),
    responses((status = 200, body = Page<AuditEntry>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<AuditFilter>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    actor.require(Permission::ViewAuditLog)?;
    let since = f
        .since
        .as_deref()
        .map(|s| parse_time("since", s))
        .transpose()?;
    let until = f
        .until
        .as_deref()
        .map(|s| parse_time("until", s))
        .transpose()?;
    let before = match f.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::bad_request(
                "bad_cursor",
                "cursor must be a next_cursor from a previous page",
            )
        })?),
    };
    let limit = f.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "bad_limit",
            "limit must be between 1 and 500",
        ));
    }
    let scope = actor.scope();
    let mut items = st
        .db
        .read(move |c| audit::list(c, &scope, &f, since, until, before, limit + 1))
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|e| e.id.to_string())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}
