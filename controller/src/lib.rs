//! Outpost controller: the operator's central system.
//!
//! # Layout
//! - [`config`]: the TOML config, with defaults for everything.
//! - [`error`]: the one domain [`error::Error`] (a kind, a stable code, a message, an
//!   optional security event) every operation and query returns; no HTTP in it.
//! - [`security`]: who acted ([`security::Who`]) and refusals worth recording
//!   ([`security::SecurityEvent`]), shared by the error and the audit log.
//! - [`scope`]: who may see and do what — [`scope::Actor`], [`scope::Scope`],
//!   [`scope::Permission`]. Every scoped query takes a `Scope`.
//! - [`db`]: SQLite storage, the single writer (group commit) and the reader pool, one module per
//!   aggregate: `tenant`, `user`, `subscriber`, `site`, `nas`, `plan`, `brand`,
//!   `ledger`, `session`, `audit`, `retention`, `throttle` (failed logins, kept across
//!   restarts), `notice` (notices for subscribers, and who each reaches), `wan` (CPE state and outages from the agents' WAN checks), `snapshot`
//!   (subscribers by status per day, for the reports), and `agent` (split into
//!   `enrollment`, `feed` and `events`). `row` declares a stored row once
//!   (`stored_row!`: the struct, its columns and its reader) and reads one row by id
//!   inside a scope (`owned_row`).
//! - [`ops`]: the changes people make, each a plain function over the write
//!   transaction that also writes its audit entry (`resellers`: resellers and their
//!   brand; `sites`: sites, NAS, enrollment tokens and their revocation; `plans`: plans and rate cards;
//!   `subscribers`: creating and changing one, and bulk actions; `users`: creating
//!   and changing one; `notices`: posting, changing and taking one down). Their handlers parse,
//!   call and render; `auth`: logging in and impersonating, shared by the API and the
//!   panel (`http::auth` writes tokens and password changes inline).
//! - [`money`]: decimal amounts on the wire, integer minor units in SQLite.
//! - [`billing`]: money operations (add balance, renew, payments, refunds, the expiry
//!   sweep), each one transaction of ledger rows plus an audit entry.
//! - [`http`]: the JSON API; each module has a `router()`, merged in
//!   [`http::api_router`], documented as OpenAPI at `/api/v1/openapi.json`. People's
//!   `/api/v1` routes by aggregate (`auth`, `resellers`, `users`, `subscribers`,
//!   `sites`, `plans`, `balances`, `ledger`, `audit`, `wan`); the agents' `/agent/v1` routes
//!   in `agent_api`; `http::error` maps an error's kind to a status and renders the
//!   error body; `AppState::list_page` and `AppState::read_scoped` are the list and read
//!   shapes handlers share.
//! - [`panel`]: the web panel under `/panel`, server-rendered (askama templates in
//!   `panel/templates`, stylesheet and script compiled in), branded by the request's
//!   Host, calling the same `ops`, `billing` and scoped reads as the API; its own
//!   router, merged in [`app`].
//! - [`portal`]: the subscriber self-care portal under `/portal` (login with the
//!   subscriber's own PPPoE credential, its home page, its password), branded by Host
//!   like the panel, on sessions of its own; every read takes a
//!   [`portal::SubscriberScope`]. Its own router, merged in [`app`].
//! - [`db::paging`]: every list's `cursor` and `limit` ([`db::Paging`], [`db::Page`]), and
//!   `list_filter!`, which declares a list's query with them.
//! - [`tunnel`]: the WireGuard management plane's hub (`outpost-wg` brings the
//!   interface up): the controller's key, the start-up overlap checks, the peers of the
//!   live agents, and [`tunnel::PeerChange`]s that enrolment, revocation and key
//!   rotation (`db/agent/rotation.rs`, make before break on a second overlay address)
//!   decide in their transactions. [`agent_app`] is the router served on the tunnel
//!   address.
//! - [`crypto`]: argon2id passwords (checked a few at a time on the
//!   [`crypto::PasswordGate`]'s own threads), hashed bearer secrets, sealed recoverable
//!   secrets.
//! - [`bootstrap`]: opening the data directory, the first operator admin, operator
//!   provisioning and password resets, and the CLI's audit and ledger checks.
//! - [`demo`]: the sample installation `serve --demo` seeds.
//! - [`jobs`]: the background expiry sweep (followed by the day's subscribers-by-status
//!   snapshot and the expiry reminders) and the retention sweep.
//! - [`messaging`]: messages to subscribers per reseller — providers (generic HTTP,
//!   Twilio-style, WhatsApp Cloud, SMTP), sandboxed `{{field}}` templates, the triggers
//!   called inside the events' transactions, and the outbox worker (retries, rate
//!   limit, WhatsApp→SMS fallback, crash recovery). Storage in `db::messages`, changes
//!   in `ops::messaging`, the API in `http::messaging`.
//! - `main.rs`: the `outpost-controller` CLI.

pub mod backup;
pub mod billing;
pub mod bootstrap;
pub mod config;
pub mod crypto;
pub mod db;
pub mod demo;
pub mod error;
pub mod http;
pub mod jobs;
pub mod messaging;
pub mod money;
pub mod ops;
pub mod panel;
pub mod portal;
pub mod scope;
pub mod security;
pub mod tunnel;
pub mod wire;

pub use http::AppState;

/// The public listener's HTTP application: the panel, `/api/v1` and
/// `/agent/v1/enroll`, plus the rest of the agent API when no tunnel is configured.
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the client
/// address comes from the socket.
pub fn app(state: AppState) -> axum::Router {
    http::app_with_spec(state).0
}

/// The tunnel listener's application (the agent API but enrolment), served on the
/// controller's tunnel address; the same `connect_info` serving as [`app`], which the
/// agent check needs.
pub fn agent_app(state: AppState) -> axum::Router {
    http::agent_router(state)
}
