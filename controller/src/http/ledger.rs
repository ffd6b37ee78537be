//! The ledger, reseller statements (JSON or CSV) and the renewals/revenue summary.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiPath, ApiQuery, AppState, ErrorBody, Page, Paging};
use crate::db::ledger::{self, LedgerEntry, LedgerFilter, PeriodSummary, StatementFormat};
use crate::db::paging::QueryTime;
use crate::db::tenant;
use crate::error::{Error, Result};
use crate::scope::{Actor, Permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(statement))
        .routes(routes!(list_ledger))
        .routes(routes!(summary))
}

fn bounds(f: &LedgerFilter) -> (Option<i64>, Option<i64>) {
    (f.since.map(|t| t.0), f.until.map(|t| t.0))
}

/// Ledger entries of your part of the tree, oldest first.
#[utoipa::path(get, path = "/api/v1/ledger", tag = "balances", params(LedgerFilter),
    responses((status = 200, body = Page<LedgerEntry>)))]
async fn list_ledger(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<LedgerFilter>,
) -> Result<Json<Page<LedgerEntry>>> {
    actor.require(Permission::ViewInvoices)?;
    let list = |c: &_, scope: &_, f: &LedgerFilter, paging| {
        let (since, until) = bounds(f);
        ledger::list(c, scope, f, since, until, paging)
    };
    let page = st.list_page(&actor, f, list, |r| r.id).await?;
    Ok(Json(page.map(|r| r.view(&st.currency))))
}

const CSV_MAX_ROWS: u32 = 100_000;

/// A reseller's statement: its ledger entries with filters, as JSON (paged) or as CSV
/// (`Accept: text/csv` or `format=csv`). A CSV statement without `limit` holds up to
/// 100000 rows (`X-Truncated: true` when there are more; follow with `cursor`).
#[utoipa::path(get, path = "/api/v1/resellers/{id}/statement", tag = "balances", params(("id" = i64, Path), LedgerFilter),
    responses((status = 200, description = "The statement: a JSON page, or CSV with `Accept: text/csv` or `format=csv`",
                content((Page<LedgerEntry> = "application/json"), (String = "text/csv")))))]
async fn statement(
    State(st): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(mut f): ApiQuery<LedgerFilter>,
) -> Result<Response> {
    actor.require(Permission::ViewInvoices)?;
    let csv = match f.format {
        Some(StatementFormat::Csv) => true,
        Some(StatementFormat::Json) => false,
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv")),
    };
    let (since, until) = bounds(&f);
    // `limit` means the same for both formats (1..=500); a CSV export without one is
    // the whole statement, up to CSV_MAX_ROWS.
    let paging = match (csv, f.limit) {
        (true, None) => Paging {
            limit: CSV_MAX_ROWS,
            ..Paging::new(f.cursor.as_deref(), None)?
        },
        _ => Paging::new(f.cursor.as_deref(), f.limit)?,
    };
    let rows = st
        .read_scoped(&actor, move |c, scope| {
            let (t, over) = tenant::rows_scope(c, scope, id)?;
            // The statement is the tenant's own account: its rows alone, not its
            // descendants'.
            f.tenant_id = Some(t.id);
            ledger::list(c, &over, &f, since, until, paging)
        })
        .await?;
    let entries: Vec<LedgerEntry> = rows.iter().map(|r| r.view(&st.currency)).collect();
    if !csv {
        return Ok(Json(paging.page(entries, |e| e.id)).into_response());
    }
    let mut entries = entries;
    let truncated = entries.len() > paging.limit as usize;
    entries.truncate(paging.limit as usize);
    let mut w = csv::Writer::from_writer(Vec::new());
    let head = [
        "id",
        "at",
        "account",
        "kind",
        "amount",
        "balance_after",
        "currency",
        "subscriber_id",
        "plan_id",
        "counterparty_tenant_id",
        "actor_user_id",
        "operation_id",
        "reason",
    ];
    w.write_record(head).map_err(|e| Error::internal(&e))?;
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    for e in &entries {
        let kind = serde_json::to_value(e.kind).expect("serializes");
        let account = serde_json::to_value(e.account).expect("serializes");
        w.write_record([
            e.id.to_string(),
            e.at.clone(),
            account.as_str().unwrap_or_default().to_string(),
            kind.as_str().unwrap_or_default().to_string(),
            e.amount.to_string(),
            e.balance_after.to_string(),
            st.currency.code.clone(),
            opt(e.subscriber_id),
            opt(e.plan_id),
            opt(e.counterparty_tenant_id),
            opt(e.actor_user_id),
            e.operation_id.to_string(),
            e.reason.clone().unwrap_or_default(),
        ])
        .map_err(|e| Error::internal(&e))?;
    }
    let body = w.into_inner().map_err(|e| Error::internal(e.error()))?;
    let mut resp = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"statement-{id}.csv\""))
                    .expect("ascii"),
            ),
        ],
        body,
    )
        .into_response();
    if truncated {
        resp.headers_mut()
            .insert("x-truncated", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    /// The tenant to summarise with its descendants; defaults to yours.
    pub tenant_id: Option<i64>,
    /// `month` (default) or `day`.
    #[param(inline)]
    pub period: Option<Period>,
    /// RFC 3339; default: 12 months (or 31 days) back.
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<QueryTime>,
    /// RFC 3339; default: now.
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<QueryTime>,
}

/// The length of a summary's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Month,
    Day,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Summary {
    pub tenant_id: i64,
    pub currency: String,
    pub periods: Vec<PeriodSummary>,
}

/// Renewals and revenue per period for a tenant and its descendants (a manager: its
/// own tenant only).
#[utoipa::path(get, path = "/api/v1/reports/summary", tag = "balances", params(SummaryQuery),
    responses((status = 200, body = Summary), (status = 404, body = ErrorBody)))]
async fn summary(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(q): ApiQuery<SummaryQuery>,
) -> Result<Json<Summary>> {
    actor.require(Permission::ViewReports)?;
    let monthly = q.period != Some(Period::Day);
    let now = crate::db::now();
    let until = q.until.map_or(now + 1, |t| t.0);
    let since = q
        .since
        .map_or(until - if monthly { 366 } else { 31 } * 86_400, |t| t.0);
    let tenant_id = q.tenant_id.unwrap_or(actor.tenant_id);
    let cur = st.currency.clone();
    let periods = st
        .read_scoped(&actor, move |c, scope| {
            let (_, over) = tenant::rows_scope(c, scope, tenant_id)?;
            ledger::summary(c, &over, monthly, since, until, &cur)
        })
        .await?;
    Ok(Json(Summary {
        tenant_id,
        currency: st.currency.code.clone(),
        periods,
    }))
}
