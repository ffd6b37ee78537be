//! Login, logout, "log in as" and the way back, on the API's cookie sessions and
//! through the same [`crate::ops::auth`] steps the API takes.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, SameSite};
use serde::Deserialize;

use super::{
    Chrome, Ctx, Failure, LOGIN_CSRF_COOKIE, PageResult, Posted, RETURN_COOKIE, Viewer, cookie,
    render,
};
use crate::AppState;
use crate::crypto::new_bearer;
use crate::db::audit::{self, Entry, Who};
use crate::db::{session, user};
use crate::error::{Error, ErrorKind};
use crate::http::auth::{ClientMeta, SESSION_COOKIE, session_cookie};
use crate::ops::auth as ops;
use crate::scope::{Credential, OPERATOR_TENANT};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    title: String,
    email: String,
    error: Option<String>,
}

fn login_csrf_cookie(state: &AppState, value: String) -> Cookie<'static> {
    Cookie::build((LOGIN_CSRF_COOKIE, value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.config.auth.cookie_secure)
        .path("/panel")
        .build()
}

fn set(resp: &mut Response, c: Cookie<'static>) {
    if let Ok(v) = c.encoded().to_string().parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn expired(name: &'static str, path: &'static str) -> Cookie<'static> {
    Cookie::build((name, ""))
        .path(path)
        .max_age(time::Duration::ZERO)
        .http_only(true)
        .build()
}

/// The login form, under the brand of the Host it is served on. Logged in already: the
/// dashboard.
pub async fn login_page(State(st): State<AppState>, ctx: Ctx) -> Response {
    if ctx.actor.is_some() {
        return Redirect::to("/panel").into_response();
    }
    let mut ctx = ctx;
    let fresh = ctx.csrf.is_none().then(|| new_bearer("pc_"));
    if let Some(f) = &fresh {
        ctx.csrf = Some(f.clone());
    }
    let page = LoginPage {
        chrome: Chrome::new(&ctx, ""),
        title: "Log in".into(),
        email: String::new(),
        error: None,
    };
    let mut resp = render(&page).into_response();
    if let Some(f) = fresh {
        set(&mut resp, login_csrf_cookie(&st, f));
    }
    resp
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
}

/// Logs in through the API's login steps (throttle, password gate, standing, audit); on
/// a reseller's custom domain only users of its subtree get in.
pub async fn login(
    State(st): State<AppState>,
    ctx: Ctx,
    meta: ClientMeta,
    Posted(f): Posted<LoginForm>,
) -> PageResult {
    let from = ops::LoginFrom {
        ip: meta.ip,
        user_agent: &meta.user_agent,
        domain: ctx.domain.as_ref(),
    };
    match ops::login(&st, &f.email, &f.password, &from).await {
        Ok(s) => {
            let mut resp = Redirect::to("/panel").into_response();
            set(&mut resp, session_cookie(&st, s.token));
            set(&mut resp, expired(LOGIN_CSRF_COOKIE, "/panel"));
            Ok(resp)
        }
        // A refusal a person can act on is shown on the form, with its status.
        Err(e) if e.kind.is_refusal() && e.kind != ErrorKind::BadRequest => {
            let status = StatusCode::from(e.kind);
            let page = LoginPage {
                chrome: Chrome::new(&ctx, ""),
                title: "Log in".into(),
                email: f.email.trim().to_string(),
                error: Some(e.message.clone()),
            };
            let mut resp = (status, render(&page)).into_response();
            if let Some(secs) = e.retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
            }
            Ok(resp)
        }
        Err(e) => Err(Failure(e)),
    }
}

#[derive(Deserialize)]
pub struct Empty {}

/// Ends this session (`session.logout`, as the API's logout) and returns to the login
/// form. While logged in as someone else, the impersonator's own session (kept aside
/// for the way back) ends too: logging out leaves nobody logged in.
pub async fn logout(
    State(st): State<AppState>,
    v: Viewer,
    meta: ClientMeta,
    headers: HeaderMap,
    Posted(Empty {}): Posted<Empty>,
) -> PageResult {
    ops::logout(&st, &v.actor).await?;
    if let Some((imp_id, imp_name)) = v.actor.impersonator.clone()
        && let Some(secret) = cookie(&headers, RETURN_COOKIE)
    {
        st.db
            .write(move |tx| {
                let Some(own) = session::find(tx, &secret)?
                    .filter(|f| f.user_id == imp_id && f.impersonator_id.is_none())
                else {
                    return Ok(());
                };
                let tenant_id = user::get(tx, imp_id)?.map_or(OPERATOR_TENANT, |u| u.tenant_id);
                let who = Who {
                    user_id: Some(imp_id),
                    name: imp_name,
                    impersonator: None,
                    tenant_id,
                    ip: meta.ip.to_string(),
                    user_agent: meta.user_agent.clone(),
                };
                let id = match own.credential {
                    Credential::Session { id } | Credential::ApiToken { id } => id,
                };
                session::revoke(tx, &own.credential)?;
                audit::record(
                    tx,
                    &Entry::new(&who, tenant_id, "session.logout", "session", id),
                )?;
                Ok(())
            })
            .await?;
    }
    let mut resp = Redirect::to("/panel/login").into_response();
    set(&mut resp, expired(SESSION_COOKIE, "/"));
    set(&mut resp, expired(RETURN_COOKIE, "/panel"));
    Ok(resp)
}

/// "Log in as": the API's impersonation (same checks, same `user.impersonate` audit
/// entry); the impersonator's own session is kept aside for the way back.
pub async fn impersonate(
    State(st): State<AppState>,
    v: Viewer,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<i64>,
    Posted(Empty {}): Posted<Empty>,
) -> PageResult {
    let s = ops::impersonate(&st, &v.actor, id).await?;
    let own = cookie(&headers, SESSION_COOKIE).ok_or_else(|| {
        Error::forbidden(
            "cookie_session_only",
            "log in as someone else from a browser session",
        )
    })?;
    let mut resp = Redirect::to("/panel").into_response();
    let mut c = session_cookie(&st, s.token);
    c.set_max_age(time::Duration::seconds(s.ttl));
    set(&mut resp, c);
    set(
        &mut resp,
        Cookie::build((RETURN_COOKIE, own))
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(st.config.auth.cookie_secure)
            .path("/panel")
            .max_age(time::Duration::seconds(s.ttl))
            .build(),
    );
    Ok(resp)
}

/// Back to the impersonator: ends the impersonation session and restores the
/// impersonator's own, if it is still live and really theirs.
pub async fn end_impersonation(
    State(st): State<AppState>,
    v: Viewer,
    headers: HeaderMap,
    Posted(Empty {}): Posted<Empty>,
) -> PageResult {
    let Some((imp_id, _)) = v.actor.impersonator.clone() else {
        return Err(Failure(Error::invalid(
            "you are not logged in as anyone else",
        )));
    };
    ops::logout(&st, &v.actor).await?;
    let back = cookie(&headers, RETURN_COOKIE);
    let own = match back.clone() {
        Some(secret) => st
            .db
            .read(move |c| session::find(c, &secret))
            .await?
            .filter(|f| f.user_id == imp_id && f.impersonator_id.is_none()),
        None => None,
    };
    let mut resp;
    match (own, back) {
        (Some(_), Some(secret)) => {
            resp = Redirect::to("/panel/users").into_response();
            set(&mut resp, session_cookie(&st, secret));
        }
        _ => {
            resp = Redirect::to("/panel/login").into_response();
            set(&mut resp, expired(SESSION_COOKIE, "/"));
        }
    }
    set(&mut resp, expired(RETURN_COOKIE, "/panel"));
    Ok(resp)
}
