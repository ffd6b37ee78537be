//! What both Outpost daemons (`outpost-agent`, `outpost-controller`) share under a
//! supervisor. It knows nothing of sites or databases: each daemon says what alive means.
//!
//! Under systemd (`Type=notify`), [`ready_then_watch`] tells systemd
//! the daemon is ready and, when the unit has `WatchdogSec`, pings the watchdog at half
//! its interval for as long as the daemon's own check says it is alive. A daemon wedged
//! on its disk or database stops pinging and systemd restarts it. Outside systemd (no
//! `NOTIFY_SOCKET`) the messages go nowhere.

use std::future::Future;
use std::time::Duration;

use sd_notify::NotifyState;

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
