//! The whole agent of one site, wired: [`Site::start`] opens the store, starts the
//! enforcement loop (nftables and shaping when configured), the CoA dispatcher, the
//! suspended page, sync and event delivery, and the RADIUS listeners, and returns a
//! [`SiteHandle`] that knows their addresses and stops them all.
//!
//! `main.rs` runs it as a daemon; tests start it inside their own process (port 0
//! everywhere, enforcement and shaping off, no root).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};

use crate::coa::{CoaClient, CoaConfig};
use crate::config::{Config, Identity};
use crate::edge::{self, EdgeHandle};
use crate::store::{Store, StoreError};
use crate::sync::{self, Client, Link};
use crate::{ErrorChain, enforce, health, portal, radius, shape, wan};

/// Why a site could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// The local store could not be opened.
    #[error("opening the local store {path}")]
    Store {
        /// The database file.
        path: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// A socket could not be bound.
    #[error("binding {what} on {addr}")]
    Bind {
        /// Which listener: RADIUS auth, RADIUS accounting, CoA, the suspended page.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CoA client could not bind its socket.
    #[error("binding the CoA socket on {addr}")]
    Coa {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: crate::coa::Error,
    },
    /// nftables enforcement could not be set up.
    #[error("nftables enforcement")]
    Enforce(#[source] enforce::Error),
    /// The RADIUS server stopped on a socket error.
    #[error("RADIUS server")]
    Radius(#[source] radius::Error),
    /// WAN checks could not open their raw sockets.
    #[error("WAN checks")]
    Wan(#[source] std::io::Error),
    /// A task of the site panicked.
    #[error("a site task panicked")]
    Panicked(#[source] tokio::task::JoinError),
    /// The tunnel to the controller could not be brought up.
    #[error("the tunnel to the controller")]
    Tunnel(#[source] crate::wg::Error),
    /// `[metrics] listen` names an address others could reach.
    #[error("{0}")]
    MetricsListen(String),
}

/// Result of this module.
pub type Result<T, E = SiteError> = std::result::Result<T, E>;

/// Starts sites; see [`Site::start`].
pub struct Site;

/// A running site: where it listens, what it holds, and how to stop it.
pub struct SiteHandle {
    /// Where Access-Requests are answered (the bound address: port 0 was resolved).
    pub auth_addr: SocketAddr,
    /// Where Accounting-Requests are answered.
    pub acct_addr: SocketAddr,
    /// Where the suspended page listens, when enforcement is configured.
    pub portal_addr: Option<SocketAddr>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served, when `[metrics]` is set.
    pub metrics_addr: Option<SocketAddr>,
    health: health::Health,
    store: Arc<Store>,
    link: Arc<Link>,
    edge: EdgeHandle,
    server: radius::Server,
    /// The RADIUS server's task; `None` once [`SiteHandle::failed`] has seen it end.
    radius: Option<JoinHandle<radius::Result<()>>>,
    tasks: JoinSet<()>,
    wan: Arc<wan::WanHandle>,
    /// The tunnel to the controller (taken down with the site).
    tunnel: Option<Arc<crate::wg::Tunnel>>,
}

/// What `outpost-agent status` and a test read from a running site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The revision of the desired state held.
    pub revision: u64,
    /// Subscribers in the desired state.
    pub subscribers: usize,
    /// NAS clients in the desired state.
    pub nas: usize,
    /// PPP/IPoE sessions online by accounting.
    pub online_sessions: u32,
    /// Events not yet stored by the controller.
    pub backlog: u64,
    /// Whether the last exchange with the controller succeeded.
    pub controller_reachable: bool,
    /// Whether the last enforcement apply and verify succeeded.
    pub enforcement_healthy: bool,
    /// RADIUS requests answered or dropped so far.
    pub radius_requests: u64,
    /// WAN-check sweeps finished (0 when WAN checks are off).
    pub wan_sweeps: u64,
}

impl Site {
    /// Starts everything `cfg` asks for. Enforcement runs its first reconcile from the
    /// local store before the controller is asked anything, so a restarted agent
    /// enforces at once, reachable controller or not; RADIUS listens before this
    /// returns.
    pub async fn start(cfg: &Config, id: &Identity) -> Result<SiteHandle> {
        // Before anything is opened or bound: a refused listener changes nothing.
        let metrics_listen = match &cfg.metrics {
            Some(m) => {
                let at = health::check_listen(m.listen, id).map_err(SiteError::MetricsListen)?;
                if at != m.listen {
                    tracing::warn!(configured = %m.listen, serving = %at,
                        "metrics.listen names this agent's tunnel address before a key rotation; serving on its address now (update agent.toml)");
                }
                Some(at)
            }
            None => None,
        };
        let path = cfg.state_dir.join("agent.db");
        let store = Arc::new(Store::open(&path, cfg.sync.max_outbox).map_err(|source| {
            SiteError::Store {
                path: path.display().to_string(),
                source,
            }
        })?);
        tracing::info!(
            site = id.site_id,
            agent = id.agent_id,
            revision = store.revision(),
            subscribers = store.counts().0,
            "outpost-agent starting from the local store"
        );
        // The tunnel comes up from the state dir alone: no word from the controller is
        // needed, so a site restarted while it is down has its tunnel back at once.
        let tunnel = match &cfg.tunnel {
            Some(t) => {
                let (t, id) = (t.clone(), id.clone());
                Some(Arc::new(
                    tokio::task::spawn_blocking(move || crate::wg::Tunnel::up(&t, &id))
                        .await
                        .map_err(SiteError::Panicked)?
                        .map_err(SiteError::Tunnel)?,
                ))
            }
            None => None,
        };
        let mut tasks = JoinSet::new();
        let (edge, portal_addr) = start_edge(cfg, &store, &mut tasks).await?;
        let wan = Arc::new(wan::WanHandle::default());
        if let Some(w) = &cfg.wan {
            let pinger = wan::Pinger::open(w.recv_buffer_bytes).map_err(SiteError::Wan)?;
            tasks.spawn(wan::run(store.clone(), w.clone(), pinger, wan.clone()));
        }
        tasks.spawn(flush_deferred(store.clone()));
        let client = Client::new(&cfg.controller_url, &id.credential);
        let link = Arc::new(Link::default());
        if let Some(t) = &tunnel {
            tasks.spawn(crate::wg::rekey_while_unreachable(t.clone(), link.clone()));
            tasks.spawn(crate::wg::run_rotation(
                t.clone(),
                client.clone(),
                cfg.state_dir.clone(),
                id.clone(),
            ));
        }
        tasks.spawn(sync::run_state(
            store.clone(),
            client.clone(),
            cfg.sync.wait_secs,
            link.clone(),
            Some(edge.enforced()),
        ));
        tasks.spawn(sync::run_outbox(
            store.clone(),
            client,
            cfg.sync.batch,
            link.clone(),
        ));
        let bind = |what, addr| {
            bind_udp(addr, cfg.radius.recv_buffer_bytes).map_err(|source| SiteError::Bind {
                what,
                addr,
                source,
            })
        };
        let auth = bind("RADIUS auth", cfg.radius.auth_listen)?;
        let acct = bind("RADIUS accounting", cfg.radius.acct_listen)?;
        let local = |s: &tokio::net::UdpSocket, what, addr| {
            s.local_addr()
                .map_err(|source| SiteError::Bind { what, addr, source })
        };
        let auth_addr = local(&auth, "RADIUS auth", cfg.radius.auth_listen)?;
        let acct_addr = local(&acct, "RADIUS accounting", cfg.radius.acct_listen)?;
        // Bound before RADIUS starts, so a failure here leaves no server running.
        let metrics = match metrics_listen {
            Some(at) => {
                let bind_err = |source| SiteError::Bind {
                    what: "the metrics listener",
                    addr: at,
                    source,
                };
                let listener = tokio::net::TcpListener::bind(at).await.map_err(bind_err)?;
                let addr = listener.local_addr().map_err(bind_err)?;
                Some((listener, addr))
            }
            None => None,
        };
        let server = radius::Server::new(store.clone(), radius::Config::default());
        let radius = {
            let server = server.clone();
            tokio::spawn(async move { server.run(auth, acct).await })
        };
        let health = health::Health {
            store: store.clone(),
            radius: server.clone(),
            edge: edge.clone(),
            link: link.clone(),
            wan: cfg.wan.is_some().then(|| wan.clone()),
        };
        let metrics_addr = metrics.map(|(listener, addr)| {
            let h = health.clone();
            tasks.spawn(async move {
                if let Err(e) = health::serve(listener, h).await {
                    tracing::error!(error = %ErrorChain(&e), "the metrics listener stopped");
                }
            });
            addr
        });
        Ok(SiteHandle {
            auth_addr,
            acct_addr,
            portal_addr,
            metrics_addr,
            health,
            store,
            link,
            edge,
            server,
            radius: Some(radius),
            tasks,
            wan,
            tunnel,
        })
    }
}

impl SiteHandle {
    /// The local store the site runs from.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// What `/readyz` and `/metrics` read.
    pub fn health(&self) -> &health::Health {
        &self.health
    }

    /// Resolves once the site is ready to serve ([`health::Health::wait_ready`]).
    pub async fn ready(&self) {
        self.health.wait_ready().await
    }

    /// The site's state now.
    pub fn status(&self) -> Status {
        let (subscribers, nas) = self.store.counts();
        Status {
            revision: self.store.revision(),
            subscribers,
            nas,
            online_sessions: self.store.online_total(),
            // Deferred rejects are not stored by the controller either.
            backlog: self.store.backlog() + self.store.deferred() as u64,
            controller_reachable: self.link.reachable.load(Ordering::Relaxed),
            enforcement_healthy: self.edge.healthy(),
            radius_requests: self.server.stats().snapshot().requests,
            wan_sweeps: self.wan.sweeps.load(Ordering::Relaxed),
        }
    }

    /// Resolves when the RADIUS server stops on its own, which is only on a socket
    /// error: the daemon then exits rather than run a site that cannot answer.
    /// After it resolved once it never resolves again.
    pub async fn failed(&mut self) -> SiteError {
        let Some(task) = self.radius.as_mut() else {
            return std::future::pending().await;
        };
        let ended = task.await;
        self.radius = None;
        match ended {
            Ok(Ok(())) => SiteError::Radius(radius::Error::Io {
                op: "serve",
                source: std::io::Error::other("the RADIUS server stopped"),
            }),
            Ok(Err(e)) => SiteError::Radius(e),
            Err(e) => SiteError::Panicked(e),
        }
    }

    /// Stops every task the site started and waits until they have ended and the
    /// RADIUS threads have let go of their sockets. Enforcement stays in the kernel:
    /// stopping the agent never lets blocked subscribers through.
    pub async fn shutdown(mut self) -> Result<()> {
        let radius = match self.radius.take() {
            Some(task) => {
                task.abort();
                Some(task.await)
            }
            None => None,
        };
        self.tasks.abort_all();
        let mut panicked = None;
        while let Some(done) = self.tasks.join_next().await {
            if let Err(e) = done
                && e.is_panic()
            {
                tracing::error!(error = %ErrorChain(&e), "a site task had panicked");
                panicked = Some(e);
            }
        }
        // The threads look up from their sockets every 200 ms.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.server.threads_running() > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    threads = self.server.threads_running(),
                    "RADIUS threads still running after 5 s"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match radius {
            Some(Err(e)) if e.is_panic() => return Err(SiteError::Panicked(e)),
            Some(Ok(Err(e))) => return Err(SiteError::Radius(e)),
            _ => {}
        }
        // What the RADIUS threads deferred (rejects) is journaled before the store goes.
        let store = self.store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.flush_deferred()).await {
            tracing::error!(error = %ErrorChain(&e), "deferred rejects could not be journaled");
        }
        // The last reference (the rekey task has ended): the interface goes down.
        drop(self.tunnel.take());
        if let Some(e) = panicked {
            return Err(SiteError::Panicked(e));
        }
        tracing::info!("site stopped");
        Ok(())
    }
}

/// Journals the rejects the RADIUS threads deferred, every 200 ms, in one transaction
/// each time, off the threads that answer the NAS (see `Store::flush_deferred`).
async fn flush_deferred(store: Arc<Store>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if store.deferred() == 0 {
            continue;
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.flush_deferred()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %ErrorChain(&e), "deferred rejects not journaled; retrying")
            }
            Err(e) => tracing::error!(error = %ErrorChain(&e), "the reject journal task panicked"),
        }
    }
}

/// Starts enforcement: the policy loop (applying through nftables when `[enforce]` is
/// set, shaping when `[shaping]` is), the CoA dispatcher, and the suspended page.
async fn start_edge(
    cfg: &Config,
    store: &Arc<Store>,
    tasks: &mut JoinSet<()>,
) -> Result<(EdgeHandle, Option<SocketAddr>)> {
    let coa = CoaClient::bind(
        cfg.edge.coa_bind,
        CoaConfig {
            attempts: cfg.edge.coa_attempts,
            first_timeout: Duration::from_millis(cfg.edge.coa_first_timeout_ms),
        },
    )
    .await
    .map_err(|source| SiteError::Coa {
        addr: cfg.edge.coa_bind,
        source,
    })?;
    let (coa_tx, coa_rx) = tokio::sync::mpsc::unbounded_channel();
    tasks.spawn(edge::dispatch_coa(coa_rx, Arc::new(coa), store.clone()));
    let firewall: Option<Box<dyn edge::Firewall>> = match &cfg.enforce {
        Some(e) => Some(Box::new(
            enforce::Enforcer::new(e.clone()).map_err(SiteError::Enforce)?,
        )),
        None => None,
    };
    let (edge_loop, handle) = edge::Edge::new(
        store.clone(),
        firewall,
        Some(coa_tx),
        edge::EdgeOptions {
            verify_interval: Duration::from_secs(cfg.edge.verify_interval_secs),
            ..edge::EdgeOptions::default()
        },
    );
    let edge_loop = match &cfg.shaping {
        Some(sh) => edge_loop.with_shaper(shape::Shaper::new(sh.shape_config())),
        None => edge_loop,
    };
    tasks.spawn(edge_loop.run());
    if !handle.reconcile().await {
        tracing::error!("the first enforcement reconcile failed; retrying in the background");
    }
    let mut portal_addr = None;
    if let Some(e) = &cfg.enforce {
        let addr = SocketAddr::new(cfg.edge.portal_bind, e.portal_port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SiteError::Bind {
                what: "the suspended page",
                addr,
                source,
            })?;
        portal_addr = Some(listener.local_addr().unwrap_or(addr));
        let portal = portal::Portal {
            store: store.clone(),
            edge: handle.clone(),
            fallback_name: "Your internet provider".into(),
        };
        tasks.spawn(async move {
            if let Err(e) = portal::serve(listener, portal).await {
                tracing::error!(error = %ErrorChain(&e), "the suspended page stopped");
            }
        });
    }
    Ok((handle, portal_addr))
}

/// A non-blocking UDP socket with the receive buffer asked for (capped by the kernel).
fn bind_udp(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_recv_buffer_size(recv_buffer)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}
