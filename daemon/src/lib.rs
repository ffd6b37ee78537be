//! What both Outpost daemons (`outpost-agent`, `outpost-controller`) share under a
//! supervisor. It knows nothing of sites or databases: each daemon says what alive means.
//!
//! Under systemd (`Type=notify`), [`ready_then_watch`] tells systemd
//! the daemon is ready and, when the unit has `WatchdogSec`, pings the watchdog at half
//! its interval for as long as the daemon's own check says it is alive. A daemon wedged
//! on its disk or database stops pinging and systemd restarts it. Outside systemd (no
//! `NOTIFY_SOCKET`) the messages go nowhere.
//!
//! For probes over HTTP, [`health_router`] serves `/healthz` (the process answers),
//! `/readyz` and `/metrics` with the daemon's handlers for the last two, and
//! [`readiness`] is the answer `/readyz` gives for the daemon's named checks.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use sd_notify::NotifyState;
use serde_json::json;

/// `/healthz` (alive: the process answers), and `/readyz` and `/metrics` served by the
/// daemon's own handlers.
pub fn health_router<S>(readyz: MethodRouter<S>, metrics: MethodRouter<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({ "status": "alive" })) }),
        )
        .route("/readyz", readyz)
        .route("/metrics", metrics)
}

/// The answer of `/readyz` for the daemon's named checks: 200 and `"status": "ready"`
/// when every check passed, else 503 and `"not_ready"`; `"checks"` gives each one's
/// verdict, `"ok"` or what is wrong.
pub fn readiness<'a>(
    checks: impl IntoIterator<Item = (&'a str, &'a Result<(), String>)>,
) -> Response {
    let mut ready = true;
    let checks = checks
        .into_iter()
        .map(|(name, c)| {
            ready &= c.is_ok();
            let verdict = match c {
                Ok(()) => json!("ok"),
                Err(e) => json!(e),
            };
            (name.to_string(), verdict)
        })
        .collect::<serde_json::Map<_, _>>();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": checks,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

/// Tells systemd `daemon` ("agent", "controller") is ready, then pings the watchdog
/// each time `alive` answers `Ok` (it is given the ping interval, to bound its own
/// wait); an `Err` is logged with its reason and the ping skipped. Returns at once when
/// the unit has no watchdog; otherwise runs for as long as the daemon does.
pub async fn ready_then_watch<F, Fut>(daemon: &str, mut alive: F)
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!(error = %e, "could not tell systemd the {daemon} is ready");
    }
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = interval / 2;
    tracing::info!(
        every_ms = every.as_millis() as u64,
        "systemd watchdog enabled"
    );
    loop {
        tokio::time::sleep(every).await;
        match alive(every).await {
            Ok(()) => {
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            }
            Err(why) => tracing::error!("{why}; not pinging the watchdog"),
        }
    }
}
