//! The subscriber self-care portal: `/portal` on the public listener, beside the panel.
//!
//! A subscriber logs in with the username and password of its internet service (the
//! credential the controller holds sealed for RADIUS: one credential, no second
//! password), on its reseller's custom domain under that reseller's brand, chosen by the
//! request's Host as the panel chooses it. It is a router of its own, chosen by path, and
//! not a kind of panel user: its sessions live in their own table (`portal_sessions`,
//! cookie `outpost_portal`, path `/portal`), so no staff credential opens the portal and
//! no portal session opens the panel or the API.
//!
//! **Scoped to one subscriber by construction.** A session resolves to a
//! [`SubscriberScope`], which holds that one subscriber's id and can be made only here,
//! from a live session. Every portal read ([`home::load`]) takes it and nothing else: no
//! route takes an id, so there is no id to swap for another's.
//!
//! - `session`: the session table, login (throttled like staff logins, audited),
//!   logout, and the password change (through the subscriber's own update, so the feed
//!   carries it to the site like any change);
//! - `home`: what the home page shows, read for one [`SubscriberScope`].
//!
//! Forms carry a CSRF token: an HMAC keyed with the session's secret, or before login a
//! double-submit cookie, as the panel's forms do.

pub mod home;
pub mod session;

use askama::Template;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::{Form, Router};
use axum_extra::extract::cookie::{Cookie, SameSite};
use hmac::{Hmac, Mac};
use outpost_protocol as proto;
use serde::Deserialize;
use sha2::Sha256;

use crate::AppState;
use crate::crypto::new_bearer;
use crate::db::brand;
use crate::db::tenant::Tenant;
use crate::error::{Error, ErrorKind};
use crate::http::auth::{ClientMeta, cookie};
use crate::panel::{constant_eq, host, render};
use crate::scope::OPERATOR_TENANT;

/// The portal session's cookie.
pub const SESSION_COOKIE: &str = "outpost_portal";
/// The login form's double-submit CSRF cookie.
pub const LOGIN_CSRF_COOKIE: &str = "outpost_portal_csrf";

/// The portal's routes (no state: it is merged into the public router).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/portal", get(home_page))
        .route("/portal/login", get(login_page).post(login))
        .route("/portal/logout", post(logout))
        .route("/portal/password", post(change_password))
        .route("/portal/{*rest}", any(not_found))
}

/// The portal's routes as `(method, path)`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/portal"),
    ("GET", "/portal/login"),
    ("POST", "/portal/login"),
    ("POST", "/portal/logout"),
    ("POST", "/portal/password"),
];

/// The one subscriber a portal session may see: made only from a live session (see
/// [`Visit`]), and the only input of every portal read.
#[derive(Debug, Clone)]
pub struct SubscriberScope {
    id: i64,
    session_id: i64,
    /// Its owner now (re-read with the session on every request).
    pub tenant_id: i64,
    pub username: String,
}

impl SubscriberScope {
    /// The subscriber's id.
    pub fn id(&self) -> i64 {
        self.id
    }
}

/// What every portal page of a request knows: the brand, the reseller whose custom
/// domain it is (if any), the logged-in subscriber (if any), the CSRF token.
pub struct Visit {
    pub brand: proto::Brand,
    pub domain: Option<Tenant>,
    pub me: Option<SubscriberScope>,
    pub csrf: Option<String>,
}

/// The CSRF token of the portal session whose secret is `secret`.
fn csrf_token(secret: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"outpost portal csrf v1");
    hex::encode(mac.finalize().into_bytes())
}

impl FromRequestParts<AppState> for Visit {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Response> {
        let h = host(&parts.headers);
        let secret = cookie(&parts.headers, SESSION_COOKIE);
        let s = secret.clone();
        let found = st
            .db
            .read(move |c| {
                let domain = match h {
                    Some(h) => brand::tenant_by_domain(c, &h)?,
                    None => None,
                };
                let found = match s {
                    Some(s) => session::find(c, &s)?,
                    None => None,
                };
                // A session is good only on its own reseller's domain (or the
                // operator's address); anywhere else nobody is logged in.
                let found = found.filter(|f| {
                    domain
                        .as_ref()
                        .is_none_or(|d| f.tenant_path.starts_with(&d.path))
                });
                let tenant = match (&domain, &found) {
                    (Some(d), _) => d.id,
                    (None, Some(f)) => f.tenant_id,
                    (None, None) => OPERATOR_TENANT,
                };
                let brand = brand::effective(c, &[tenant])?.pop();
                Ok((domain, found, brand))
            })
            .await;
        let (domain, found, brand) = match found {
            Ok(v) => v,
            Err(e) => return Err(error_page(&operator_brand(), &e)),
        };
        let me = found.map(|f| SubscriberScope {
            id: f.subscriber_id,
            session_id: f.session_id,
            tenant_id: f.tenant_id,
            username: f.username,
        });
        let csrf = match (&me, &secret) {
            (Some(_), Some(s)) => Some(csrf_token(s)),
            _ => cookie(&parts.headers, LOGIN_CSRF_COOKIE),
        };
        Ok(Visit {
            brand: brand.unwrap_or_else(operator_brand),
            domain,
            me,
            csrf,
        })
    }
}

fn operator_brand() -> proto::Brand {
    proto::Brand {
        tenant_id: OPERATOR_TENANT,
        name: "Outpost".into(),
        color: None,
        logo_url: None,
        contact: None,
        tagline: None,
    }
}

impl Visit {
    /// 403 unless the form carried this visit's CSRF token.
    fn check_csrf(&self, got: &str) -> Result<(), Error> {
        match &self.csrf {
            Some(want) if constant_eq(want.as_bytes(), got.as_bytes()) => Ok(()),
            _ => Err(Error::forbidden(
                "csrf",
                "this form has expired or did not come from this page; reload it and try again",
            )),
        }
    }

    fn chrome(&self) -> Chrome {
        Chrome {
            brand_name: self.brand.name.clone(),
            color: self
                .brand
                .color
                .clone()
                .unwrap_or_else(|| "#1f4e79".to_string()),
            logo_url: self.brand.logo_url.clone(),
            contact: self.brand.contact.clone(),
            tagline: self.brand.tagline.clone(),
            css: crate::panel::css_url(),
            csrf: self.csrf.clone().unwrap_or_default(),
            user: self.me.as_ref().map(|m| m.username.clone()),
        }
    }
}

/// What the portal's layout shows around a page.
pub struct Chrome {
    pub brand_name: String,
    pub color: String,
    pub logo_url: Option<String>,
    pub contact: Option<String>,
    pub tagline: Option<String>,
    pub css: String,
    pub csrf: String,
    pub user: Option<String>,
}

#[derive(Template)]
#[template(path = "portal_error.html")]
struct ErrorPage<'a> {
    chrome: Chrome,
    title: String,
    status: u16,
    message: &'a str,
}

fn error_page(brand: &proto::Brand, e: &Error) -> Response {
    let v = Visit {
        brand: brand.clone(),
        domain: None,
        me: None,
        csrf: None,
    };
    v.error(e)
}

impl Visit {
    /// A logged-in subscriber's posted form with its CSRF token (`csrf` of the form)
    /// checked; otherwise the error page that answers it.
    fn posted<T>(
        &self,
        form: Result<Form<T>, axum::extract::rejection::FormRejection>,
        csrf: impl FnOnce(&T) -> &str,
    ) -> Result<(SubscriberScope, T), Box<Response>> {
        let Some(me) = self.me.clone() else {
            return Err(Box::new(self.error(&Error::unauthorized("log in first"))));
        };
        let f = match form {
            Ok(Form(f)) => f,
            Err(e) => {
                return Err(Box::new(
                    self.error(&Error::bad_request("bad_form", e.body_text())),
                ));
            }
        };
        self.check_csrf(csrf(&f))
            .map_err(|e| Box::new(self.error(&e)))?;
        Ok((me, f))
    }

    /// A domain error as a page in this visit's brand, with the API's status.
    fn error(&self, e: &Error) -> Response {
        let status = StatusCode::from(e.kind);
        let title = match status {
            StatusCode::NOT_FOUND => "Not found".to_string(),
            StatusCode::FORBIDDEN => "Not allowed".to_string(),
            s => s.canonical_reason().unwrap_or("Error").to_string(),
        };
        let mut chrome = self.chrome();
        chrome.user = None;
        let page = ErrorPage {
            chrome,
            title,
            status: status.as_u16(),
            message: &e.message,
        };
        let mut resp = (status, render(&page)).into_response();
        if let Some(secs) = e.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        no_store(resp)
    }
}

/// Portal pages are about one person: never stored by a shared cache.
fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn set(resp: &mut Response, c: Cookie<'static>) {
    if let Ok(v) = c.encoded().to_string().parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn portal_cookie(st: &AppState, name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(st.config.auth.cookie_secure)
        .path("/portal")
        .build()
}

fn expired(name: &'static str) -> Cookie<'static> {
    Cookie::build((name, ""))
        .path("/portal")
        .max_age(time::Duration::ZERO)
        .http_only(true)
        .build()
}

async fn not_found(v: Visit) -> Response {
    v.error(&Error::not_found("page"))
}

// ---------------------------------------------------------------------------------
// Login and logout

#[derive(Template)]
#[template(path = "portal_login.html")]
struct LoginPage {
    chrome: Chrome,
    title: String,
    username: String,
    error: Option<String>,
}

async fn login_page(State(st): State<AppState>, mut v: Visit) -> Response {
    if v.me.is_some() {
        return Redirect::to("/portal").into_response();
    }
    let fresh = v.csrf.is_none().then(|| new_bearer("pc_"));
    if let Some(f) = &fresh {
        v.csrf = Some(f.clone());
    }
    let page = LoginPage {
        chrome: v.chrome(),
        title: "Log in".into(),
        username: String::new(),
        error: None,
    };
    let mut resp = render(&page).into_response();
    if let Some(f) = fresh {
        set(&mut resp, portal_cookie(&st, LOGIN_CSRF_COOKIE, f));
    }
    no_store(resp)
}

#[derive(Deserialize)]
struct LoginForm {
    csrf: String,
    username: String,
    password: String,
}

async fn login(
    State(st): State<AppState>,
    v: Visit,
    meta: ClientMeta,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let f = match form {
        Ok(Form(f)) => f,
        Err(e) => return v.error(&Error::bad_request("bad_form", e.body_text())),
    };
    if let Err(e) = v.check_csrf(&f.csrf) {
        return v.error(&e);
    }
    let from = session::From {
        ip: meta.ip,
        user_agent: &meta.user_agent,
        domain: v.domain.as_ref(),
    };
    match session::login(&st, &f.username, &f.password, &from).await {
        Ok(s) => {
            let mut resp = Redirect::to("/portal").into_response();
            let mut c = portal_cookie(&st, SESSION_COOKIE, s.secret);
            c.set_max_age(time::Duration::seconds(s.ttl));
            set(&mut resp, c);
            set(&mut resp, expired(LOGIN_CSRF_COOKIE));
            resp
        }
        // A refusal a person can act on is shown on the form, with its status.
        Err(e) if e.kind.is_refusal() && e.kind != ErrorKind::BadRequest => {
            let page = LoginPage {
                chrome: v.chrome(),
                title: "Log in".into(),
                username: f.username.trim().to_string(),
                error: Some(e.message.clone()),
            };
            let mut resp = (StatusCode::from(e.kind), render(&page)).into_response();
            if let Some(secs) = e.retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            no_store(resp)
        }
        Err(e) => v.error(&e),
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: String,
}

async fn logout(
    State(st): State<AppState>,
    v: Visit,
    meta: ClientMeta,
    form: Result<Form<CsrfOnly>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (me, _) = match v.posted(form, |f| &f.csrf) {
        Ok(posted) => posted,
        Err(page) => return *page,
    };
    let from = session::From {
        ip: meta.ip,
        user_agent: &meta.user_agent,
        domain: v.domain.as_ref(),
    };
    if let Err(e) = session::logout(&st, &me, &from).await {
        return v.error(&e);
    }
    let mut resp = Redirect::to("/portal/login").into_response();
    set(&mut resp, expired(SESSION_COOKIE));
    resp
}

// ---------------------------------------------------------------------------------
// Home and the password

#[derive(Template)]
#[template(path = "portal_home.html")]
struct HomePage {
    chrome: Chrome,
    title: String,
    h: home::HomeView,
    notice: Option<&'static str>,
    password_error: Option<String>,
}

#[derive(Deserialize)]
struct HomeQuery {
    notice: Option<String>,
}

async fn home_page(
    State(st): State<AppState>,
    v: Visit,
    axum::extract::Query(q): axum::extract::Query<HomeQuery>,
) -> Response {
    let Some(me) = v.me.clone() else {
        return Redirect::to("/portal/login").into_response();
    };
    let notice = match q.notice.as_deref() {
        Some("password") => Some("Your password is changed. Use the new one on your router too."),
        _ => None,
    };
    home_response(&st, &v, &me, StatusCode::OK, notice, None).await
}

async fn home_response(
    st: &AppState,
    v: &Visit,
    me: &SubscriberScope,
    status: StatusCode,
    notice: Option<&'static str>,
    password_error: Option<String>,
) -> Response {
    let m = me.clone();
    let h = match st
        .db
        .read(move |c| home::load(c, &m, crate::db::now()))
        .await
    {
        Ok(h) => h,
        Err(e) => return v.error(&e),
    };
    let page = HomePage {
        chrome: v.chrome(),
        title: "My account".into(),
        h: home::HomeView::new(&h, &st.currency),
        notice,
        password_error,
    };
    no_store((status, render(&page)).into_response())
}

#[derive(Deserialize)]
struct PasswordForm {
    csrf: String,
    current_password: String,
    new_password: String,
    confirm_password: String,
}

async fn change_password(
    State(st): State<AppState>,
    v: Visit,
    meta: ClientMeta,
    form: Result<Form<PasswordForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (me, f) = match v.posted(form, |f| &f.csrf) {
        Ok(posted) => posted,
        Err(page) => return *page,
    };
    let result = if f.new_password != f.confirm_password {
        Err(Error::invalid(
            "the new password and its confirmation differ",
        ))
    } else {
        let from = session::From {
            ip: meta.ip,
            user_agent: &meta.user_agent,
            domain: v.domain.as_ref(),
        };
        session::change_password(&st, &me, &f.current_password, &f.new_password, &from).await
    };
    match result {
        Ok(()) => Redirect::to("/portal?notice=password").into_response(),
        Err(e) if e.kind.is_refusal() && e.kind != ErrorKind::BadRequest => {
            let status = StatusCode::from(e.kind);
            let mut resp = home_response(&st, &v, &me, status, None, Some(e.message.clone())).await;
            if let Some(secs) = e.retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
        Err(e) => v.error(&e),
    }
}
