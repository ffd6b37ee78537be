//! Plans and rate cards: what each reseller sells and what it pays its parent.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, AppState, Page};
use crate::db::plan::{self, NewPlan, Plan, PlanFilter, PlanPatch, RateCardChange, RateCardEntry};
use crate::db::tenant;
use crate::error::Result;
use crate::ops::plans as ops;
use crate::scope::{Actor, Permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plans, create_plan))
        .routes(routes!(get_plan, update_plan))
        .routes(routes!(get_rate_card, change_rate_card))
}

/// Plans you sell (yours and your descendants') and the plans on your own rate card,
/// with what you pay for them.
#[utoipa::path(get, path = "/api/v1/plans", tag = "plans", params(PlanFilter),
    responses((status = 200, body = Page<Plan>)))]
async fn list_plans(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<PlanFilter>,
) -> Result<Json<Page<Plan>>> {
    actor.require_any(&[Permission::ViewCustomers, Permission::ManagePlans])?;
    let page = st.list_page(&actor, f, plan::list, |p| p.id).await?;
    Ok(Json(page.map(|p| p.view(&st.currency))))
}

/// Create a plan. The operator's plans stand alone; a reseller's plan derives from a
/// plan on its rate card (`parent_plan_id`), at speeds up to that plan's.
#[utoipa::path(post, path = "/api/v1/plans", tag = "plans", request_body = NewPlan,
    responses((status = 201, body = Plan)))]
async fn create_plan(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(input): ApiJson<NewPlan>,
) -> Result<(StatusCode, Json<Plan>)> {
    actor.require(Permission::ManagePlans)?;
    let cur = st.currency.clone();
    let plan = st
        .db
        .write(move |tx| ops::create_plan(tx, &actor, &input, &cur))
        .await?;
    Ok((StatusCode::CREATED, Json(plan)))
}

/// One plan you sell or that is on your rate card.
#[utoipa::path(get, path = "/api/v1/plans/{id}", tag = "plans", params(("id" = i64, Path)),
    responses((status = 200, body = Plan)))]
async fn get_plan(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Plan>> {
    actor.require_any(&[Permission::ViewCustomers, Permission::ManagePlans])?;
    let plan = st.read_scoped(&actor, move |c, s| plan::get_visible(c, s, id));
    Ok(Json(plan.await?.view(&st.currency)))
}

/// Change one of your (or your descendants') plans: name, price, speeds, status.
#[utoipa::path(patch, path = "/api/v1/plans/{id}", tag = "plans", params(("id" = i64, Path)), request_body = PlanPatch,
    responses((status = 200, body = Plan)))]
async fn update_plan(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(p): ApiJson<PlanPatch>,
) -> Result<Json<Plan>> {
    actor.require(Permission::ManagePlans)?;
    let cur = st.currency.clone();
    let plan = st
        .db
        .write(move |tx| ops::update_plan(tx, &actor, id, &p, &cur))
        .await?;
    Ok(Json(plan))
}

/// A reseller's rate card: the plans assigned to it and what it pays for each. You see
/// your own card and your descendants' cards, never your parent's.
#[utoipa::path(get, path = "/api/v1/resellers/{id}/rate-card", tag = "plans", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<RateCardEntry>)))]
async fn get_rate_card(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Vec<RateCardEntry>>> {
    actor.require_any(&[Permission::ManageResellers, Permission::ManagePlans])?;
    let rows = st
        .read_scoped(&actor, move |c, scope| {
            let t = tenant::get_visible(c, scope, id)?;
            plan::card(c, t.id)
        })
        .await?;
    Ok(Json(
        rows.iter()
            .map(|p| RateCardEntry {
                wholesale_price: st.currency.from_minor(p.wholesale.unwrap_or(0)),
                plan: p.view(&st.currency),
            })
            .collect(),
    ))
}

/// Assign one of its parent's plans to a reseller at a wholesale price, change that
/// price, or take the plan off its card (`remove: true`).
#[utoipa::path(post, path = "/api/v1/resellers/{id}/rate-card", tag = "plans", params(("id" = i64, Path)),
    request_body = RateCardChange,
    responses((status = 200, body = RateCardEntry)))]
async fn change_rate_card(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(c): ApiJson<RateCardChange>,
) -> Result<Json<RateCardEntry>> {
    actor.require(Permission::ManageResellers)?;
    let cur = st.currency.clone();
    let entry = st
        .db
        .write(move |tx| ops::change_rate_card(tx, &actor, id, &c, &cur))
        .await?;
    Ok(Json(entry))
}
