//! What an operator's supervisor and monitoring read from a running site: `/healthz`
//! (the process answers), `/readyz` (the store answers, enforcement has reconciled at
//! least once, RADIUS is being served) and `/metrics` (Prometheus text, version 0.0.4).
//!
//! The listener is `[metrics] listen` and may only be a loopback address or the agent's
//! own tunnel address ([`check_listen`], run before the site starts anything): a
//! site router's other addresses face subscribers and NAS, which have no business
//! reading it. There is no login; nothing served names a subscriber, a reseller or a
//! NAS, only site-wide counts.
//!
//! The counts live where they are made ([`radius::Stats`], [`crate::edge::EdgeStats`],
//! [`Link`], [`WanHandle`], the store) as plain atomics; [`Health`] reads them at
//! scrape time as a `prometheus-client` collector, so the RADIUS threads never touch a
//! registry.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::config::Identity;
use crate::edge::EdgeHandle;
use crate::radius::{self, stats};
use crate::store::Store;
use crate::sync::Link;
use crate::wan::{WAN_STATES, WanHandle};

/// The `Content-Type` of what `/metrics` answers.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How long `/readyz` and the watchdog wait for the store to answer a read.
const STORE_ANSWERS_WITHIN: Duration = Duration::from_secs(5);

/// Refuses a metrics listener anyone but the box itself or the controller's side of
/// the tunnel could reach: only a loopback address, or the tunnel address enrolment
/// handed out, will do. Runs before the site opens or binds anything.
pub fn check_listen(addr: SocketAddr, id: &Identity) -> Result<SocketAddr, String> {
    let ip = addr.ip().to_canonical();
    if ip.is_loopback() {
        return Ok(addr);
    }
    let host = |a: &str| -> Option<IpAddr> {
        a.parse::<ipnet::IpNet>()
            .map(|n| n.addr())
            .or_else(|_| a.parse::<IpAddr>())
            .ok()
    };
    let tunnel: Option<IpAddr> = id.tunnel.as_ref().and_then(|t| host(&t.address));
    match tunnel {
        Some(t) if t == ip => Ok(addr),
        // An address of an earlier key: the agent moved with its key, and so does the
        // listener (a rotation must never keep a site from starting).
        Some(t)
            if id
                .former_tunnel_addresses
                .iter()
                .any(|a| host(a) == Some(ip)) =>
        {
            Ok(SocketAddr::new(t, addr.port()))
        }
        Some(t) => Err(format!(
            "metrics.listen {addr} is neither a loopback address nor this agent's tunnel \
             address {t}: /metrics and /readyz are served only there"
        )),
        None => Err(format!(
            "metrics.listen {addr} is not a loopback address, and this agent has no \
             tunnel: /metrics and /readyz are served only on loopback or the tunnel address"
        )),
    }
}

/// The running site's parts that health and metrics read.
#[derive(Clone)]
pub struct Health {
    /// The local store.
    pub store: Arc<Store>,
    /// The RADIUS server (its counters, its threads).
    pub radius: radius::Server,
    /// The enforcement loop.
    pub edge: EdgeHandle,
    /// Sync's view of the controller.
    pub link: Arc<Link>,
    /// WAN checks' counts, when `[wan]` is configured.
    pub wan: Option<Arc<WanHandle>>,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

/// One check's verdict: `Ok`, or what is wrong.
type Check = Result<(), String>;

impl Health {
    /// Whether the store answers a read (on the blocking pool, within a few seconds).
    pub async fn store_answers(&self) -> Check {
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || store.meta("last_contact_at"));
        match tokio::time::timeout(STORE_ANSWERS_WITHIN, read).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!("the store does not answer: {e}")),
            Ok(Err(e)) => Err(format!("the store read failed: {e}")),
            Err(_) => Err("the store did not answer within 5 s".into()),
        }
    }

    fn radius_serving(&self) -> Check {
        if self.radius.threads_running() > 0 {
            Ok(())
        } else {
            Err("no thread is serving the RADIUS sockets".into())
        }
    }

    fn reconciled(&self) -> Check {
        if self.edge.reconciled() > 0 {
            Ok(())
        } else {
            Err("enforcement has not reconciled yet".into())
        }
    }

    /// Every readiness check by name; ready when all are `Ok`.
    pub async fn readiness(&self) -> [(&'static str, Check); 3] {
        [
            ("store", self.store_answers().await),
            ("enforcement", self.reconciled()),
            ("radius", self.radius_serving()),
        ]
    }

    /// Resolves once every readiness check passes: the store answers, enforcement has
    /// reconciled at least once, RADIUS is being served. `run` tells systemd READY=1
    /// then.
    pub async fn wait_ready(&self) {
        self.edge.wait_reconciled().await;
        while !self.readiness().await.iter().all(|(_, c)| c.is_ok()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Alive enough for systemd's watchdog: the store answers and RADIUS is served.
    /// (Enforcement failing is not a reason to be restarted: the loop retries, and a
    /// restart would not fix the kernel.)
    pub async fn alive(&self) -> bool {
        self.store_answers().await.is_ok() && self.radius_serving().is_ok()
    }

    /// The metrics in Prometheus text (version 0.0.4).
    pub fn exposition(&self) -> Result<String, fmt::Error> {
        let mut registry = Registry::with_prefix("outpost_agent");
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        Ok(out)
    }

    /// `/healthz`, `/readyz` and `/metrics`.
    pub fn router(self) -> Router {
        outpost_daemon::health_router(get(readyz), get(metrics)).with_state(Arc::new(self))
    }
}

async fn readyz(State(h): State<Arc<Health>>) -> Response {
    let checks = h.readiness().await;
    outpost_daemon::readiness(checks.iter().map(|(name, c)| (*name, c)))
}

async fn metrics(State(h): State<Arc<Health>>) -> Response {
    match h.exposition() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding the metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Serves [`Health::router`] on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, health: Health) -> std::io::Result<()> {
    axum::serve(listener, health.router()).await
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: i64,
) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, unit, g.metric_type())?)
}

fn family(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(Labels<'_>, u64)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        let child = m.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*v).encode(child)?,
            _ => ConstGauge::new(*v as i64).encode(child)?,
        }
    }
    Ok(())
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Collector for Health {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        // RADIUS: every datagram once, by the code of the reply sent (`none`: dropped)
        // and why.
        let r = self.radius.stats();
        let s = r.snapshot();
        let mut rows: Vec<(Labels<'_>, u64)> = vec![
            (
                vec![("code", "access_accept"), ("reason", "accepted")],
                s.accepts,
            ),
            (
                vec![("code", "accounting_response"), ("reason", "recorded")],
                s.acct_records,
            ),
        ];
        for (reason, n) in r.rejects_by_reason() {
            rows.push((
                vec![
                    ("code", "access_reject"),
                    ("reason", stats::reject_reason_label(reason)),
                ],
                n,
            ));
        }
        for (code, n) in r.retransmissions_by_code() {
            rows.push((vec![("code", code), ("reason", "reply_cache")], n));
        }
        for (reason, n) in [
            ("unknown_nas", s.unknown_nas),
            ("malformed", s.malformed),
            ("bad_authenticator", s.bad_authenticator),
            (
                "missing_message_authenticator",
                s.missing_message_authenticator,
            ),
            ("in_progress", s.duplicates_in_progress),
            ("backend_error", s.backend_errors),
        ] {
            rows.push((vec![("code", "none"), ("reason", reason)], n));
        }
        family(
            &mut e,
            "radius_requests",
            "RADIUS requests handled, by the code of the reply sent (none: dropped) and why",
            MetricType::Counter,
            &rows,
        )?;
        {
            let mut m = e.encode_descriptor(
                "radius_request_duration",
                "Time from a RADIUS request reaching the handler to its reply being ready, by reply code",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (code, h) in stats::REPLY_CODES.iter().zip(&r.latency.0) {
                let labels: Labels<'_> = vec![("code", code)];
                h.encode(m.encode_family(&labels)?)?;
            }
        }

        // The outbox and sync.
        let store = &self.store;
        gauge(
            &mut e,
            "outbox_backlog_events",
            "Events not yet stored by the controller (journaled, or rejects waiting to be)",
            None,
            (store.backlog() + store.deferred() as u64) as i64,
        )?;
        counter(
            &mut e,
            "outbox_dropped_events",
            "Non-accounting events dropped because the outbox was full",
            load(&store.dropped_events),
        )?;
        counter(
            &mut e,
            "outbox_shipped_events",
            "Events the controller stored from this agent since it started",
            load(&self.link.events_shipped),
        )?;
        counter(
            &mut e,
            "outbox_delivery_failures",
            "Deliveries of the outbox that failed (kept and retried)",
            load(&self.link.deliveries_failed),
        )?;
        family(
            &mut e,
            "sync_polls",
            "Long polls of the controller's change feed, by result",
            MetricType::Counter,
            &[
                (vec![("result", "ok")], load(&self.link.polls_ok)),
                (vec![("result", "failed")], load(&self.link.polls_failed)),
            ],
        )?;
        gauge(
            &mut e,
            "sync_revision",
            "The revision of the desired state held in the local store",
            None,
            store.revision() as i64,
        )?;
        let enforced = load(&self.edge.stats().revision);
        gauge(
            &mut e,
            "sync_enforcement_revision_lag",
            "Revisions the store holds that enforcement has not decided from yet",
            None,
            store.revision().saturating_sub(enforced) as i64,
        )?;
        gauge(
            &mut e,
            "sync_last_success_timestamp",
            "When the last poll was answered and acknowledged, Unix time (0: never since start)",
            Some(&Unit::Seconds),
            self.link.last_sync_at.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut e,
            "controller_reachable",
            "1 when the last exchange with the controller succeeded",
            None,
            i64::from(self.link.reachable.load(Ordering::Relaxed)),
        )?;

        // Enforcement.
        let es = self.edge.stats();
        family(
            &mut e,
            "enforcement_applies",
            "nftables applies, full (table replaced) or incremental (elements, then a verify), by result",
            MetricType::Counter,
            &[
                (vec![("kind", "full"), ("result", "ok")], load(&es.full_ok)),
                (
                    vec![("kind", "full"), ("result", "failed")],
                    load(&es.full_failed),
                ),
                (
                    vec![("kind", "incremental"), ("result", "ok")],
                    load(&es.incremental_ok),
                ),
                (
                    vec![("kind", "incremental"), ("result", "failed")],
                    load(&es.incremental_failed),
                ),
            ],
        )?;
        counter(
            &mut e,
            "enforcement_reconciles",
            "Reconciles that ended with the kernel holding what was decided",
            self.edge.reconciled(),
        )?;
        gauge(
            &mut e,
            "enforcement_drift_subscribers",
            "Subscribers the policy blocks whose block is not in the kernel",
            None,
            load(&es.drift) as i64,
        )?;
        gauge(
            &mut e,
            "enforcement_blocked_addresses",
            "Addresses in the walled garden now",
            None,
            load(&es.blocked) as i64,
        )?;
        gauge(
            &mut e,
            "enforcement_healthy",
            "1 when the last apply and verify succeeded",
            None,
            i64::from(self.edge.healthy()),
        )?;

        // The site's state.
        let (subscribers, nas) = store.counts();
        gauge(
            &mut e,
            "subscribers",
            "Subscribers in the desired state",
            None,
            subscribers as i64,
        )?;
        gauge(
            &mut e,
            "nas",
            "NAS clients in the desired state",
            None,
            nas as i64,
        )?;
        gauge(
            &mut e,
            "online_sessions",
            "PPP/IPoE sessions online by accounting",
            None,
            i64::from(store.online_total()),
        )?;

        // WAN checks, when on.
        if let Some(w) = &self.wan {
            let rows: Vec<(Labels<'_>, u64)> = WAN_STATES
                .iter()
                .zip(&w.by_state)
                .map(|((probe, state), n)| (vec![("probe", *probe), ("state", *state)], load(n)))
                .collect();
            family(
                &mut e,
                "wan_targets",
                "Customer-router probes by kind and state after the last sweep",
                MetricType::Gauge,
                &rows,
            )?;
            gauge(
                &mut e,
                "wan_refused_targets",
                "Targets outside the site's subscriber networks, not probed",
                None,
                load(&w.refused) as i64,
            )?;
            counter(
                &mut e,
                "wan_sweeps",
                "WAN-check sweeps finished",
                load(&w.sweeps),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(tunnel: Option<&str>) -> Identity {
        Identity {
            agent_id: 1,
            site_id: 1,
            credential: String::new(),
            wireguard_private_key: String::new(),
            tunnel: tunnel.map(|address| outpost_protocol::TunnelParams {
                address: address.into(),
                controller_public_key: String::new(),
                controller_endpoints: vec![],
                controller_address: "10.66.0.1".into(),
                api_port: 8443,
                persistent_keepalive_secs: 25,
                preshared_key: String::new(),
            }),
            tunnel_interface: None,
            rotation: None,
            former_tunnel_addresses: vec![],
        }
    }

    #[test]
    fn metrics_listen_only_on_loopback_or_the_tunnel_address() {
        let ok = |a: &str, id: &Identity| check_listen(a.parse().unwrap(), id).map(|_| ());
        let none = identity(None);
        let tunnelled = identity(Some("10.66.0.7/32"));
        assert_eq!(ok("127.0.0.1:9108", &none), Ok(()));
        assert_eq!(ok("[::1]:9108", &none), Ok(()));
        assert_eq!(ok("127.0.0.53:0", &tunnelled), Ok(()));
        assert_eq!(ok("10.66.0.7:9108", &tunnelled), Ok(()));
        let err = ok("0.0.0.0:9108", &none).unwrap_err();
        assert!(
            err.contains("metrics.listen 0.0.0.0:9108 is not a loopback address"),
            "{err}"
        );
        let err = ok("10.66.0.8:9108", &tunnelled).unwrap_err();
        assert!(
            err.contains("neither a loopback address nor this agent's tunnel address 10.66.0.7"),
            "{err}"
        );
        assert!(ok("0.0.0.0:9108", &tunnelled).is_err());
        assert!(ok("[::]:9108", &tunnelled).is_err());
        assert!(ok("192.0.2.1:9108", &none).is_err());
    }

    /// A key rotation moves the agent to a new tunnel address; a listen address written
    /// with the old one follows it rather than keep the site from starting, and nothing
    /// else does.
    #[test]
    fn a_former_tunnel_address_follows_the_agent_after_a_rotation() {
        let rotated = Identity {
            former_tunnel_addresses: vec!["10.66.0.7/32".into()],
            ..identity(Some("10.66.0.9/32"))
        };
        assert_eq!(
            check_listen("10.66.0.7:9108".parse().unwrap(), &rotated),
            Ok("10.66.0.9:9108".parse().unwrap())
        );
        assert_eq!(
            check_listen("10.66.0.9:9108".parse().unwrap(), &rotated),
            Ok("10.66.0.9:9108".parse().unwrap())
        );
        assert!(check_listen("10.66.0.8:9108".parse().unwrap(), &rotated).is_err());
        assert!(check_listen("0.0.0.0:9108".parse().unwrap(), &rotated).is_err());
    }
}
