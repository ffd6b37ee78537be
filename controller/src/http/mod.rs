//! The JSON API under `/api/v1`. Each module exposes `router()`; they are merged here.
//! Routes are declared with `utoipa_axum::routes!`, so the router and the OpenAPI
//! document come from one declaration and cannot drift apart.

pub mod agent_api;
pub mod audit;
pub mod auth;
pub mod balances;
mod error;
pub mod ledger;
pub mod plans;
pub mod resellers;
pub mod sites;
pub mod subscribers;
pub mod users;
pub mod wan;

use std::sync::Arc;

use axum::extract::{
    FromRequest, FromRequestParts, rejection::JsonRejection, rejection::PathRejection,
    rejection::QueryRejection,
};
use axum::response::IntoResponse;
use axum::{Extension, Router};
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::crypto::{PasswordHasherCfg, SecretBox};
use crate::db::Db;
use crate::db::Paged;
pub use crate::db::{Page, Paging};
use crate::error::{Error, Result};
use crate::scope::{Actor, Scope};

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub secrets: SecretBox,
    pub hasher: PasswordHasherCfg,
    pub config: Arc<Config>,
    /// Bounds concurrent password checks (see [`crate::crypto::PasswordGate`]).
    pub password_checks: Arc<crate::crypto::PasswordGate>,
    pub currency: crate::money::Currency,
}

impl AppState {
    pub fn new(db: Db, secrets: SecretBox, config: Config) -> anyhow::Result<AppState> {
        let hasher =
            PasswordHasherCfg::new(config.auth.argon2_memory_kib, config.auth.argon2_iterations)?;
        Ok(AppState {
            db,
            secrets,
            hasher,
            currency: config.currency(),
            password_checks: Arc::new(crate::crypto::PasswordGate::new(
                config.auth.max_concurrent_password_checks,
                config.auth.max_queued_password_checks,
            )),
            config: Arc::new(config),
        })
    }
}

impl AppState {
    /// Runs `read` on a read connection over the actor's part of the tree: how a handler
    /// reads anything in someone's scope.
    pub async fn read_scoped<T: Send + 'static>(
        &self,
        actor: &Actor,
        read: impl FnOnce(&rusqlite::Connection, &Scope) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let scope = actor.scope();
        self.db.read(move |c| read(c, &scope)).await
    }

    /// The page a list query asks for, of the rows `list` reads in the actor's scope
    /// (`id` gives a row's cursor).
    pub async fn list_page<F, R>(
        &self,
        actor: &Actor,
        f: F,
        list: impl FnOnce(&rusqlite::Connection, &Scope, &F, Paging) -> Result<Vec<R>> + Send + 'static,
        id: impl Fn(&R) -> i64,
    ) -> Result<Page<R>>
    where
        F: Paged + Send + 'static,
        R: Send + 'static,
    {
        let paging = f.paging()?;
        let rows = self
            .read_scoped(actor, move |c, scope| list(c, scope, &f, paging))
            .await?;
        Ok(paging.page(rows, id))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Outpost controller API", description = "Reseller tree, staff, subscribers, sites, NAS and audit log. \
        Every error answers `{\"error\":{\"code\":…,\"message\":…}}`. Rows outside your part of the tree answer 404; \
        functions you are not granted answer 403."),
    modifiers(&SecurityAddon),
    security(("session" = []), ("bearer" = [])),
    components(schemas(ErrorBody, ErrorDetail)),
)]
struct ApiDoc;

struct SecurityAddon;
impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::SESSION_COOKIE))),
        );
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The error body every failure answers with.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// Every API route, with its OpenAPI description.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::router())
        .merge(resellers::router())
        .merge(users::router())
        .merge(subscribers::router())
        .merge(sites::router())
        .merge(audit::router())
        .merge(plans::router())
        .merge(balances::router())
        .merge(ledger::router())
        .merge(agent_api::router())
        .merge(wan::router())
        .routes(routes!(openapi_json))
}

/// The router and its OpenAPI document.
pub fn app_with_spec(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, spec) = api_router().split_for_parts();
    let json = Arc::new(spec.to_pretty_json().expect("OpenAPI document serializes"));
    let router = router
        .layer(Extension(OpenApiJson(json)))
        .fallback(|| async { Error::not_found("route") })
        .method_not_allowed_fallback(|| async {
            Error::new(
                crate::error::ErrorKind::MethodNotAllowed,
                "method_not_allowed",
                "this path does not answer that method",
            )
        })
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state);
    (router, spec)
}

#[derive(Clone)]
struct OpenApiJson(Arc<String>);

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi_json(Extension(OpenApiJson(json)): Extension<OpenApiJson>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json.as_ref().clone(),
    )
}

/// JSON body extractor whose rejections use the API's error body.
///
/// A number with a zero fraction (`24.0`) is read as the integer it is: JSON Schema
/// (and so the OpenAPI document) counts it as an integer, and clients that write every
/// number as a float should not be refused for it. Money is never a JSON number, so
/// this changes no amount.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = Error;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self> {
        // Content type, syntax and size are judged by axum as before.
        let axum::Json(mut body) =
            axum::Json::<serde_json::Value>::from_request(req, state).await?;
        whole_floats_as_integers(&mut body);
        serde_path_to_error::deserialize(body)
            .map(ApiJson)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                Error::unprocessable(
                    "invalid_field",
                    if path == "." {
                        inner.to_string()
                    } else {
                        format!("{path}: {inner}")
                    },
                )
            })
    }
}

fn whole_floats_as_integers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(whole_floats_as_integers),
        _ => {}
    }
}

impl From<JsonRejection> for Error {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonSyntaxError(e) => Error::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: {}", inner(&e)),
            ),
            JsonRejection::JsonDataError(e) => Error::unprocessable("invalid_field", inner(&e)),
            JsonRejection::MissingJsonContentType(_) => Error::new(
                crate::error::ErrorKind::UnsupportedMediaType,
                "unsupported_media_type",
                "send the body as JSON with 'Content-Type: application/json'",
            ),
            other if other.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => Error::new(
                crate::error::ErrorKind::TooLarge,
                "body_too_large",
                "the body is larger than the server accepts",
            ),
            other => Error::bad_request("bad_body", other.body_text()),
        }
    }
}

/// Query-string extractor whose rejections use the API's error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub struct ApiQuery<T>(pub T);

impl From<QueryRejection> for Error {
    fn from(r: QueryRejection) -> Self {
        Error::bad_request(
            "bad_query",
            format!("the query string is invalid: {}", inner(&r)),
        )
    }
}

/// Path extractor whose rejections use the API's error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct ApiPath<T>(pub T);

impl From<PathRejection> for Error {
    fn from(r: PathRejection) -> Self {
        Error::bad_request("bad_path", format!("the URL is invalid: {}", inner(&r)))
    }
}

/// The innermost message of a rejection (serde's, which names the field and position).
fn inner(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}
