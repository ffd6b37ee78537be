//! Sync with the controller: the agent initiates everything.
//!
//! - [`run_state`] long-polls the change feed, applies each answer in one local
//!   transaction, then acknowledges the revision with the digest of what it enforces.
//! - [`run_outbox`] ships the journal in batches, in order; the controller stores each
//!   (agent, seq) once, so a batch whose answer was lost is simply sent again.
//!
//! Both back off (1 s doubling to 60 s) while the controller is unreachable; the store
//! keeps the site working meanwhile.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use outpost_protocol as proto;
use tokio::sync::watch;

use crate::ErrorChain;
use crate::store::Store;

/// What the site enforces, as the enforcement loop last published it on a
/// [`watch`] channel. Sync only reads it: it acknowledges what is enforced, not merely
/// what was applied to the store, so a block that did not reach the kernel shows at the
/// controller as drift.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enforced {
    /// The store revision the published enforcement was decided from.
    pub revision: u64,
    /// Subscribers cut off by their status whose block is not (all) in the kernel: the
    /// digest reports them as active, which is what the site does to them.
    pub unenforced: HashSet<i64>,
}

/// How long an acknowledgement waits for enforcement to catch up with an applied
/// state. A full rebuild of a large site takes seconds; past this the ack goes out with
/// what is enforced, and the digest shows the difference.
const ENFORCE_WAIT: Duration = Duration::from_secs(60);

/// The controller's agent API. Every call holds a read guard on the HTTP client for
/// as long as it runs, so [`Client::switch`] (a key rotation moving the calls to a new
/// tunnel) waits for the calls in flight, the long poll included, and the calls after
/// it open new connections rather than reuse ones bound to the old tunnel's address.
#[derive(Clone)]
pub struct Client {
    http: Arc<tokio::sync::RwLock<reqwest::Client>>,
    base: String,
    credential: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The controller could not be reached or did not answer in time.
    #[error("controller unreachable")]
    Transport(#[from] reqwest::Error),
    /// The controller answered with an error.
    #[error("controller answered {status}: {body}")]
    Status { status: u16, body: String },
    /// Applying to the local store failed.
    #[error("local store")]
    Store(#[from] crate::store::StoreError),
    /// A blocking task failed.
    #[error("local task")]
    Join(#[from] tokio::task::JoinError),
}

impl Client {
    pub fn new(base: &str, credential: &str) -> Client {
        Client {
            http: Arc::new(tokio::sync::RwLock::new(Self::http())),
            base: base.trim_end_matches('/').to_string(),
            credential: credential.to_string(),
        }
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client builds")
    }

    /// Runs `f` once no call is in flight, holding new ones back until it returns,
    /// then starts over with a new connection pool. Calls keep their order: they queue
    /// behind the switch (tokio's lock is fair).
    pub async fn switch<T>(&self, f: impl FnOnce() -> T) -> T {
        let mut http = self.http.write().await;
        let out = f();
        *http = Self::http();
        out
    }

    fn req(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        http.request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.credential)
            .header(proto::PROTOCOL_HEADER, proto::PROTOCOL_VERSION.to_string())
    }

    async fn check(resp: reqwest::Response) -> Result<reqwest::Response, SyncError> {
        if resp.status().is_success() {
            Ok(resp)
        } else {
            let status = resp.status().as_u16();
            Err(SyncError::Status {
                status,
                body: resp.text().await.unwrap_or_default(),
            })
        }
    }

    pub async fn state(&self, since: u64, wait: u32) -> Result<proto::StateResponse, SyncError> {
        let http = self.http.read().await;
        let resp = self
            .req(
                &http,
                reqwest::Method::GET,
                &format!("{}?since={since}&wait={wait}", proto::paths::STATE),
            )
            .timeout(Duration::from_secs(wait as u64 + 15))
            .send()
            .await?;
        Ok(Self::check(resp).await?.json().await?)
    }

    pub async fn ack(&self, ack: &proto::Ack) -> Result<(), SyncError> {
        let http = self.http.read().await;
        let resp = self
            .req(&http, reqwest::Method::POST, proto::paths::ACK)
            .timeout(Duration::from_secs(15))
            .json(ack)
            .send()
            .await?;
        Self::check(resp).await.map(|_| ())
    }

    pub async fn events(
        &self,
        batch: &proto::EventBatch,
    ) -> Result<proto::EventsAccepted, SyncError> {
        let http = self.http.read().await;
        let resp = self
            .req(&http, reqwest::Method::POST, proto::paths::EVENTS)
            .timeout(Duration::from_secs(30))
            .json(batch)
            .send()
            .await?;
        Ok(Self::check(resp).await?.json().await?)
    }

    /// Begins a key rotation: the controller's parameters for the new key's tunnel.
    pub async fn rotate_key(&self, new_public_key: &str) -> Result<proto::TunnelParams, SyncError> {
        let http = self.http.read().await;
        let resp = self
            .req(&http, reqwest::Method::POST, proto::paths::ROTATE)
            .timeout(Duration::from_secs(15))
            .json(&proto::RotateKey {
                new_public_key: new_public_key.to_string(),
            })
            .send()
            .await?;
        Ok(Self::check(resp).await?.json().await?)
    }

    /// Finishes a key rotation (called through the new key's tunnel).
    pub async fn confirm_rotation(&self, new_public_key: &str) -> Result<(), SyncError> {
        let http = self.http.read().await;
        let resp = self
            .req(&http, reqwest::Method::POST, proto::paths::ROTATE_CONFIRM)
            .timeout(Duration::from_secs(15))
            .json(&proto::RotateKey {
                new_public_key: new_public_key.to_string(),
            })
            .send()
            .await?;
        Self::check(resp).await.map(|_| ())
    }

    /// Enrollment, before the agent has a credential.
    pub async fn enroll(
        base: &str,
        req: &proto::EnrollRequest,
    ) -> Result<proto::EnrollResponse, SyncError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let resp = http
            .post(format!(
                "{}{}",
                base.trim_end_matches('/'),
                proto::paths::ENROLL
            ))
            .timeout(Duration::from_secs(30))
            .json(req)
            .send()
            .await?;
        Ok(Self::check(resp).await?.json().await?)
    }
}

/// What `status` reports about the link to the controller.
#[derive(Default)]
pub struct Link {
    pub reachable: AtomicBool,
    /// Long polls answered and acknowledged (metrics: `outpost_agent_sync_polls_total`).
    pub polls_ok: AtomicU64,
    /// Long polls or acknowledgements that failed.
    pub polls_failed: AtomicU64,
    /// Unix seconds of the last acknowledged poll; 0 before the first.
    pub last_sync_at: AtomicI64,
    /// Events the controller has stored from this agent since it started.
    pub events_shipped: AtomicU64,
    /// Deliveries of the outbox that failed.
    pub deliveries_failed: AtomicU64,
}

struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_secs(1))
    }
    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(60));
    }
    fn reset(&mut self) {
        self.0 = Duration::from_secs(1);
    }
}

/// One round: poll, apply, wait for enforcement to catch up, acknowledge. Returns the
/// kind received. With `enforced` (the enforcement loop's channel), the digest
/// acknowledged is of what the kernel enforces; without, of the desired state.
pub async fn sync_once(
    store: &Arc<Store>,
    client: &Client,
    wait: u32,
    enforced: Option<&mut watch::Receiver<Enforced>>,
) -> Result<proto::StateKind, SyncError> {
    let resp = client.state(store.revision(), wait).await?;
    let kind = resp.kind;
    if kind != proto::StateKind::Unchanged {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.apply(&resp)).await??;
        tracing::info!(
            revision = store.revision(),
            ?kind,
            "applied state from the controller"
        );
    }
    let unenforced = match enforced {
        Some(rx) => {
            // Applying woke the enforcement loop; it publishes once it has decided from
            // this revision (or a later one).
            let revision = store.revision();
            let caught_up =
                tokio::time::timeout(ENFORCE_WAIT, rx.wait_for(|e| e.revision >= revision))
                    .await
                    .is_ok_and(|r| r.is_ok());
            if !caught_up {
                tracing::warn!(
                    revision,
                    "enforcement has not caught up with the applied state; the digest will show it"
                );
            }
            rx.borrow().unenforced.clone()
        }
        None => Default::default(),
    };
    let s = store.clone();
    let digest = tokio::task::spawn_blocking(move || s.digest_enforced(&unenforced)).await?;
    client
        .ack(&proto::Ack {
            revision: store.revision(),
            digest,
            agent_version: env!("CARGO_PKG_VERSION").into(),
        })
        .await?;
    let _ = store.set_meta("last_contact_at", &crate::clock::now().to_string());
    Ok(kind)
}

/// Keeps the desired state in step with the controller, for ever.
pub async fn run_state(
    store: Arc<Store>,
    client: Client,
    wait: u32,
    link: Arc<Link>,
    mut enforced: Option<watch::Receiver<Enforced>>,
) {
    let mut backoff = Backoff::new();
    loop {
        match sync_once(&store, &client, wait, enforced.as_mut()).await {
            Ok(_) => {
                link.reachable.store(true, Ordering::Relaxed);
                link.polls_ok.fetch_add(1, Ordering::Relaxed);
                link.last_sync_at
                    .store(crate::clock::now(), Ordering::Relaxed);
                backoff.reset();
            }
            Err(e) => {
                link.reachable.store(false, Ordering::Relaxed);
                link.polls_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %ErrorChain(&e), "sync failed; working from the local store");
                backoff.wait().await;
            }
        }
    }
}

/// Ships one batch if there is one; returns how many were accepted.
pub async fn ship_once(
    store: &Arc<Store>,
    client: &Client,
    batch: usize,
) -> Result<usize, SyncError> {
    let s = store.clone();
    let events = tokio::task::spawn_blocking(move || s.outbox_batch(batch)).await??;
    if events.is_empty() {
        return Ok(0);
    }
    let n = events.len();
    let accepted = client.events(&proto::EventBatch { events }).await?;
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.mark_shipped(accepted.through)).await??;
    Ok(n)
}

/// Ships the outbox for ever, in order, at least once per event (stored once).
pub async fn run_outbox(store: Arc<Store>, client: Client, batch: usize, link: Arc<Link>) {
    let mut backoff = Backoff::new();
    loop {
        match ship_once(&store, &client, batch).await {
            Ok(0) => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(n) => {
                link.events_shipped.fetch_add(n as u64, Ordering::Relaxed);
                backoff.reset();
            }
            Err(e) => {
                link.reachable.store(false, Ordering::Relaxed);
                link.deliveries_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %ErrorChain(&e), backlog = store.backlog(), "event delivery failed; kept in the outbox");
                backoff.wait().await;
            }
        }
    }
}
