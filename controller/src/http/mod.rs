//! The JSON API under `/api/v1`. Each module exposes `router()`; they are merged here.
//! Routes are declared with `utoipa_axum::routes!`, so the router and the OpenAPI
//! document come from one declaration and cannot drift apart.

pub mod agent_api;
pub mod audit;
pub mod auth;
pub mod balances;
mod error;
pub mod health;
pub mod ledger;
pub mod messaging;
pub mod notices;
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
    /// The WireGuard management plane, when configured.
    pub tunnel: Option<Arc<crate::tunnel::Tunnel>>,
    /// Readiness and request figures (`/readyz`, `/metrics`).
    pub health: Arc<health::Health>,
}

impl AppState {
    pub fn new(db: Db, secrets: SecretBox, config: Config) -> anyhow::Result<AppState> {
        let hasher =
            PasswordHasherCfg::new(config.auth.argon2_memory_kib, config.auth.argon2_iterations)?;
        let tunnel = match &config.tunnel {
            Some(t) => Some(Arc::new(crate::tunnel::Tunnel::load(t, &config.data_dir)?)),
            None => None,
        };
        Ok(AppState {
            db,
            secrets,
            hasher,
            tunnel,
            health: Arc::default(),
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

    /// Runs `read` on a read connection for one row that must exist: none is the
    /// not-found error naming `what`.
    pub async fn read_one<T: Send + 'static>(
        &self,
        what: &'static str,
        read: impl FnOnce(&rusqlite::Connection) -> Result<Option<T>> + Send + 'static,
    ) -> Result<T> {
        self.db
            .read(read)
            .await?
            .ok_or_else(|| Error::not_found(what))
    }

    /// Runs the money operation `op` once per (actor's user, `key`) in one write
    /// transaction ([`crate::billing::once_per_key`]): the API's Idempotency-Key and the
    /// panel's form key alike; `reused` is the conflict's message for a key reused with
    /// another request.
    pub async fn once_per_key<R: Serialize>(
        &self,
        actor: &Actor,
        key: String,
        hash: String,
        status: u16,
        reused: &'static str,
        op: impl FnOnce(&rusqlite::Transaction<'_>, &crate::billing::By<'_>) -> Result<R>
        + Send
        + 'static,
    ) -> Result<crate::billing::OnceAnswer> {
        let actor = actor.clone();
        self.db
            .write(move |tx| {
                crate::billing::once_per_key(tx, &actor, &key, &hash, status, reused, op)
            })
            .await
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
        // Agents' own credential (`opa_…`, from enrollment), on the /agent/v1 routes.
        c.add_security_scheme(
            "agent",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An agent's credential from POST /agent/v1/enroll"))
                    .build(),
            ),
        );
    }
}

/// Documents, on every operation, the answers that come from the shared machinery rather
/// than from the handler: the credential gate ([`Actor`]), and the body, path and query
/// extractors ([`ApiJson`], [`ApiPath`], [`ApiQuery`], paging). It runs on the finished
/// document, so a new route gets them without listing them, and the per-route lists hold
/// only what the handler itself decides. A status a route already lists keeps its own
/// description.
struct SharedAnswers;
impl Modify for SharedAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::security::SecurityRequirement;
        let secured_by_default = openapi
            .security
            .as_ref()
            .is_some_and(|reqs| reqs.iter().any(|r| *r != SecurityRequirement::default()));
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                let secured = match &op.security {
                    None => secured_by_default,
                    Some(reqs) => reqs.iter().any(|r| *r != SecurityRequirement::default()),
                };
                let params = op.parameters.as_deref().unwrap_or_default();
                let has = |place: ParameterIn| params.iter().any(|p| p.parameter_in == place);
                let (in_path, in_query) = (has(ParameterIn::Path), has(ParameterIn::Query));
                let with_body = op.request_body.is_some();
                let mut answers: Vec<(&str, &str)> = Vec::new();
                if secured {
                    answers.push(("401", "No credential, or one that is unknown, ended or expired (`unauthenticated`)"));
                    answers.push(("403", "The account is disabled, the address is not allowed, or the function is not granted"));
                }
                if in_path || in_query || with_body {
                    answers.push(("400", "A path, query or body that cannot be read (`bad_path`, `bad_query`, `bad_cursor`, `bad_limit`, `malformed_json`, …)"));
                }
                if secured && (in_path || with_body) {
                    answers.push(("404", "No such row in your part of the tree, or a row the body names is not in it (`not_found`, `site_unavailable`, `plan_unavailable`, …)"));
                }
                if with_body {
                    answers.push(("409", "The request conflicts with what is stored (`duplicate`, `rebrand_disabled`, `above_parent_plan`, …)"));
                    answers.push((
                        "413",
                        "The body is larger than the server accepts (`body_too_large`)",
                    ));
                    answers.push((
                        "415",
                        "The body is not sent as `application/json` (`unsupported_media_type`)",
                    ));
                    answers.push(("422", "A field has the wrong type or breaks a rule of its schema (`invalid_field`, `invalid`)"));
                }
                for (status, description) in answers {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}

/// Every request type here refuses unknown fields (`deny_unknown_fields`), and utoipa
/// says so for structs but not for the variants of a tagged enum (`Adjustment`): close
/// each object variant of a `oneOf` that leaves it open.
fn closed_variants(
    schemas: &mut std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    >,
) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{AdditionalProperties, Schema};
    for schema in schemas.values_mut() {
        let RefOr::T(Schema::OneOf(one_of)) = schema else {
            continue;
        };
        for item in &mut one_of.items {
            if let RefOr::T(Schema::Object(o)) = item
                && o.additional_properties.is_none()
                && !o.properties.is_empty()
            {
                o.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
}

/// Request bodies whose rules span fields ("this only with that"), which the derived
/// schemas cannot state, carry them as JSON Schema `if`/`then`/`else` under `allOf`. Each
/// type keeps its rules next to its definition (`SCHEMA_RULES`), beside the code that
/// enforces them; schemathesis in CI checks both sides agree.
fn cross_field_rules(
    schemas: &mut std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    >,
) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;
    let rules = [
        (
            "NewSubscriber",
            crate::db::subscriber::NewSubscriber::SCHEMA_RULES,
        ),
        (
            "BulkRequest",
            crate::db::subscriber::BulkRequest::SCHEMA_RULES,
        ),
        (
            "RateCardChange",
            crate::db::plan::RateCardChange::SCHEMA_RULES,
        ),
        ("NewPlan", crate::db::plan::NewPlan::SCHEMA_RULES),
        ("NewNotice", crate::db::notice::NewNotice::SCHEMA_RULES),
        ("NewUser", crate::db::user::NewUser::SCHEMA_RULES),
        ("PaymentRequest", balances::PaymentRequest::SCHEMA_RULES),
    ];
    for (name, json) in rules {
        let rules: serde_json::Value = serde_json::from_str(json).expect("rules are JSON");
        let Some(RefOr::T(Schema::Object(o))) = schemas.get_mut(name) else {
            panic!("{name} is not an object schema in the document");
        };
        o.extensions
            .get_or_insert_with(Default::default)
            .insert("allOf".to_string(), rules);
    }
}

/// A response that carries [`ErrorBody`].
fn error_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
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

/// Every API route, with its OpenAPI description. The agent's sync routes (state, ack,
/// events) are documented here too; with a tunnel they are served only by
/// [`agent_router`], on the tunnel address, and the public router leaves them out.
pub fn api_router() -> OpenApiRouter<AppState> {
    public_routes().merge(agent_api::sync_router())
}

/// The routes of the public listener that do not depend on the tunnel.
fn public_routes() -> OpenApiRouter<AppState> {
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
        .merge(agent_api::enroll_router())
        .merge(wan::router())
        .merge(messaging::router())
        .merge(notices::router())
        .routes(routes!(openapi_json))
}

/// The public listener's router and the OpenAPI document (of every route, the agent's
/// sync routes included). With a tunnel, the sync routes are not on this router: they
/// answer 404 here and are served by [`agent_router`] inside the tunnel.
pub fn app_with_spec(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (_, mut spec) = api_router().split_for_parts();
    let routes = if state.tunnel.is_some() {
        public_routes()
    } else {
        api_router()
    };
    let (router, _) = routes.split_for_parts();
    SharedAnswers.modify(&mut spec);
    // Amounts are declared with the installation's currency digits.
    let schemas = &mut spec.components.get_or_insert_with(Default::default).schemas;
    closed_variants(schemas);
    cross_field_rules(schemas);
    for (name, schema) in crate::money::currency_schemas(&state.currency) {
        schemas.insert(name.to_string(), schema.into());
    }
    let json = Arc::new(spec.to_pretty_json().expect("OpenAPI document serializes"));
    let router = finish(
        router
            .merge(crate::panel::router(state.clone()))
            .merge(crate::portal::router())
            .merge(health::router()),
    )
    .layer(Extension(OpenApiJson(json)))
    .layer(axum::middleware::from_fn_with_state(
        state.health.clone(),
        health::track,
    ))
    .with_state(state);
    (router, spec)
}

/// The tunnel listener's router: the agent's sync routes only, each request checked to
/// come from the tunnel address of the agent whose credential it presents.
pub fn agent_router(state: AppState) -> Router {
    let (router, _) = agent_api::sync_router().split_for_parts();
    finish(router)
        .layer(axum::middleware::from_fn_with_state(
            state.health.clone(),
            health::track,
        ))
        .with_state(state)
}

/// The answers every router shares: 404 and 405 in the API's error body, and tracing.
fn finish(router: Router<AppState>) -> Router<AppState> {
    router
        .fallback(|| async { Error::not_found("route") })
        .method_not_allowed_fallback(|| async {
            Error::new(
                crate::error::ErrorKind::MethodNotAllowed,
                "method_not_allowed",
                "this path does not answer that method",
            )
        })
        .layer(tower_http::trace::TraceLayer::new_for_http())
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
        from_json_value(body).map(ApiJson)
    }
}

/// Reads a request body already parsed as JSON into `T`; a field error names the field
/// (`amount: …`).
pub fn from_json_value<T: serde::de::DeserializeOwned>(body: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(body).map_err(|e| {
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

fn whole_floats_as_integers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            // Every whole f64 inside the i64 range converts exactly (above 2^53 they are
            // all whole, and `as` is exact for them).
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && (-(i64::MAX as f64)..i64::MAX as f64).contains(&f)
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
