//! Plans, rate cards, balances, renewals, payments, the ledger, statements and the
//! renewals/revenue summary.
//!
//! Every call that moves money requires an `Idempotency-Key` header: a retry with the
//! same key (and the same request) gets the first answer and charges nothing again; the
//! same key with a different request is a 409.

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, AppState, ErrorBody, Page, page, paging};
use crate::billing::{
    self, AdjustmentKind, By, PaymentMethod, PaymentResult, RenewResult, Transfer,
};
use crate::db::audit::{self, Entry, Who};
use crate::db::ledger::{self, LedgerEntry, LedgerFilter, PeriodSummary};
use crate::db::plan::{self, NewPlan, Plan, PlanFilter, PlanPatch, RateCardChange, RateCardEntry};
use crate::db::subscriber::{self, parse_time};
use crate::db::tenant;
use crate::error::{ApiError, ApiResult};
use crate::money::decimal_str;
use crate::scope::{Actor, Permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plans, create_plan))
        .routes(routes!(get_plan, update_plan))
        .routes(routes!(get_rate_card, change_rate_card))
        .routes(routes!(add_balance))
        .routes(routes!(adjust_balance))
        .routes(routes!(statement))
        .routes(routes!(renew))
        .routes(routes!(record_payment))
        .routes(routes!(list_ledger))
        .routes(routes!(summary))
}

/// A money call: its parsed body, its Idempotency-Key, and a hash of the request so
/// a reused key with a different request can be told apart.
pub struct MoneyCall<T> {
    pub key: String,
    pub hash: String,
    pub body: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for MoneyCall<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let key = req
            .headers()
            .get("idempotency-key")
            .ok_or_else(|| {
                ApiError::bad_request(
                    "missing_idempotency_key",
                    "money calls need an Idempotency-Key header (a unique string per operation, reused on retries)",
                )
            })?
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| (1..=200).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| ApiError::bad_request("bad_idempotency_key", "Idempotency-Key must be 1 to 200 printable characters"))?
            .to_string();
        let target = format!("{} {}", req.method(), req.uri().path());
        let ApiJson(value) = ApiJson::<serde_json::Value>::from_request(req, state).await?;
        // serde_json's maps are ordered by key, so equal bodies hash equally.
        let hash = hex::encode(crate::crypto::sha256(
            format!("{target}\n{value}").as_bytes(),
        ));
        let body = serde_json::from_value(value)
            .map_err(|e| ApiError::unprocessable("invalid_field", e.to_string()))?;
        Ok(MoneyCall { key, hash, body })
    }
}

/// Runs a money operation once per (user, key) in one write transaction; replays
/// answer the stored response with `Idempotent-Replayed: true`.
async fn once<R, F>(
    st: &AppState,
    actor: &Actor,
    key: String,
    hash: String,
    status: StatusCode,
    op: F,
) -> ApiResult<Response>
where
    R: Serialize,
    F: FnOnce(&rusqlite::Transaction<'_>, &str) -> ApiResult<R> + Send + 'static,
{
    let user = actor.user_id;
    let (status, body, replayed) = st
        .db
        .write(move |tx| {
            if let Some(prev) = ledger::remembered(tx, user, &key)? {
                if prev.request_hash != hash {
                    return Err(ApiError::conflict(
                        "idempotency_key_reused",
                        "this Idempotency-Key was already used for a different request; use a new key",
                    ));
                }
                return Ok((prev.status, prev.response, true));
            }
            let result = op(tx, &key)?;
            let body = serde_json::to_string(&result).expect("responses serialize");
            ledger::remember(tx, user, &key, &hash, status.as_u16(), &body)?;
            Ok((status.as_u16(), body, false))
        })
        .await?;
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

fn by<'a>(actor: &Actor, who: &'a Who, key: &'a str) -> By<'a> {
    By {
        who,
        user_id: Some(actor.user_id),
        scope: actor.scope(),
        idempotency_key: Some(key),
    }
}

/// Plans you sell (yours and your descendants') and the plans on your own rate card,
/// with what you pay for them.
#[utoipa::path(get, path = "/api/v1/plans", tag = "plans", params(PlanFilter),
    responses((status = 200, body = Page<Plan>), (status = 403, body = ErrorBody)))]
async fn list_plans(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<PlanFilter>,
) -> ApiResult<Json<Page<Plan>>> {
    actor.require_any(&[Permission::ViewCustomers, Permission::ManagePlans])?;
    let (after, limit) = paging(f.cursor.as_deref(), f.limit)?;
    let scope = actor.scope();
    let rows = st
        .db
        .read(move |c| plan::list(c, &scope, &f, after, limit + 1))
        .await?;
    Ok(Json(page(
        rows.iter().map(|p| p.view(&st.currency)).collect(),
        limit,
        |p| p.id,
    )))
}

/// Create a plan. The operator's plans stand alone; a reseller's plan derives from a
/// plan on its rate card (`parent_plan_id`), at speeds up to that plan's.
#[utoipa::path(post, path = "/api/v1/plans", tag = "plans", request_body = NewPlan,
    responses((status = 201, body = Plan), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn create_plan(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(input): ApiJson<NewPlan>,
) -> ApiResult<(StatusCode, Json<Plan>)> {
    actor.require(Permission::ManagePlans)?;
    let cur = st.currency.clone();
    let plan = st
        .db
        .write(move |tx| {
            let owner = tenant::assignable(tx, &actor, input.tenant_id, "plan.create")?;
            let p = plan::create(tx, &owner, &input, &cur)?.view(&cur);
            audit::record(
                tx,
                &Entry::new(&Who::from(&actor), owner.id, "plan.create", "plan", p.id).after(&p),
            )?;
            Ok(p)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(plan)))
}

/// One plan you sell or that is on your rate card.
#[utoipa::path(get, path = "/api/v1/plans/{id}", tag = "plans", params(("id" = i64, Path)),
    responses((status = 200, body = Plan), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_plan(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Plan>> {
    actor.require_any(&[Permission::ViewCustomers, Permission::ManagePlans])?;
    let scope = actor.scope();
    let row = st
        .db
        .read(move |c| plan::get_visible(c, &scope, id))
        .await?;
    Ok(Json(row.view(&st.currency)))
}

/// Change one of your (or your descendants') plans: name, price, speeds, status.
#[utoipa::path(patch, path = "/api/v1/plans/{id}", tag = "plans", params(("id" = i64, Path)), request_body = PlanPatch,
    responses((status = 200, body = Plan), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn update_plan(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(p): ApiJson<PlanPatch>,
) -> ApiResult<Json<Plan>> {
    actor.require(Permission::ManagePlans)?;
    let cur = st.currency.clone();
    let plan = st
        .db
        .write(move |tx| {
            let before = plan::get_owned(tx, &actor.scope(), id)?;
            let after = plan::update(tx, &before, &p, &cur)?;
            audit::record(
                tx,
                &Entry::new(
                    &Who::from(&actor),
                    after.tenant_id,
                    "plan.update",
                    "plan",
                    id,
                )
                .before(&before.view(&cur))
                .after(&after.view(&cur)),
            )?;
            Ok(after.view(&cur))
        })
        .await?;
    Ok(Json(plan))
}

/// A reseller's rate card: the plans assigned to it and what it pays for each. You see
/// your own card and your descendants' cards, never your parent's.
#[utoipa::path(get, path = "/api/v1/resellers/{id}/rate-card", tag = "plans", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<RateCardEntry>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_rate_card(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Vec<RateCardEntry>>> {
    actor.require_any(&[Permission::ManageResellers, Permission::ManagePlans])?;
    let scope = actor.scope();
    let rows = st
        .db
        .read(move |c| {
            let t = tenant::get_visible(c, &scope, id)?;
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
    responses((status = 200, body = RateCardEntry), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn change_rate_card(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(c): ApiJson<RateCardChange>,
) -> ApiResult<Json<RateCardEntry>> {
    actor.require(Permission::ManageResellers)?;
    let cur = st.currency.clone();
    let entry = st
        .db
        .write(move |tx| {
            let child = tenant::get_managed(tx, &actor.scope(), id)?;
            let (row, action) = match (c.remove, c.wholesale_price) {
                (true, None) => (plan::remove_card(tx, &child, c.plan_id)?, "rate_card.remove"),
                (false, Some(price)) => {
                    let minor = cur.to_minor("wholesale_price", price)?;
                    (plan::set_card(tx, &child, c.plan_id, minor)?, "rate_card.set")
                }
                _ => return Err(ApiError::invalid("give wholesale_price to assign a plan, or remove: true (alone) to take it off")),
            };
            let entry = RateCardEntry { wholesale_price: cur.from_minor(row.wholesale.unwrap_or(0)), plan: row.view(&cur) };
            audit::record(tx, &Entry::new(&Who::from(&actor), child.id, action, "reseller", child.id).after(&entry))?;
            Ok(entry)
        })
        .await?;
    Ok(Json(entry))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddBalance {
    /// A positive decimal string.
    #[serde(with = "decimal_str")]
    #[schema(value_type = String, example = "100.00")]
    pub amount: Decimal,
    pub note: Option<String>,
}

fn note(field: &str, s: Option<&str>, required: bool) -> ApiResult<Option<String>> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) if s.chars().count() > 500 => Err(ApiError::invalid(format!(
            "{field} must be at most 500 characters"
        ))),
        Some(s) => Ok(Some(s.to_string())),
        None if required => Err(ApiError::invalid(format!("{field} is required"))),
        None => Ok(None),
    }
}

/// Credit a direct child's balance. The operator creates money; a reseller transfers
/// its own, within its own credit limit. Needs an `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/resellers/{id}/balance", tag = "balances", params(("id" = i64, Path),
    ("Idempotency-Key" = String, Header, description = "unique per operation; reuse it to retry")), request_body = AddBalance,
    responses((status = 200, body = Transfer), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add_balance(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    call: MoneyCall<AddBalance>,
) -> ApiResult<Response> {
    actor.require(Permission::AddBalance)?;
    let cur = st.currency.clone();
    let amount = cur.positive("amount", call.body.amount)?;
    let reason = note("note", call.body.note.as_deref(), false)?;
    let a = actor.clone();
    once(
        &st,
        &actor,
        call.key,
        call.hash,
        StatusCode::OK,
        move |tx, key| {
            let child = tenant::get_managed(tx, &a.scope(), id)?;
            let who = Who::from(&a);
            billing::add_balance(
                tx,
                &by(&a, &who, key),
                &child,
                amount,
                AdjustmentKind::Adjustment,
                reason.as_deref(),
                &cur,
            )
        },
    )
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Adjustment {
    pub kind: AdjustmentKind,
    /// Refund: positive. Adjustment: signed (negative lowers the balance).
    #[serde(with = "decimal_str")]
    #[schema(value_type = String, example = "-5.00")]
    pub amount: Decimal,
    /// Why: required, shown on statements.
    pub reason: String,
}

/// Refund (the parent gives balance back) or adjust (correct the child's balance up or
/// down) a direct child's balance, with a reason. Needs an `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/resellers/{id}/adjustments", tag = "balances", params(("id" = i64, Path),
    ("Idempotency-Key" = String, Header)), request_body = Adjustment,
    responses((status = 200, body = Transfer), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn adjust_balance(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    call: MoneyCall<Adjustment>,
) -> ApiResult<Response> {
    actor.require(Permission::AddBalance)?;
    let cur = st.currency.clone();
    let reason = note("reason", Some(&call.body.reason), true)?.expect("required");
    let kind = call.body.kind;
    let amount = match kind {
        AdjustmentKind::Refund => cur.positive("amount", call.body.amount)?,
        AdjustmentKind::Adjustment => {
            let m = cur.to_minor("amount", call.body.amount)?;
            if m == 0 {
                return Err(ApiError::invalid("amount must not be zero"));
            }
            m
        }
    };
    let a = actor.clone();
    once(
        &st,
        &actor,
        call.key,
        call.hash,
        StatusCode::OK,
        move |tx, key| {
            let child = tenant::get_managed(tx, &a.scope(), id)?;
            let who = Who::from(&a);
            let b = by(&a, &who, key);
            match kind {
                AdjustmentKind::Refund => {
                    billing::add_balance(tx, &b, &child, amount, kind, Some(&reason), &cur)
                }
                AdjustmentKind::Adjustment => {
                    billing::adjust(tx, &b, &child, amount, &reason, &cur)
                }
            }
        },
    )
    .await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The plan to renew on; defaults to the subscriber's current plan.
    pub plan_id: Option<i64>,
    /// How many validity periods (1..=36, default 1).
    pub periods: Option<i64>,
}

/// Renew a subscriber: its owner pays its cost (in cascade mode, the resellers above it
/// pay theirs too), expiry moves to max(now, expiry) + validity, and it becomes active.
/// Needs an `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/subscribers/{id}/renew", tag = "balances", params(("id" = i64, Path),
    ("Idempotency-Key" = String, Header)), request_body = RenewRequest,
    responses((status = 200, body = RenewResult), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn renew(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    call: MoneyCall<RenewRequest>,
) -> ApiResult<Response> {
    actor.require(Permission::RecordPayments)?;
    let cur = st.currency.clone();
    let a = actor.clone();
    once(
        &st,
        &actor,
        call.key,
        call.hash,
        StatusCode::OK,
        move |tx, key| {
            let sub = subscriber::get_visible(tx, &a.scope(), id)?;
            let who = Who::from(&a);
            billing::renew(
                tx,
                &by(&a, &who, key),
                &sub,
                call.body.plan_id,
                call.body.periods.unwrap_or(1),
                false,
                None,
                &cur,
            )
        },
    )
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    /// A positive decimal string.
    #[serde(with = "decimal_str")]
    #[schema(value_type = String, example = "25.00")]
    pub amount: Decimal,
    pub method: PaymentMethod,
    /// Receipt or transfer reference.
    pub reference: Option<String>,
    /// Renew the subscriber in the same operation.
    #[serde(default)]
    pub renew: bool,
    pub plan_id: Option<i64>,
    pub periods: Option<i64>,
}

/// Record money collected from a subscriber (into its owner's collections), optionally
/// renewing it in the same step. Needs an `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/subscribers/{id}/payments", tag = "balances", params(("id" = i64, Path),
    ("Idempotency-Key" = String, Header)), request_body = PaymentRequest,
    responses((status = 201, body = PaymentResult), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn record_payment(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    call: MoneyCall<PaymentRequest>,
) -> ApiResult<Response> {
    actor.require(Permission::RecordPayments)?;
    let cur = st.currency.clone();
    let amount = cur.positive("amount", call.body.amount)?;
    let reference = note("reference", call.body.reference.as_deref(), false)?;
    let b = call.body;
    if !b.renew && (b.plan_id.is_some() || b.periods.is_some()) {
        return Err(ApiError::invalid(
            "plan_id and periods apply only with renew: true",
        ));
    }
    let a = actor.clone();
    once(
        &st,
        &actor,
        call.key,
        call.hash,
        StatusCode::CREATED,
        move |tx, key| {
            let sub = subscriber::get_visible(tx, &a.scope(), id)?;
            let who = Who::from(&a);
            let renew = b.renew.then(|| (b.plan_id, b.periods.unwrap_or(1)));
            billing::record_payment(
                tx,
                &by(&a, &who, key),
                &sub,
                amount,
                b.method,
                reference.as_deref(),
                renew,
                &cur,
            )
        },
    )
    .await
}

fn bounds(f: &LedgerFilter) -> ApiResult<(Option<i64>, Option<i64>)> {
    Ok((
        f.since
            .as_deref()
            .map(|s| parse_time("since", s))
            .transpose()?,
        f.until
            .as_deref()
            .map(|s| parse_time("until", s))
            .transpose()?,
    ))
}

/// Ledger entries of your part of the tree, oldest first.
#[utoipa::path(get, path = "/api/v1/ledger", tag = "balances", params(LedgerFilter),
    responses((status = 200, body = Page<LedgerEntry>), (status = 403, body = ErrorBody)))]
async fn list_ledger(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<LedgerFilter>,
) -> ApiResult<Json<Page<LedgerEntry>>> {
    actor.require(Permission::ViewInvoices)?;
    let (after, limit) = paging(f.cursor.as_deref(), f.limit)?;
    let (since, until) = bounds(&f)?;
    let scope = actor.scope();
    let rows = st
        .db
        .read(move |c| ledger::list(c, &scope, &f, since, until, after, limit + 1))
        .await?;
    Ok(Json(page(
        rows.iter().map(|r| r.view(&st.currency)).collect(),
        limit,
        |e| e.id,
    )))
}

const CSV_MAX_ROWS: u32 = 100_000;

/// A reseller's statement: its ledger entries with filters, as JSON (paged) or as CSV
/// (`Accept: text/csv` or `format=csv`, up to 100000 rows).
#[utoipa::path(get, path = "/api/v1/resellers/{id}/statement", tag = "balances", params(("id" = i64, Path), LedgerFilter),
    responses((status = 200, body = Page<LedgerEntry>), (status = 200, content_type = "text/csv", description = "CSV statement"),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn statement(
    State(st): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(mut f): ApiQuery<LedgerFilter>,
) -> ApiResult<Response> {
    actor.require(Permission::ViewInvoices)?;
    let csv = match f.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_format",
                format!("format must be csv or json (got '{other}')"),
            ));
        }
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv")),
    };
    let (since, until) = bounds(&f)?;
    let (after, limit) = if csv {
        let limit = f.limit.unwrap_or(CSV_MAX_ROWS);
        if !(1..=CSV_MAX_ROWS).contains(&limit) {
            return Err(ApiError::bad_request(
                "bad_limit",
                format!("limit must be between 1 and {CSV_MAX_ROWS}"),
            ));
        }
        (paging(f.cursor.as_deref(), None)?.0, limit)
    } else {
        paging(f.cursor.as_deref(), f.limit)?
    };
    let scope = actor.scope();
    let rows = st
        .db
        .read(move |c| {
            let (t, over) = tenant::rows_scope(c, &scope, id)?;
            // The statement is the tenant's own account: its rows alone, not its
            // descendants'.
            f.tenant_id = Some(t.id);
            ledger::list(c, &over, &f, since, until, after, limit + 1)
        })
        .await?;
    let entries: Vec<LedgerEntry> = rows.iter().map(|r| r.view(&st.currency)).collect();
    if !csv {
        return Ok(Json(page(entries, limit, |e| e.id)).into_response());
    }
    let mut entries = entries;
    let truncated = entries.len() > limit as usize;
    entries.truncate(limit as usize);
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
    w.write_record(head).map_err(|e| ApiError::internal(&e))?;
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
        .map_err(|e| ApiError::internal(&e))?;
    }
    let body = w.into_inner().map_err(|e| ApiError::internal(e.error()))?;
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
    pub period: Option<String>,
    /// RFC 3339; default: 12 months (or 31 days) back.
    pub since: Option<String>,
    /// RFC 3339; default: now.
    pub until: Option<String>,
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
    responses((status = 200, body = Summary), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn summary(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(q): ApiQuery<SummaryQuery>,
) -> ApiResult<Json<Summary>> {
    actor.require(Permission::ViewReports)?;
    let monthly = match q.period.as_deref() {
        None | Some("month") => true,
        Some("day") => false,
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_period",
                format!("period must be month or day (got '{other}')"),
            ));
        }
    };
    let now = crate::db::now();
    let until = q
        .until
        .as_deref()
        .map(|s| parse_time("until", s))
        .transpose()?
        .unwrap_or(now + 1);
    let since = q
        .since
        .as_deref()
        .map(|s| parse_time("since", s))
        .transpose()?
        .unwrap_or(until - if monthly { 366 } else { 31 } * 86_400);
    let scope = actor.scope();
    let tenant_id = q.tenant_id.unwrap_or(actor.tenant_id);
    let cur = st.currency.clone();
    let periods = st
        .db
        .read(move |c| {
            let (_, over) = tenant::rows_scope(c, &scope, tenant_id)?;
            ledger::summary(c, &over, monthly, since, until, &cur)
        })
        .await?;
    Ok(Json(Summary {
        tenant_id,
        currency: st.currency.code.clone(),
        periods,
    }))
}
