//! The one domain error every operation, query and handler returns: a kind, a stable
//! code, a sentence and, for refusals worth recording, a security event. Nothing here
//! knows HTTP: the JSON API maps a kind to a status in one place
//! (`http::error`), and a page can render the same error its own way.

use crate::security::SecurityEvent;

/// `Result` with this module's [`Error`] unless told otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as far as the caller is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is malformed: bad JSON, query, path, cursor.
    BadRequest,
    /// No valid session, token or credential.
    Unauthenticated,
    /// Authenticated, but this function is not granted.
    Forbidden,
    /// Does not exist, or exists but is not the caller's to see.
    NotFound,
    /// Clashes with the current state: a duplicate, a reused key, a stale change.
    Conflict,
    /// The body is not in a format the API reads.
    UnsupportedMediaType,
    /// Well-formed input that breaks a rule: a bad value, a limit, a depth.
    Invalid,
    /// Too many attempts; try again after `retry_after`.
    Throttled,
    /// The path exists, the method does not.
    MethodNotAllowed,
    /// The body is larger than the server reads.
    TooLarge,
    /// Overloaded for now (no password-check slot free); try again after `retry_after`.
    Unavailable,
    /// A fault on our side; the cause is logged, never shown.
    Internal,
}

impl ErrorKind {
    /// The caller can act on it (everything but [`ErrorKind::Internal`]).
    pub fn is_refusal(self) -> bool {
        self != ErrorKind::Internal
    }
}

/// A refusal or a failure, with what a client may be told about it.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    /// A stable, machine-readable code (`not_found`, `limit_reached`, …).
    pub code: &'static str,
    /// A sentence a person can act on.
    pub message: String,
    /// Seconds the client should wait ([`ErrorKind::Throttled`] and
    /// [`ErrorKind::Unavailable`] only).
    pub retry_after: Option<u64>,
    /// A refusal worth recording in the audit log. The DB write helper records it in a
    /// transaction of its own after rolling the request's transaction back.
    pub security: Option<Box<SecurityEvent>>,
}

impl Error {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Error {
            kind,
            code,
            message: message.into(),
            retry_after: None,
            security: None,
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, "unauthenticated", message)
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, code, message)
    }
    /// The same answer for "does not exist" and "exists but is not yours".
    pub fn not_found(what: &str) -> Self {
        Self::new(
            ErrorKind::NotFound,
            "not_found",
            format!("{what} not found"),
        )
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }
    /// Well-formed input that breaks a rule: a bad value, a limit, a depth.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, "invalid", message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, message)
    }
    pub fn too_many(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(ErrorKind::Throttled, "throttled", message);
        e.retry_after = Some(retry_after);
        e
    }
    /// Overloaded for now: try again after `retry_after` seconds.
    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(ErrorKind::Unavailable, "busy", message);
        e.retry_after = Some(retry_after);
        e
    }
    /// Logs the cause chain and answers a bland internal error.
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
            ErrorKind::Internal,
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

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// SQLite's answers mapped once: no row is [`ErrorKind::NotFound`], a UNIQUE violation
/// [`ErrorKind::Conflict`], any other constraint [`ErrorKind::Invalid`].
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &e {
            rusqlite::Error::QueryReturnedNoRows => Error::not_found("record"),
            rusqlite::Error::SqliteFailure(f, msg) if f.code == ErrorCode::ConstraintViolation => {
                let msg = msg.clone().unwrap_or_default();
                if msg.contains("UNIQUE") {
                    Error::conflict("duplicate", unique_message(&msg))
                } else {
                    Error::invalid(format!("the change breaks a data rule ({msg})"))
                }
            }
            _ => Error::internal(&e),
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

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::internal(&e)
    }
}

impl From<crate::crypto::Busy> for Error {
    fn from(_: crate::crypto::Busy) -> Self {
        Error::unavailable("too many password checks in progress; try again shortly", 1)
    }
}

impl From<crate::crypto::CheckLost> for Error {
    fn from(e: crate::crypto::CheckLost) -> Self {
        Error::internal(&e)
    }
}
