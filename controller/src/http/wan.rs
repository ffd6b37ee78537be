//! `/api/v1/wan/…` and `/api/v1/subscribers/{id}/wan`: what the sites' WAN checks
//! report about the subscribers' CPEs — the state of each probe now, the outages, and
//! the outage report per site and per reseller. All of it scoped like the subscribers.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiPath, ApiQuery, AppState, ErrorBody, Page};
use crate::db::paging::QueryTime;
use crate::db::subscriber;
use crate::db::tenant;
use crate::db::wan::{
    self, OutageReport, SubscriberWan, WanOutage, WanOutageFilter, WanTarget, WanTargetFilter,
};
use crate::error::Result;
use crate::scope::{Actor, Permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_wan_targets))
        .routes(routes!(list_wan_outages))
        .routes(routes!(wan_report))
        .routes(routes!(subscriber_wan))
}

/// The state of every probed CPE in your part of the tree, as the sites last reported
/// it (filter by site, reseller, subscriber or state).
#[utoipa::path(get, path = "/api/v1/wan/targets", tag = "wan", params(WanTargetFilter),
    responses((status = 200, body = Page<WanTarget>), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_wan_targets(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<WanTargetFilter>,
) -> Result<Json<Page<WanTarget>>> {
    actor.require(Permission::ViewCustomers)?;
    Ok(Json(
        st.list_page(&actor, f, wan::list_targets, |t| t.id).await?,
    ))
}

/// CPE outages in your part of the tree, newest first (filter by site, reseller,
/// subscriber, or open/ended).
#[utoipa::path(get, path = "/api/v1/wan/outages", tag = "wan", params(WanOutageFilter),
    responses((status = 200, body = Page<WanOutage>), (status = 403, body = ErrorBody)))]
async fn list_wan_outages(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<WanOutageFilter>,
) -> Result<Json<Page<WanOutage>>> {
    actor.require(Permission::ViewCustomers)?;
    Ok(Json(
        st.list_page(&actor, f, wan::list_outages, |o| o.id).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Report on this reseller and those below it; default: your whole part of the tree.
    pub tenant_id: Option<i64>,
    /// RFC 3339; default: 24 hours before `until`.
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<QueryTime>,
    /// RFC 3339; default: now.
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<QueryTime>,
}

/// The outage report: CPE down now, outages, and time down within the window, per site
/// and per reseller.
#[utoipa::path(get, path = "/api/v1/wan/report", tag = "wan", params(ReportQuery),
    responses((status = 200, body = OutageReport), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn wan_report(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Json<OutageReport>> {
    actor.require(Permission::ViewReports)?;
    let until = q.until.map_or_else(|| crate::db::now() + 1, |t| t.0);
    let since = q.since.map_or(until - 86_400, |t| t.0);
    let report = st.read_scoped(&actor, move |c, scope| match q.tenant_id {
        Some(id) => {
            let (_, over) = tenant::rows_scope(c, scope, id)?;
            wan::report(c, &over, since, until)
        }
        None => wan::report(c, scope, since, until),
    });
    Ok(Json(report.await?))
}

/// One subscriber's WAN checks: each probe's state and its latest outages.
#[utoipa::path(get, path = "/api/v1/subscribers/{id}/wan", tag = "wan", params(("id" = i64, Path)),
    responses((status = 200, body = SubscriberWan), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn subscriber_wan(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<SubscriberWan>> {
    actor.require(Permission::ViewCustomers)?;
    let read = st.read_scoped(&actor, move |c, s| {
        wan::of_subscriber(c, subscriber::get_visible(c, s, id)?.sub.id)
    });
    Ok(Json(read.await?))
}
