//! The one error type every handler returns, and the one place that maps causes to
//! HTTP statuses. Internals are logged inside the request's span and never shown.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::db::audit::SecurityEvent;

pub type ApiResult<T> = Result<T, ApiError>;

/// An error answered to an API client as `{"error":{"code":…,"message":…}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable code (`not_found`, `limit_reached`, …).
    pub code: &'static str,
    /// A sentence a person can act on.
    pub message: String,
    /// Seconds the client should wait (429 only).
    pub retry_after: Option<u64>,
    /// A refusal worth recording in the audit log. The DB write helper records it in a
    /// transaction of its own after rolling the request's transaction back.
    pub security: Option<Box<SecurityEvent>>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}
#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            security: None,
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    /// The same answer for "does not exist" and "exists but is not yours".
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    /// Well-formed input that breaks a rule: a bad value, a limit, a depth.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    pub fn too_many(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "throttled", message);
        e.retry_after = Some(retry_after);
        e
    }
    /// Overloaded for now (no password-check slot free): 503 with a Retry-After.
    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message);
        e.retry_after = Some(retry_after);
        e
    }
    /// Logs the cause chain and answers a bland 500.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = cause.to_string();
        let mut src = cause.source();
        while let Some(s) = src {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            src = s.source();
        }
        tracing::error!(error = %chain, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the controller log",
        )
    }
    /// Attach a security event to be recorded when this refusal is returned.
    pub fn with_security(mut self, event: SecurityEvent) -> Self {
        self.security = Some(Box::new(event));
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_client_error() {
            tracing::debug!(status = self.status.as_u16(), code = self.code, message = %self.message, "request refused");
        }
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &e {
            rusqlite::Error::QueryReturnedNoRows => ApiError::not_found("record"),
            rusqlite::Error::SqliteFailure(f, msg) if f.code == ErrorCode::ConstraintViolation => {
                let msg = msg.clone().unwrap_or_default();
                if msg.contains("UNIQUE") {
                    ApiError::conflict("duplicate", unique_message(&msg))
                } else {
                    ApiError::invalid(format!("the change breaks a data rule ({msg})"))
                }
            }
            _ => ApiError::internal(&e),
        }
    }
}

/// Turns "UNIQUE constraint failed: subscribers.username" into a sentence.
fn unique_message(msg: &str) -> String {
    let cols = msg.rsplit(':').next().unwrap_or("").trim();
    let field = match cols {
        "subscribers.username" => "a subscriber with this username already exists",
        "users.email" => "a user with this email already exists",
        "tenants.custom_domain" => "this custom domain is already used by another reseller",
        "sites.tenant_id, sites.name" => "a site with this name already exists for this reseller",
        "nas.site_id, nas.ip" => "a NAS with this IP address already exists at this site",
        "subscribers.site_id, subscribers.static_ipv4" => {
            "this static IPv4 address is already assigned at this site"
        }
        _ => return format!("already exists ({cols})"),
    };
    field.to_string()
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(&e)
    }
}

impl From<crate::crypto::Busy> for ApiError {
    fn from(_: crate::crypto::Busy) -> Self {
        ApiError::unavailable("too many password checks in progress; try again shortly", 1)
    }
}

impl From<crate::crypto::CheckLost> for ApiError {
    fn from(e: crate::crypto::CheckLost) -> Self {
        ApiError::internal(&e)
    }
}
