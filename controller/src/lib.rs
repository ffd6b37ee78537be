//! Outpost controller: the operator's central system.
//!
//! # Layout
//! - [`config`]: the TOML config, with defaults for everything.
//! - [`db`]: SQLite storage, one module per aggregate (`tenant`, `user`, `subscriber`,
//!   `site`, `nas`, `session`, `audit`), the single writer and the reader pool.
//! - [`scope`]: who may see and do what — [`scope::Actor`], [`scope::Scope`],
//!   [`scope::Permission`]. Every scoped query takes a `Scope`.
//! - [`http`]: the `/api/v1` JSON API; each module has a `router()`, merged in
//!   [`http::api_router`], documented as OpenAPI at `/api/v1/openapi.json`.
//! - [`money`]: decimal amounts on the wire, integer minor units in SQLite.
//! - [`billing`]: money operations (add balance, renew, payments, refunds, the expiry
//!   sweep), each one transaction of ledger rows plus an audit entry.
//! - [`crypto`]: argon2id passwords, hashed bearer secrets, sealed recoverable secrets.
//! - [`bootstrap`]: opening the data directory, the first operator admin, the demo data.
//! - `main.rs`: the `outpost-controller` CLI.

pub mod billing;
pub mod bootstrap;
pub mod config;
pub mod crypto;
pub mod db;
pub mod demo;
pub mod error;
pub mod http;
pub mod jobs;
pub mod money;
pub mod scope;
pub mod security;

pub use http::AppState;

/// The whole HTTP application. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: the client address comes from
/// the socket.
pub fn app(state: AppState) -> axum::Router {
    http::app_with_spec(state).0
}
