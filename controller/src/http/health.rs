//! What an operator's supervisor and monitoring read: `/healthz` (the process answers),
//! `/readyz` (it can serve: the schema is this binary's, the database answers, every
//! listener is bound) and `/metrics` (Prometheus text, to the addresses
//! `[http] metrics_allow` names; anyone else gets 404). None of them needs a login and
//! none says anything about a tenant: counts are installation-wide, with no
//! per-subscriber or per-reseller labels. All three are deliberately outside the
//! OpenAPI document: they are for supervisors and scrapers, not API clients.
//!
//! Metrics are in the Prometheus text format (version 0.0.4, `prometheus-client`'s
//! encoder): request counts and latencies kept in memory, and what the database says
//! at scrape time (agents by sync state, the largest revision lag, subscribers by
//! status, WAN targets by state).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::AppState;
use crate::db;

/// An agent not heard from for this long counts as silent: its long poll comes back at
/// least every minute.
const SILENT_AFTER_SECS: i64 = 180;

/// The process's own readiness and request figures, shared by every listener.
pub struct Health {
    listening: AtomicBool,
    registry: Registry,
    requests: Family<HttpLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    /// The route's template (`/api/v1/subscribers/{id}`), never the path asked for;
    /// `unmatched` for what no route answers.
    route: String,
    /// `2xx`, `4xx`, …
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

fn latency_buckets() -> Histogram {
    // 1 ms to about 16 s; long polls land in the top buckets by design.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

impl Default for Health {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("outpost_controller");
        let requests = Family::<HttpLabels, Counter>::default();
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_buckets as fn() -> Histogram,
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status class",
            requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route",
            prometheus_client::registry::Unit::Seconds,
            duration.clone(),
        );
        Health {
            listening: AtomicBool::new(false),
            registry,
            requests,
            duration,
        }
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("listening", &self.listening)
            .finish_non_exhaustive()
    }
}

impl Health {
    /// Called once every listener is bound: from then on `/readyz` can say ready.
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }
}

/// Counts and times every request by its route template (middleware for every router).
pub async fn track(State(health): State<Arc<Health>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    // Any token is a valid method: a client inventing them must not invent series.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = format!("{}xx", resp.status().as_u16() / 100);
    health
        .duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    health
        .requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status,
        })
        .inc();
    resp
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router() -> Router<AppState> {
    outpost_daemon::health_router(get(readyz), get(metrics))
}

async fn readyz(State(st): State<AppState>) -> Response {
    let schema = st
        .db
        .read(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?))
        .await
        .map_err(|e| format!("the database does not answer: {e}"))
        .and_then(|v| {
            let want = db::schema_version() as i64;
            if v == want {
                Ok(())
            } else {
                Err(format!("schema version {v}, this binary's is {want}"))
            }
        });
    let listeners = if st.health.listening() {
        Ok(())
    } else {
        Err("not every listener is bound yet".to_string())
    };
    outpost_daemon::readiness([("database", &schema), ("listeners", &listeners)])
}

/// What the database says at scrape time.
struct Census {
    agents: db::agent::Census,
    subscribers: Vec<(protocol::SubscriberStatus, i64)>,
    wan: Vec<(String, i64)>,
}

use outpost_protocol as protocol;

async fn metrics(State(st): State<AppState>, req: Request) -> Response {
    // By the socket's address only: a forwarded header could be anyone's.
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let allowed =
        peer.is_some_and(|ip| st.config.http.metrics_allow.iter().any(|n| n.contains(&ip)));
    if !allowed {
        return crate::error::Error::not_found("route").into_response();
    }
    let census = st
        .db
        .read(|c| {
            let root = db::tenant::get(c, crate::scope::OPERATOR_TENANT)?
                .ok_or_else(|| crate::error::Error::not_found("the operator tenant"))?;
            let scope = crate::scope::Scope::Subtree {
                tenant_id: root.id,
                path: root.path,
            };
            let now = db::now();
            Ok(Census {
                agents: db::agent::census(c, now, SILENT_AFTER_SECS)?,
                subscribers: db::subscriber::counts(c, &scope, now, now)?.0,
                wan: db::wan::targets_by_state(c)?,
            })
        })
        .await;
    let census = match census {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let mut reg = Registry::with_prefix("outpost_controller");
    let agents = Family::<StateLabel, Gauge>::default();
    let a = census.agents;
    for (state, n) in [
        ("in_sync", a.in_sync),
        ("behind", a.behind),
        ("digest_mismatch", a.digest_mismatch),
        ("silent", a.silent),
    ] {
        agents
            .get_or_create(&StateLabel {
                state: state.into(),
            })
            .set(n as i64);
    }
    reg.register(
        "agents",
        "Live (enrolled, not revoked) agents by sync state",
        agents,
    );
    let lag = Gauge::<i64>::default();
    lag.set(a.max_revision_lag as i64);
    reg.register(
        "agent_revision_lag_max",
        "The most change-feed revisions any live agent is behind its site",
        lag,
    );
    let subs = Family::<StatusLabel, Gauge>::default();
    for s in protocol::SubscriberStatus::ALL {
        let n = census
            .subscribers
            .iter()
            .find(|(k, _)| *k == s)
            .map_or(0, |(_, n)| *n);
        subs.get_or_create(&StatusLabel {
            status: s.as_str().into(),
        })
        .set(n);
    }
    reg.register("subscribers", "Subscribers by status", subs);
    let wan = Family::<StateLabel, Gauge>::default();
    for state in ["up", "down"] {
        let n = census
            .wan
            .iter()
            .find(|(k, _)| k == state)
            .map_or(0, |(_, n)| *n);
        wan.get_or_create(&StateLabel {
            state: state.into(),
        })
        .set(n);
    }
    reg.register(
        "wan_targets",
        "Customer routers under WAN checks, by their last state",
        wan,
    );
    let mut out = String::new();
    let encoded = prometheus_text::encode(&mut out, &st.health.registry)
        .and_then(|()| prometheus_text::encode(&mut out, &reg));
    if let Err(e) = encoded {
        return crate::error::Error::internal(&std::io::Error::other(e.to_string()))
            .into_response();
    }
    ([(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], out).into_response()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}
