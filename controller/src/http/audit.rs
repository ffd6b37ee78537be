//! `/api/v1/audit`: the audit log of your part of the tree.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiQuery, AppState, Page};
use crate::db::audit::{self, AuditEntry, AuditFilter};
use crate::error::Result;
use crate::scope::{Actor, Permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// Audit entries of your tenant and its descendants (a manager: its own tenant), newest
/// first, filterable by actor, action, target and time.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditFilter),
    responses((status = 200, body = Page<AuditEntry>)))]
async fn list_audit(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<AuditFilter>,
) -> Result<Json<Page<AuditEntry>>> {
    actor.require(Permission::ViewAuditLog)?;
    let (since, until) = (f.since.map(|t| t.0), f.until.map(|t| t.0));
    let list =
        move |c: &_, scope: &_, f: &_, paging| audit::list(c, scope, f, since, until, paging);
    Ok(Json(st.list_page(&actor, f, list, |e| e.id).await?))
}
