//! Balances, renewals and payments: every call that moves money.
//!
//! Each needs an `Idempotency-Key` header: a retry with the same key (and the same
//! request) gets the first answer and charges nothing again; the same key with a
//! different request is a 409.

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, AppState};
use crate::billing::{
    self, AdjustmentKind, By, PaymentMethod, PaymentResult, RenewResult, Transfer,
};
use crate::db::{subscriber, tenant};
use crate::error::{Error, Result};
use crate::money::{NonZeroAmount, PositiveAmount};
use crate::scope::{Actor, Permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add_balance))
        .routes(routes!(adjust_balance))
        .routes(routes!(renew))
        .routes(routes!(record_payment))
}

/// A money call: its parsed body and what makes it idempotent.
/// The `Idempotency-Key` header every money call carries, as the document declares it
/// (read by [`MoneyCall`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Declares the header; MoneyCall reads it.
pub struct IdempotencyKey {
    /// Unique per operation (1 to 200 printable ASCII characters); reuse it to retry
    #[param(rename = "Idempotency-Key", pattern = r"^[!-~]{1,200}$")]
    key: String,
}

pub struct MoneyCall<T> {
    pub once: Once,
    pub body: T,
}

/// A money call's Idempotency-Key, and a hash of the request so a reused key with a
/// different request can be told apart.
pub struct Once {
    pub key: String,
    pub hash: String,
}

impl<T: DeserializeOwned> FromRequest<AppState> for MoneyCall<T> {
    type Rejection = Error;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        let key = req
            .headers()
            .get("idempotency-key")
            .ok_or_else(|| {
                Error::bad_request(
                    "missing_idempotency_key",
                    "money calls need an Idempotency-Key header (a unique string per operation, reused on retries)",
                )
            })?
            .to_str()
            .ok()
            .filter(|k| (1..=200).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| Error::bad_request("bad_idempotency_key", "Idempotency-Key must be 1 to 200 printable characters"))?
            .to_string();
        let target = format!("{} {}", req.method(), req.uri().path());
        let ApiJson(value) = ApiJson::<serde_json::Value>::from_request(req, state).await?;
        // serde_json's maps are ordered by key, so equal bodies hash equally.
        let hash = hex::encode(crate::crypto::sha256(
            format!("{target}\n{value}").as_bytes(),
        ));
        let body = super::from_json_value(value)?;
        Ok(MoneyCall {
            once: Once { key, hash },
            body,
        })
    }
}

/// Runs a money operation once per (user, key) in one write transaction; replays
/// answer the stored response with `Idempotent-Replayed: true`.
async fn once<R, F>(
    st: &AppState,
    actor: &Actor,
    Once { key, hash }: Once,
    status: StatusCode,
    op: F,
) -> Result<Response>
where
    R: Serialize,
    F: FnOnce(&rusqlite::Transaction<'_>, &By<'_>) -> Result<R> + Send + 'static,
{
    let reused = "this Idempotency-Key was already used for a different request; use a new key";
    let billing::OnceAnswer {
        status,
        body,
        replayed,
    } = st
        .once_per_key(actor, key, hash, status.as_u16(), reused, op)
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddBalance {
    pub amount: PositiveAmount,
    /// Shown on statements, up to 500 characters.
    #[schema(max_length = 500, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub note: Option<String>,
}

fn note(field: &str, s: Option<&str>, required: bool) -> Result<Option<String>> {
    if s.is_some_and(|s| s.chars().count() > 500 || s.chars().any(char::is_control)) {
        return Err(Error::invalid(format!(
            "{field} must be at most 500 characters without control characters"
        )));
    }
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) if s.chars().count() > 500 => Err(Error::invalid(format!(
            "{field} must be at most 500 characters"
        ))),
        Some(s) => Ok(Some(s.to_string())),
        None if required => Err(Error::invalid(format!("{field} is required"))),
        None => Ok(None),
    }
}

/// Credit a direct child's balance. The operator creates money; a reseller transfers
/// its own, within its own credit limit. Needs an `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/resellers/{id}/balance", tag = "balances", params(("id" = i64, Path),
    IdempotencyKey), request_body = AddBalance,
    responses((status = 200, body = Transfer)))]
async fn add_balance(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    call: MoneyCall<AddBalance>,
) -> Result<Response> {
    actor.require(Permission::AddBalance)?;
    let cur = st.currency.clone();
    let amount = cur.positive("amount", call.body.amount.0)?;
    let reason = note("note", call.body.note.as_deref(), false)?;
    once(&st, &actor, call.once, StatusCode::OK, move |tx, by| {
        let child = tenant::get_managed(tx, &by.scope, id)?;
        billing::add_balance(
            tx,
            by,
            &child,
            amount,
            AdjustmentKind::Adjustment,
            reason.as_deref(),
            &cur,
        )
    })
    .await
}

/// A refund or an adjustment; `kind` says which, and so what `amount` may be.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Adjustment {
    /// Give balance back (the parent pays it, like adding balance).
    Refund {
        amount: PositiveAmount,
        /// Why: required, shown on statements.
        #[schema(value_type = crate::wire::Reason)]
        reason: String,
    },
    /// Correct the child's balance up or down; the parent's balance does not move.
    Adjustment {
        /// Negative lowers the balance.
        amount: NonZeroAmount,
        /// Why: required, shown on statements.
        #[schema(value_type = crate::wire::Reason)]
        reason: String,
    },
}

/// Refund (the parent gives balance back) or adjust (correct the child's balance up or
/// down) a direct child's balance, with a reason. Needs an `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/resellers/{id}/adjustments", tag = "balances", params(("id" = i64, Path),
    IdempotencyKey), request_body = Adjustment,
    responses((status = 200, body = Transfer)))]
async fn adjust_balance(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    call: MoneyCall<Adjustment>,
) -> Result<Response> {
    actor.require(Permission::AddBalance)?;
    let cur = st.currency.clone();
    let (kind, amount, reason) = match &call.body {
        Adjustment::Refund { amount, reason } => (
            AdjustmentKind::Refund,
            cur.positive("amount", amount.0)?,
            reason,
        ),
        Adjustment::Adjustment { amount, reason } => (
            AdjustmentKind::Adjustment,
            cur.to_minor("amount", amount.0)?,
            reason,
        ),
    };
    let reason = note("reason", Some(reason), true)?.expect("required");
    once(&st, &actor, call.once, StatusCode::OK, move |tx, by| {
        let child = tenant::get_managed(tx, &by.scope, id)?;
        match kind {
            AdjustmentKind::Refund => {
                billing::add_balance(tx, by, &child, amount, kind, Some(&reason), &cur)
            }
            AdjustmentKind::Adjustment => billing::adjust(tx, by, &child, amount, &reason, &cur),
        }
    })
    .await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The plan to renew on; defaults to the subscriber's current plan.
    pub plan_id: Option<i64>,
    /// How many validity periods (1..=36, default 1).
    #[schema(minimum = 1, maximum = 36)]
    pub periods: Option<i64>,
}

/// Renew a subscriber: its owner pays its cost (in cascade mode, the resellers above it
/// pay theirs too), expiry moves to max(now, expiry) + validity, and it becomes active.
/// Needs an `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/subscribers/{id}/renew", tag = "balances", params(("id" = i64, Path),
    IdempotencyKey), request_body = RenewRequest,
    responses((status = 200, body = RenewResult)))]
async fn renew(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    call: MoneyCall<RenewRequest>,
) -> Result<Response> {
    actor.require(Permission::RecordPayments)?;
    let cur = st.currency.clone();
    once(&st, &actor, call.once, StatusCode::OK, move |tx, by| {
        let sub = subscriber::get_visible(tx, &by.scope, id)?;
        billing::renew(
            tx,
            by,
            &sub,
            call.body.plan_id,
            call.body.periods.unwrap_or(1),
            false,
            None,
            &cur,
        )
    })
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    pub amount: PositiveAmount,
    pub method: PaymentMethod,
    /// Receipt or transfer reference, up to 500 characters.
    #[schema(max_length = 500, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub reference: Option<String>,
    /// Renew the subscriber in the same operation.
    #[serde(default)]
    pub renew: bool,
    pub plan_id: Option<i64>,
    #[schema(minimum = 1, maximum = 36)]
    pub periods: Option<i64>,
}

impl PaymentRequest {
    /// Body rules across fields, for the OpenAPI document (see `http::cross_field_rules`):
    /// `plan_id` and `periods` only with `renew: true`.
    pub const SCHEMA_RULES: &str = r#"[
        {"if": {"properties": {"renew": {"const": true}}, "required": ["renew"]},
         "else": {"properties": {"plan_id": {"type": "null"}, "periods": {"type": "null"}}}}
    ]"#;
}

/// Record money collected from a subscriber (into its owner's collections), optionally
/// renewing it in the same step. Needs an `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/subscribers/{id}/payments", tag = "balances", params(("id" = i64, Path),
    IdempotencyKey), request_body = PaymentRequest,
    responses((status = 201, body = PaymentResult)))]
async fn record_payment(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    call: MoneyCall<PaymentRequest>,
) -> Result<Response> {
    actor.require(Permission::RecordPayments)?;
    let cur = st.currency.clone();
    let amount = cur.positive("amount", call.body.amount.0)?;
    let reference = note("reference", call.body.reference.as_deref(), false)?;
    let b = call.body;
    if !b.renew && (b.plan_id.is_some() || b.periods.is_some()) {
        return Err(Error::invalid(
            "plan_id and periods apply only with renew: true",
        ));
    }
    once(
        &st,
        &actor,
        call.once,
        StatusCode::CREATED,
        move |tx, by| {
            let sub = subscriber::get_visible(tx, &by.scope, id)?;
            let renew = b.renew.then(|| (b.plan_id, b.periods.unwrap_or(1)));
            billing::record_payment(
                tx,
                by,
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
