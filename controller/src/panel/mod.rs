//! The panel: server-rendered pages under `/panel` for operator staff, resellers and
//! their managers, beside the JSON API and in the same process.
//!
//! Pages call the same operations ([`crate::ops`], [`crate::billing`]), the same scope
//! ([`crate::scope::Actor::scope`]) and the same list functions as the API; none builds
//! a filter of its own. A domain [`Error`] becomes an HTML page with the API's status
//! (out-of-scope id → 404 page, ungranted function → 403 page).
//!
//! - [`frame`] (a middleware around every panel route) resolves who is asking (the
//!   session cookie, through the API's [`Actor`] extractor) and which brand the request's
//!   Host shows, and renders any [`Failure`] as an error page in that frame.
//! - Forms carry a CSRF token ([`csrf_token`], derived from the session's secret; before
//!   login, a double-submit cookie), and a POST without it is a 403 page.
//! - The stylesheet and the one small script are compiled in and served under a path
//!   holding their hash, cached for a year.
//! - `auth`: login, logout, "log in as" and the way back; `pages`: dashboard,
//!   subscribers, logins, the reseller tree, the audit log, WAN checks;
//!   `subscriber_forms`: a subscriber's create and edit forms and the list's bulk
//!   actions; `plans`: plans (list, create, edit, archive) and a reseller's rate card;
//!   `sites`: sites with their agents' sync state, a site's and a NAS's edit forms (a
//!   NAS secret is written, never shown back), enrollment tokens and their revocation;
//!   `staff`: a login's create and edit forms, a manager's functions and presets;
//!   `resellers`: a sub-reseller's creation, its settings (with custom domain and
//!   allowed IPs), brand, balance, statement (with dates), and the ledger;
//!   `reports`: the charts and their CSV; `forms`: the per-field errors every form
//!   shows, and [`forms::submit`], the parse → operation → redirect-or-form-again shape
//!   every create and edit handler shares.

mod auth;
pub(crate) mod chart;
mod forms;
mod pages;
mod plans;
mod reports;
mod resellers;
mod sites;
mod staff;
mod subscriber_forms;

use std::sync::LazyLock;

use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, any, get, post};
use axum::{Form, Router};
use hmac::{Hmac, Mac};
use outpost_protocol as proto;
use serde::Deserialize;
use sha2::Sha256;

use crate::AppState;
use crate::db::brand;
use crate::db::tenant::Tenant;
use crate::error::{Error, ErrorKind, Result};
use crate::http::auth::cookie;
use crate::scope::{Actor, OPERATOR_TENANT, Permission, UserKind};

/// Every panel route. A method a path does not answer is the 405 page, in the frame.
pub fn router(state: AppState) -> Router<AppState> {
    use subscriber_forms as sf;
    let page = |m: MethodRouter<AppState>| m.fallback(method_not_allowed);
    Router::new()
        .route("/panel", page(get(pages::dashboard)))
        .route(
            "/panel/login",
            page(get(auth::login_page).post(auth::login)),
        )
        .route("/panel/logout", page(post(auth::logout)))
        .route(
            "/panel/subscribers",
            page(get(pages::subscribers).post(sf::create)),
        )
        .route("/panel/subscribers/new", page(get(sf::new_form)))
        .route("/panel/subscribers/bulk", page(post(sf::bulk)))
        .route(
            "/panel/subscribers/{id}",
            page(get(pages::subscriber).post(sf::update)),
        )
        .route("/panel/subscribers/{id}/edit", page(get(sf::edit_form)))
        .route(
            "/panel/subscribers/{id}/status",
            page(post(pages::set_status)),
        )
        .route("/panel/subscribers/{id}/renew", page(post(pages::renew)))
        .route(
            "/panel/subscribers/{id}/payments",
            page(post(pages::payment)),
        )
        .route("/panel/plans", page(get(plans::list).post(plans::create)))
        .route("/panel/plans/new", page(get(plans::new_form)))
        .route("/panel/plans/{id}", page(post(plans::update)))
        .route("/panel/plans/{id}/edit", page(get(plans::edit_form)))
        .route("/panel/plans/{id}/status", page(post(plans::set_status)))
        .route(
            "/panel/resellers/{id}/rate-card",
            page(get(plans::rate_card).post(plans::change_rate_card)),
        )
        .route("/panel/sites", page(get(sites::list).post(sites::create)))
        .route(
            "/panel/sites/{id}",
            page(get(sites::show).post(sites::update_site)),
        )
        .route("/panel/sites/{id}/edit", page(get(sites::edit_site)))
        .route("/panel/nas/{id}", page(post(sites::update_nas)))
        .route("/panel/nas/{id}/edit", page(get(sites::edit_nas)))
        .route(
            "/panel/enrollment-tokens/{id}/revoke",
            page(post(sites::revoke_token)),
        )
        .route("/panel/sites/{id}/nas", page(post(sites::create_nas)))
        .route(
            "/panel/sites/{id}/enrollment-tokens",
            page(post(sites::create_token)),
        )
        .route("/panel/users", page(get(pages::users).post(staff::create)))
        .route("/panel/users/new", page(get(staff::new_form)))
        .route("/panel/users/{id}", page(post(staff::update)))
        .route("/panel/users/{id}/edit", page(get(staff::edit_form)))
        .route(
            "/panel/resellers",
            page(get(pages::resellers).post(resellers::create)),
        )
        .route("/panel/resellers/new", page(get(resellers::new_form)))
        .route(
            "/panel/resellers/{id}",
            page(get(resellers::show).post(resellers::update)),
        )
        .route(
            "/panel/resellers/{id}/balance",
            page(post(resellers::money)),
        )
        .route(
            "/panel/resellers/{id}/brand",
            page(get(resellers::brand).post(resellers::set_brand)),
        )
        .route(
            "/panel/resellers/{id}/statement",
            page(get(resellers::statement)),
        )
        .route("/panel/ledger", page(get(resellers::ledger)))
        .route("/panel/audit", page(get(pages::audit)))
        .route("/panel/wan", page(get(pages::wan)))
        .route("/panel/reports", page(get(reports::reports)))
        .route("/panel/reports.csv", page(get(reports::csv)))
        .route(
            "/panel/users/{id}/impersonate",
            page(post(auth::impersonate)),
        )
        .route(
            "/panel/impersonation/end",
            page(post(auth::end_impersonation)),
        )
        .route("/panel/{*rest}", any(not_found))
        .layer(axum::middleware::from_fn_with_state(state, frame))
        // Outside the frame: no session or brand lookup for a stylesheet.
        .route("/panel/assets/{hash}/{file}", get(asset))
}

/// The panel's routes as `(method, path)`, for the authorization matrix.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/panel"),
    ("GET", "/panel/login"),
    ("POST", "/panel/login"),
    ("POST", "/panel/logout"),
    ("GET", "/panel/subscribers"),
    ("POST", "/panel/subscribers"),
    ("GET", "/panel/subscribers/new"),
    ("POST", "/panel/subscribers/bulk"),
    ("GET", "/panel/subscribers/{id}"),
    ("POST", "/panel/subscribers/{id}"),
    ("GET", "/panel/subscribers/{id}/edit"),
    ("POST", "/panel/subscribers/{id}/status"),
    ("POST", "/panel/subscribers/{id}/renew"),
    ("POST", "/panel/subscribers/{id}/payments"),
    ("GET", "/panel/plans"),
    ("POST", "/panel/plans"),
    ("GET", "/panel/plans/new"),
    ("POST", "/panel/plans/{id}"),
    ("GET", "/panel/plans/{id}/edit"),
    ("POST", "/panel/plans/{id}/status"),
    ("GET", "/panel/resellers/{id}/rate-card"),
    ("POST", "/panel/resellers/{id}/rate-card"),
    ("GET", "/panel/sites"),
    ("POST", "/panel/sites"),
    ("GET", "/panel/sites/{id}"),
    ("POST", "/panel/sites/{id}"),
    ("GET", "/panel/sites/{id}/edit"),
    ("POST", "/panel/nas/{id}"),
    ("GET", "/panel/nas/{id}/edit"),
    ("POST", "/panel/enrollment-tokens/{id}/revoke"),
    ("POST", "/panel/sites/{id}/nas"),
    ("POST", "/panel/sites/{id}/enrollment-tokens"),
    ("GET", "/panel/users"),
    ("POST", "/panel/users"),
    ("GET", "/panel/users/new"),
    ("POST", "/panel/users/{id}"),
    ("GET", "/panel/users/{id}/edit"),
    ("GET", "/panel/resellers"),
    ("POST", "/panel/resellers"),
    ("GET", "/panel/resellers/new"),
    ("GET", "/panel/resellers/{id}"),
    ("POST", "/panel/resellers/{id}"),
    ("POST", "/panel/resellers/{id}/balance"),
    ("GET", "/panel/resellers/{id}/brand"),
    ("POST", "/panel/resellers/{id}/brand"),
    ("GET", "/panel/resellers/{id}/statement"),
    ("GET", "/panel/ledger"),
    ("GET", "/panel/audit"),
    ("GET", "/panel/wan"),
    ("GET", "/panel/reports"),
    ("GET", "/panel/reports.csv"),
    ("POST", "/panel/users/{id}/impersonate"),
    ("POST", "/panel/impersonation/end"),
    ("GET", "/panel/assets/{hash}/{file}"),
];

async fn method_not_allowed() -> Failure {
    Failure(Error::new(
        ErrorKind::MethodNotAllowed,
        "method_not_allowed",
        "this page does not answer that method",
    ))
}

async fn not_found() -> Failure {
    Failure(Error::not_found("page"))
}

// ---------------------------------------------------------------------------------
// Assets

const CSS: &str = include_str!("assets/panel.css");
const JS: &str = include_str!("assets/panel.js");

fn short_hash(s: &str) -> String {
    hex::encode(&crate::crypto::sha256(s.as_bytes())[..6])
}

static CSS_HASH: LazyLock<String> = LazyLock::new(|| short_hash(CSS));
static JS_HASH: LazyLock<String> = LazyLock::new(|| short_hash(JS));

/// The stylesheet's URL: it changes whenever the stylesheet does.
pub fn css_url() -> String {
    format!("/panel/assets/{}/panel.css", *CSS_HASH)
}

/// The script's URL: it changes whenever the script does.
pub fn js_url() -> String {
    format!("/panel/assets/{}/panel.js", *JS_HASH)
}

async fn asset(
    axum::extract::Path((hash, file)): axum::extract::Path<(String, String)>,
) -> Response {
    let (body, hash_now, kind) = match file.as_str() {
        "panel.css" => (CSS, &*CSS_HASH, "text/css; charset=utf-8"),
        "panel.js" => (JS, &*JS_HASH, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    if hash != *hash_now {
        // An old hash: the page that asked is stale; this answer is not cached.
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    }
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------
// Who is asking, and under which brand

/// The login form's double-submit CSRF cookie (before there is a session to bind to).
pub const LOGIN_CSRF_COOKIE: &str = "outpost_panel_csrf";
/// The impersonator's own session secret, kept while "logged in as" someone else, so
/// one click returns to it.
pub const RETURN_COOKIE: &str = "outpost_panel_return";

/// The CSRF token of the session whose secret is `secret`: an HMAC of a fixed label
/// keyed with the secret, so only a holder of the session cookie can compute it, and it
/// dies with the session.
pub fn csrf_token(secret: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"outpost panel csrf v1");
    hex::encode(mac.finalize().into_bytes())
}

/// The request's Host, lower-cased, without its port.
pub(crate) fn host(headers: &HeaderMap) -> Option<String> {
    let h = headers.get(header::HOST)?.to_str().ok()?.trim();
    let h = if h.starts_with('[') {
        h.split(']').next().map(|s| format!("{s}]"))?
    } else {
        h.split(':').next()?.to_string()
    };
    Some(h.trim_end_matches('.').to_ascii_lowercase())
}

/// What every page of a request knows: the brand its Host shows, the reseller whose
/// custom domain it is (if any), who is logged in, and the CSRF token forms carry.
#[derive(Clone)]
pub struct Ctx {
    pub brand: proto::Brand,
    pub domain: Option<Tenant>,
    pub actor: Option<Actor>,
    pub csrf: Option<String>,
}

/// Resolves the request's [`Ctx`] before the page runs, and renders a [`Failure`] the
/// page answered as an error page with the same brand, menu and banner.
pub async fn frame(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let ctx = match resolve(&st, &mut parts).await {
        Ok(c) => c,
        Err((ctx, e)) => return error_page(&ctx, &e),
    };
    parts.extensions.insert(ctx.clone());
    let resp = next.run(Request::from_parts(parts, body)).await;
    match resp.extensions().get::<Failed>() {
        Some(Failed(e)) => error_page(&ctx, &e.0),
        None => resp,
    }
}

async fn resolve(st: &AppState, parts: &mut Parts) -> Result<Ctx, (Ctx, Error)> {
    let host = host(&parts.headers);
    let domain = {
        let h = host.clone();
        st.db
            .read(move |c| match h {
                Some(h) => brand::tenant_by_domain(c, &h),
                None => Ok(None),
            })
            .await
    };
    let operator_look = |domain: Option<Tenant>| Ctx {
        brand: proto::Brand {
            tenant_id: OPERATOR_TENANT,
            name: "Outpost".into(),
            color: None,
            logo_url: None,
            contact: None,
            tagline: None,
        },
        domain,
        actor: None,
        csrf: None,
    };
    let domain = domain.map_err(|e| (operator_look(None), e))?;
    let secret = crate::http::auth::bearer(&parts.headers);
    let actor = match &secret {
        None => None,
        Some(_) => match Actor::from_request_parts(parts, st).await {
            Ok(a) => Some(a),
            Err(e) if e.kind == ErrorKind::Unauthenticated => None,
            // A session refused for its standing (disabled, address) must not lock its
            // holder out of the login form.
            Err(_) if parts.uri.path() == "/panel/login" => None,
            Err(e) => {
                let ctx = look(st, operator_look(domain.clone()), None).await;
                return Err((ctx, e));
            }
        },
    };
    let mut ctx = operator_look(domain.clone());
    ctx.csrf = match (&actor, &secret) {
        (Some(_), Some(s)) => Some(csrf_token(s)),
        _ => cookie(&parts.headers, LOGIN_CSRF_COOKIE),
    };
    // A reseller's domain serves only its own subtree's logins (the login there refuses
    // anyone else; a session made elsewhere never reaches it, but a token could).
    if let (Some(d), Some(a)) = (&domain, &actor)
        && !a.tenant_path.starts_with(&d.path)
    {
        let ctx = look(st, ctx, None).await;
        return Err((
            ctx,
            Error::forbidden(
                "wrong_domain",
                "this account does not log in at this address; use your provider's panel",
            ),
        ));
    }
    Ok(look(st, ctx, actor).await)
}

/// Fills in the brand: the custom domain's when there is one, else the logged-in user's
/// nearest brand, else the operator's.
async fn look(st: &AppState, mut ctx: Ctx, actor: Option<Actor>) -> Ctx {
    let tenant = match (&ctx.domain, &actor) {
        (Some(d), _) => d.id,
        (None, Some(a)) => a.tenant_id,
        (None, None) => OPERATOR_TENANT,
    };
    if let Ok(Some(b)) = st
        .db
        .read(move |c| Ok(brand::effective(c, &[tenant])?.pop()))
        .await
    {
        ctx.brand = b;
    }
    ctx.actor = actor;
    ctx
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = Failure;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Failure> {
        parts.extensions.get::<Ctx>().cloned().ok_or_else(|| {
            Failure(Error::internal(&std::io::Error::other(
                "panel frame missing",
            )))
        })
    }
}

/// A logged-in page's context: anyone else is sent to the login page.
pub struct Viewer {
    pub ctx: Ctx,
    pub actor: Actor,
}

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Response> {
        let ctx = Ctx::from_request_parts(parts, s)
            .await
            .map_err(IntoResponse::into_response)?;
        match ctx.actor.clone() {
            Some(actor) => Ok(Viewer { ctx, actor }),
            None if parts.method == axum::http::Method::GET => {
                Err(Redirect::to("/panel/login").into_response())
            }
            None => Err(Failure(Error::unauthorized("log in first")).into_response()),
        }
    }
}

/// A form posted with its CSRF token; one without it (or with another session's) is
/// refused with a 403 page before the page runs.
pub struct Posted<T>(pub T);

#[derive(Deserialize)]
struct WithCsrf<T> {
    csrf: Option<String>,
    #[serde(flatten)]
    form: T,
}

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequest<S> for Posted<T> {
    type Rejection = Failure;
    async fn from_request(req: Request, s: &S) -> Result<Self, Failure> {
        let expected = req.extensions().get::<Ctx>().and_then(|c| c.csrf.clone());
        let Form(w) = Form::<WithCsrf<T>>::from_request(req, s)
            .await
            .map_err(|e| Failure(Error::bad_request("bad_form", e.body_text())))?;
        match (expected, w.csrf) {
            (Some(want), Some(got)) if constant_eq(want.as_bytes(), got.as_bytes()) => {
                Ok(Posted(w.form))
            }
            _ => Err(Failure(Error::forbidden(
                "csrf",
                "this form has expired or did not come from this panel; reload the page and try again",
            ))),
        }
    }
}

pub(crate) fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------
// Errors as pages

/// A domain error a page answers with; [`frame`] renders it as a page.
pub struct Failure(pub Error);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure(e)
    }
}

#[derive(Clone)]
struct Failed(std::sync::Arc<Failure>);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from(self.0.kind);
        let mut r = status.into_response();
        r.extensions_mut().insert(Failed(std::sync::Arc::new(self)));
        r
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    chrome: Chrome,
    title: String,
    status: u16,
    message: &'a str,
}

fn error_page(ctx: &Ctx, e: &Error) -> Response {
    let status = StatusCode::from(e.kind);
    let title = match status {
        StatusCode::NOT_FOUND => "Not found".to_string(),
        StatusCode::FORBIDDEN => "Not allowed".to_string(),
        s => s.canonical_reason().unwrap_or("Error").to_string(),
    };
    let page = ErrorPage {
        chrome: Chrome::new(ctx, ""),
        title,
        status: status.as_u16(),
        message: &e.message,
    };
    let mut resp = (status, render(&page)).into_response();
    if let Some(secs) = e.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// Renders a template; a template that fails to render is an internal error page body.
pub(crate) fn render(t: &impl Template) -> Html<String> {
    match t.render() {
        Ok(s) => Html(s),
        Err(e) => {
            tracing::error!(error = %e, "template failed to render");
            Html("<!doctype html><title>Error</title><p>The page could not be shown.</p>".into())
        }
    }
}

// ---------------------------------------------------------------------------------
// The frame every page shares

/// One menu entry.
pub struct MenuItem {
    pub href: &'static str,
    pub label: &'static str,
    pub active: bool,
}

/// What the layout shows around a page: brand, menu, who is logged in, the banner.
pub struct Chrome {
    pub brand_name: String,
    pub color: String,
    pub logo_url: Option<String>,
    pub contact: Option<String>,
    pub tagline: Option<String>,
    pub css: String,
    pub js: String,
    pub csrf: String,
    pub user: Option<String>,
    pub role: String,
    pub impersonator: Option<String>,
    pub menu: Vec<MenuItem>,
}

/// The menu: only what the actor's permissions grant, checked as the pages check them.
pub fn menu(actor: &Actor, active: &str) -> Vec<MenuItem> {
    // (page, path, label, the function it needs; none: everyone logged in)
    #[rustfmt::skip]
    const PAGES: &[(&str, &str, &str, Option<Permission>)] = &[
        ("dashboard", "/panel", "Dashboard", None),
        ("subscribers", "/panel/subscribers", "Subscribers", Some(Permission::ViewCustomers)),
        ("resellers", "/panel/resellers", "Resellers", Some(Permission::ManageResellers)),
        ("plans", "/panel/plans", "Plans", Some(Permission::ManagePlans)),
        ("sites", "/panel/sites", "Sites", Some(Permission::ManageSites)),
        ("users", "/panel/users", "Logins", Some(Permission::ManageStaff)),
        ("ledger", "/panel/ledger", "Ledger", Some(Permission::ViewInvoices)),
        ("wan", "/panel/wan", "WAN checks", Some(Permission::ViewReports)),
        ("reports", "/panel/reports", "Reports", Some(Permission::ViewReports)),
        ("audit", "/panel/audit", "Audit log", Some(Permission::ViewAuditLog)),
    ];
    PAGES
        .iter()
        .filter(|(.., need)| need.is_none_or(|p| actor.can(p)))
        .map(|&(page, href, label, _)| MenuItem {
            href,
            label,
            active: active == page,
        })
        .collect()
}

impl Chrome {
    pub fn new(ctx: &Ctx, active: &str) -> Chrome {
        let a = ctx.actor.as_ref();
        Chrome {
            brand_name: ctx.brand.name.clone(),
            color: ctx
                .brand
                .color
                .clone()
                .unwrap_or_else(|| "#1f4e79".to_string()),
            logo_url: ctx.brand.logo_url.clone(),
            contact: ctx.brand.contact.clone(),
            tagline: ctx.brand.tagline.clone(),
            css: css_url(),
            js: js_url(),
            csrf: ctx.csrf.clone().unwrap_or_default(),
            user: a.map(|a| format!("{} <{}>", a.name, a.email)),
            role: a
                .map(|a| match a.kind {
                    UserKind::Operator => "operator staff",
                    UserKind::Reseller => "reseller",
                    UserKind::Manager => "manager",
                })
                .unwrap_or("")
                .to_string(),
            impersonator: a.and_then(|a| a.impersonator.as_ref().map(|i| i.1.clone())),
            menu: a.map(|a| menu(a, active)).unwrap_or_default(),
        }
    }
}

/// A page's query string: a list's cursor and the notice a redirect left.
#[derive(Deserialize, Default)]
pub struct PageQuery {
    pub cursor: Option<String>,
    pub notice: Option<String>,
}

/// A page's answer: the rendered page, or a failure [`frame`] renders.
pub type PageResult = Result<Response, Failure>;

/// Parses an optional number field of a form or query (empty = absent).
fn opt_i64(field: &str, s: &Option<String>) -> Result<Option<i64>> {
    match s.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| Error::invalid(format!("{field} must be a whole number"))),
    }
}
