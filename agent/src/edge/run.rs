//! The enforcement loop: applies each [`Enforcement`] through a [`Firewall`] (and the
//! shaper), publishes what is enforced, and queues [`CoaJob`]s for the NAS.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use outpost_protocol::{self as proto, Rate};
use tokio::sync::{mpsc, oneshot, watch};

use super::firewall::{Firewall, apply};
use super::policy::{Cutoff, Enforcement, decide};
use crate::ErrorChain;
use crate::clock::now;
use crate::store::{OnlineSession, Store};
use crate::sync::Enforced;

/// What to ask a NAS about a live session (RFC 5176).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoaAction {
    /// Disconnect-Request: the subscriber was cut off.
    Disconnect,
    /// CoA-Request with the new rate: the plan changed.
    ChangeRate(Rate),
}

/// One request for the CoA dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoaJob {
    pub nas: proto::NasState,
    pub session: OnlineSession,
    pub action: CoaAction,
    /// `suspended`, `expired`, `disabled` or `plan_change`.
    pub reason: String,
}

/// What is enforced now, for the suspended page and the acknowledgement digest.
#[derive(Debug, Default)]
pub struct View {
    /// Blocked addresses actually in the kernel, and whose they are.
    pub blocked: BTreeMap<IpAddr, Cutoff>,
    /// Subscribers the enforcement blocks whose block is not (all) in the kernel: the
    /// digest reports them as not enforced, so the controller sees the drift.
    pub unenforced: HashSet<i64>,
    /// Whether the last apply and verify succeeded.
    pub healthy: bool,
}

/// What the loop has done, for metrics (`outpost_agent_enforcement_*`) and readiness.
#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Full reconciles (the table replaced whole) that applied and verified.
    pub full_ok: AtomicU64,
    /// Full reconciles that failed (retried after `retry_after`).
    pub full_failed: AtomicU64,
    /// Incremental applies (element changes, then a verify) that succeeded.
    pub incremental_ok: AtomicU64,
    /// Incremental applies that failed, the verify included: the kernel had drifted
    /// from what the agent put there, or refused the change; a full rebuild follows.
    pub incremental_failed: AtomicU64,
    /// Subscribers the policy blocks whose block is not in the kernel, after the last
    /// reconcile: the drift the acknowledgement's digest reports.
    pub drift: AtomicU64,
    /// Addresses blocked in the kernel after the last reconcile.
    pub blocked: AtomicU64,
    /// The store revision the last reconcile decided from.
    pub revision: AtomicU64,
}

/// Tuning of the loop.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// How often the kernel is checked even when nothing changed.
    pub verify_interval: Duration,
    /// Wait after a failed apply before trying again (a full rebuild).
    pub retry_after: Duration,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        EdgeOptions {
            verify_interval: Duration::from_secs(30),
            retry_after: Duration::from_secs(2),
        }
    }
}

/// The policy loop. Build with [`Edge::new`], start with [`Edge::run`].
pub struct Edge {
    store: Arc<Store>,
    firewall: Option<Box<dyn Firewall>>,
    shaper: Option<crate::shape::Shaper>,
    /// Whether the shaper holds classes (so turning the site setting off clears them).
    shaping_applied: bool,
    coa: Option<mpsc::UnboundedSender<CoaJob>>,
    view: Arc<RwLock<View>>,
    /// What is enforced, for sync's acknowledgement; the edge only writes it.
    enforced: watch::Sender<Enforced>,
    requests: mpsc::Receiver<oneshot::Sender<bool>>,
    options: EdgeOptions,
    stats: Arc<EdgeStats>,
    /// Reconciles that ended with the kernel holding what was decided.
    reconciled: watch::Sender<u64>,
    /// The previous enforcement's standing and rates, to notice transitions.
    last: Option<Enforcement>,
    snapshots_seen: Option<u64>,
    needs_full: bool,
}

/// A handle to a running [`Edge`]: the view, and a way to wait for a reconcile.
#[derive(Clone)]
pub struct EdgeHandle {
    view: Arc<RwLock<View>>,
    enforced: watch::Receiver<Enforced>,
    requests: mpsc::Sender<oneshot::Sender<bool>>,
    stats: Arc<EdgeStats>,
    reconciled: watch::Receiver<u64>,
}

impl EdgeHandle {
    /// Runs a reconcile now and waits for it; `true` when it applied and verified.
    pub async fn reconcile(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(tx).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Who holds `ip` in the walled garden, if anyone.
    pub fn cutoff(&self, ip: IpAddr) -> Option<Cutoff> {
        self.read().blocked.get(&ip).copied()
    }

    /// What the loop publishes after every reconcile: the revision it decided from and
    /// the subscribers whose block is not in the kernel (see [`View::unenforced`]).
    pub fn enforced(&self) -> watch::Receiver<Enforced> {
        self.enforced.clone()
    }

    /// Whether the last apply and verify succeeded.
    pub fn healthy(&self) -> bool {
        self.read().healthy
    }

    /// The loop's counters.
    pub fn stats(&self) -> &Arc<EdgeStats> {
        &self.stats
    }

    /// How many reconciles so far ended with the kernel holding what was decided.
    pub fn reconciled(&self) -> u64 {
        *self.reconciled.borrow()
    }

    /// Resolves once a reconcile has succeeded (at once if one has); never, if the loop
    /// has stopped without one.
    pub async fn wait_reconciled(&self) {
        let mut rx = self.reconciled.clone();
        if rx.wait_for(|n| *n > 0).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl Edge {
    /// A loop over `store`, applying through `firewall` (none: decide and send CoA only,
    /// when the NAS is the only enforcement point) and sending CoA jobs to `coa`.
    pub fn new(
        store: Arc<Store>,
        firewall: Option<Box<dyn Firewall>>,
        coa: Option<mpsc::UnboundedSender<CoaJob>>,
        options: EdgeOptions,
    ) -> (Edge, EdgeHandle) {
        let view = Arc::new(RwLock::new(View::default()));
        let (tx, rx) = mpsc::channel(16);
        let (enforced, enforced_rx) = watch::channel(Enforced::default());
        let (reconciled, reconciled_rx) = watch::channel(0);
        let stats = Arc::new(EdgeStats::default());
        (
            Edge {
                store,
                firewall,
                shaper: None,
                shaping_applied: false,
                coa,
                view: view.clone(),
                enforced,
                requests: rx,
                options,
                stats: stats.clone(),
                reconciled,
                last: None,
                snapshots_seen: None,
                needs_full: true,
            },
            EdgeHandle {
                view,
                enforced: enforced_rx,
                requests: tx,
                stats,
                reconciled: reconciled_rx,
            },
        )
    }

    /// Shapes active subscribers with `shaper` whenever the site's `shaping_enabled`
    /// setting is on (IPoE, the agent on the BNG); off, the NAS shapes from RADIUS.
    pub fn with_shaper(mut self, shaper: crate::shape::Shaper) -> Edge {
        self.shaper = Some(shaper);
        self
    }

    /// Runs for ever.
    pub async fn run(mut self) {
        let mut wait = Duration::ZERO;
        loop {
            // One step per wake, whatever woke it; a caller waiting for it is answered
            // by that step.
            let reply = tokio::select! {
                biased;
                req = self.requests.recv() => match req {
                    Some(reply) => Some(reply),
                    None => return,
                },
                _ = self.store.changed().notified() => None,
                _ = tokio::time::sleep(wait) => None,
            };
            let ok = self.step().await;
            if let Some(reply) = reply {
                let _ = reply.send(ok);
            }
            wait = if ok {
                self.wait_for_next()
            } else {
                self.options.retry_after
            };
        }
    }

    /// Until the next expiry (to the second) or the verify interval, whichever first.
    fn wait_for_next(&self) -> Duration {
        let mut wait = self.options.verify_interval;
        if let Some(at) = self.last.as_ref().and_then(|p| p.next_expiry) {
            let left = at - now();
            let until = if left <= 0 {
                Duration::ZERO
            } else {
                // Wake just after the second turns, so `at <= now` holds.
                Duration::from_secs(left as u64) + Duration::from_millis(5)
            };
            wait = wait.min(until);
        }
        wait
    }

    /// One reconcile: decide, apply, verify, publish, ask the NAS. Returns whether the
    /// kernel now holds what was decided.
    pub async fn step(&mut self) -> bool {
        let store = self.store.clone();
        // Read before the state it decides from, so what is published never claims a
        // newer revision than the one enforced.
        let revision = store.revision();
        let snapshots = store.snapshots();
        let shaping = self.shaper.is_some() && store.settings().shaping_enabled;
        let decided = {
            let store = store.clone();
            match tokio::task::spawn_blocking(move || {
                let subs = store.subscribers();
                decide(
                    subs.iter().map(|s| &**s),
                    |u| store.sessions_of(u),
                    now(),
                    shaping,
                )
            })
            .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "deciding enforcement failed");
                    return false;
                }
            }
        };
        if self.snapshots_seen != Some(snapshots) {
            // A snapshot replaces the state whole: rebuild rather than patch.
            self.needs_full = true;
            self.snapshots_seen = Some(snapshots);
        }
        let ok = match self.firewall.take() {
            Some(mut fw) => {
                let full = self.needs_full;
                let wanted: BTreeSet<IpAddr> = decided.blocked.keys().copied().collect();
                let (fw_back, result) = tokio::task::spawn_blocking(move || {
                    let r = apply(fw.as_mut(), &wanted, full);
                    (fw, r)
                })
                .await
                .unwrap_or_else(|e| panic!("enforcement apply panicked: {e}"));
                let enforced = fw_back.enforced().clone();
                self.firewall = Some(fw_back);
                let count = |ok: bool| {
                    let c = match (full, ok) {
                        (true, true) => &self.stats.full_ok,
                        (true, false) => &self.stats.full_failed,
                        (false, true) => &self.stats.incremental_ok,
                        (false, false) => &self.stats.incremental_failed,
                    };
                    c.fetch_add(1, Ordering::Relaxed);
                };
                count(result.is_ok());
                let ok = match result {
                    Ok(stats) => {
                        if stats.added + stats.removed > 0 || full {
                            tracing::info!(
                                full,
                                added = stats.added,
                                removed = stats.removed,
                                blocked = enforced.len(),
                                "enforcement applied"
                            );
                        }
                        self.needs_full = false;
                        true
                    }
                    Err(e) => {
                        tracing::error!(error = %ErrorChain(&e), "enforcement apply failed; rebuilding the table next");
                        self.needs_full = true;
                        false
                    }
                };
                self.publish(revision, &decided, Some(&enforced), ok);
                ok
            }
            None => {
                self.publish(revision, &decided, None, true);
                true
            }
        };
        let ok = self.shape(&decided, shaping).await && ok;
        self.cut_sessions(&decided);
        self.last = Some(decided);
        if ok {
            self.reconciled.send_modify(|n| *n += 1);
        }
        ok
    }

    /// Brings the HTB classes to the enforcement's shaped subscribers: whole after a snapshot
    /// or a failure, else only the ones that came, went or changed rate or address.
    async fn shape(&mut self, decided: &Enforcement, enabled: bool) -> bool {
        let Some(mut shaper) = self.shaper.take() else {
            return true;
        };
        let rebuild = !self.shaping_applied;
        let applied = self.shaping_applied;
        let want = decided.shaped.clone();
        let (shaper, result) = tokio::task::spawn_blocking(move || {
            let r = if !enabled {
                if applied { shaper.clear() } else { Ok(()) }
            } else if rebuild {
                shaper.full(&want.values().copied().collect::<Vec<_>>())
            } else {
                let gone: Vec<i64> = shaper
                    .classes()
                    .map(|c| c.subscriber_id)
                    .filter(|id| !want.contains_key(id))
                    .collect();
                let changed: Vec<crate::shape::Shaped> = want
                    .values()
                    .filter(|s| {
                        shaper
                            .class_of(s.subscriber_id)
                            .is_none_or(|c| c.ip != s.ip || c.rate != s.rate)
                    })
                    .copied()
                    .collect();
                let r = if gone.is_empty() {
                    Ok(())
                } else {
                    shaper.remove(&gone)
                };
                r.and_then(|()| {
                    if changed.is_empty() {
                        Ok(())
                    } else {
                        shaper.upsert(&changed)
                    }
                })
            };
            (shaper, r)
        })
        .await
        .unwrap_or_else(|e| panic!("shaping panicked: {e}"));
        self.shaper = Some(shaper);
        match result {
            Ok(()) => {
                self.shaping_applied = enabled;
                true
            }
            Err(e) => {
                tracing::error!(error = %ErrorChain(&e), "shaping failed; rebuilding next");
                self.shaping_applied = false;
                false
            }
        }
    }

    fn publish(
        &self,
        revision: u64,
        decided: &Enforcement,
        enforced: Option<&BTreeSet<IpAddr>>,
        healthy: bool,
    ) {
        let mut view = View {
            healthy,
            ..View::default()
        };
        for (ip, cut) in &decided.blocked {
            if enforced.is_none_or(|e| e.contains(ip)) {
                view.blocked.insert(*ip, *cut);
            } else {
                view.unenforced.insert(cut.subscriber_id);
            }
        }
        let gauge = |g: &AtomicU64, v: usize| g.store(v as u64, Ordering::Relaxed);
        gauge(&self.stats.drift, view.unenforced.len());
        gauge(&self.stats.blocked, view.blocked.len());
        self.stats.revision.store(revision, Ordering::Relaxed);
        self.enforced.send_replace(Enforced {
            revision,
            unenforced: view.unenforced.clone(),
        });
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = view;
    }

    /// Disconnects the sessions of subscribers that just became blocked, and re-rates
    /// those whose plan changed. The nftables block applies whether or not the NAS agrees.
    fn cut_sessions(&self, decided: &Enforcement) {
        let Some(coa) = &self.coa else { return };
        for (id, reason) in &decided.reasons {
            let was_blocked = self
                .last
                .as_ref()
                .is_some_and(|l| l.reasons.contains_key(id));
            if was_blocked {
                continue;
            }
            self.queue(coa, *id, CoaAction::Disconnect, reason.as_str());
        }
        let Some(last) = &self.last else { return };
        for (id, rate) in &decided.rates {
            if let (Some(before), Some(rate)) = (last.rates.get(id), rate)
                && before.as_ref() != Some(rate)
            {
                self.queue(coa, *id, CoaAction::ChangeRate(*rate), "plan_change");
            }
        }
    }

    fn queue(&self, coa: &mpsc::UnboundedSender<CoaJob>, id: i64, action: CoaAction, why: &str) {
        let Some(sub) = self.store.subscriber_by_id(id) else {
            return;
        };
        for session in self.store.sessions_of(&sub.username) {
            let Some(nas) = self.store.nas_by_ip(&session.nas_ip) else {
                tracing::warn!(subscriber = id, nas = %session.nas_ip, "session on a NAS this site no longer has; cannot send CoA");
                continue;
            };
            let _ = coa.send(CoaJob {
                nas,
                session,
                action: action.clone(),
                reason: why.to_string(),
            });
        }
    }
}

/// Sends each [`CoaJob`] to its NAS and journals the outcome (ACK, NAK with its
/// Error-Cause, or timeout) as an event for the controller. Jobs run concurrently; the
/// client keeps Identifiers apart per NAS.
pub async fn dispatch_coa(
    mut jobs: mpsc::UnboundedReceiver<CoaJob>,
    client: Arc<crate::coa::CoaClient>,
    store: Arc<Store>,
) {
    while let Some(job) = jobs.recv().await {
        let (client, store) = (client.clone(), store.clone());
        tokio::spawn(async move {
            let action = match job.action {
                CoaAction::Disconnect => crate::coa::Action::Disconnect,
                CoaAction::ChangeRate(r) => crate::coa::Action::ChangeRate(r),
            };
            match client
                .send(&job.nas, &job.session, &action, &job.reason)
                .await
            {
                Ok(event) => {
                    tracing::info!(
                        user = %event.username, nas = %event.nas_ip, kind = ?event.kind,
                        outcome = ?event.outcome, error_cause = ?event.error_cause,
                        attempts = event.attempts, "CoA answered"
                    );
                    let body = proto::EventBody::Coa(event);
                    if let Err(e) = tokio::task::spawn_blocking(move || store.journal(&body)).await
                    {
                        tracing::error!(error = %e, "journaling a CoA outcome failed");
                    }
                }
                Err(e) => tracing::warn!(
                    user = %job.session.username, nas = %job.nas.ip, error = %ErrorChain(&e),
                    "CoA not sent"
                ),
            }
        });
    }
}
