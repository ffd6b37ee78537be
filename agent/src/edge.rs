//! Edge enforcement policy: which addresses the site cuts off, decided from the local
//! store, so it keeps deciding while the controller is unreachable.
//!
//! The policy is a pure function ([`plan`]) from the desired state, the online sessions
//! and the agent's clock to a [`Plan`]: every address to hold in the walled garden, with
//! whose it is and why. The loop ([`Edge::run`]) applies each plan through a
//! [`Firewall`] (the nftables mechanism in `enforce`, which knows nothing about
//! resellers or plans), verifies it, publishes what is enforced for the suspended page
//! and the acknowledgement digest, and asks the NAS to cut live sessions
//! ([`CoaJob`]) when a subscriber becomes blocked or changes plan.
//!
//! It wakes when the store changes (a state applied, an address learnt from
//! accounting, a NAS restart), when the next subscriber expires by the agent's own
//! clock, when the sync loop wants the result before acknowledging, and every
//! `verify_interval` to check the kernel still holds what it should.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use outpost_protocol::{self as proto, Rate, SubscriberState, SubscriberStatus};
use tokio::sync::{mpsc, oneshot, watch};

use crate::ErrorChain;
use crate::clock::now;
use crate::store::{OnlineSession, Store};
use crate::sync::Enforced;

/// Why a subscriber is in the walled garden; shown on the suspended page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Suspended,
    Disabled,
    Expired,
}

impl Reason {
    /// The word used in events and on the page.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Suspended => "suspended",
            Reason::Disabled => "disabled",
            Reason::Expired => "expired",
        }
    }
}

/// Whether `sub` is cut off at `now`, and why. Expiry is the agent's own clock against
/// the synced `expires_at`, the same rule RADIUS applies.
pub fn standing(sub: &SubscriberState, now: i64) -> Option<Reason> {
    match sub.status {
        SubscriberStatus::Suspended => Some(Reason::Suspended),
        SubscriberStatus::Disabled => Some(Reason::Disabled),
        SubscriberStatus::Expired => Some(Reason::Expired),
        SubscriberStatus::Active if sub.expires_at.is_some_and(|at| at <= now) => {
            Some(Reason::Expired)
        }
        SubscriberStatus::Active => None,
    }
}

/// One address in the walled garden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoff {
    pub subscriber_id: i64,
    pub tenant_id: i64,
    pub reason: Reason,
}

/// What the site should enforce at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Every blocked address and whose it is.
    pub blocked: BTreeMap<IpAddr, Cutoff>,
    /// Blocked subscribers and why (with or without a known address).
    pub reasons: HashMap<i64, Reason>,
    /// Active subscribers' plan rates, to notice a plan change.
    pub rates: HashMap<i64, Option<Rate>>,
    /// When the next active subscriber expires (unix seconds), to wake then.
    pub next_expiry: Option<i64>,
    /// Active subscribers with a plan rate and an IPv4 address, when the agent shapes.
    pub shaped: BTreeMap<i64, crate::shape::Shaped>,
}

/// Where a subscriber's addresses come from: the static IP the controller set, and
/// whatever accounting reported for its online sessions.
pub fn addresses(sub: &SubscriberState, sessions: &[OnlineSession]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    if let Some(ip) = sub.static_ipv4.as_deref().and_then(|ip| ip.parse().ok()) {
        out.push(ip);
    }
    for s in sessions {
        out.extend(s.framed_ip);
        out.extend(s.framed_ipv6);
    }
    out.sort();
    out.dedup();
    out
}

/// The policy: from each subscriber's standing and addresses to a [`Plan`].
/// `sessions_of` gives a subscriber's online sessions by username.
pub fn plan<'a>(
    subscribers: impl IntoIterator<Item = &'a SubscriberState>,
    sessions_of: impl Fn(&str) -> Vec<OnlineSession>,
    now: i64,
    shaping: bool,
) -> Plan {
    let mut p = Plan::default();
    for sub in subscribers {
        match standing(sub, now) {
            Some(reason) => {
                p.reasons.insert(sub.id, reason);
                let cut = Cutoff {
                    subscriber_id: sub.id,
                    tenant_id: sub.tenant_id,
                    reason,
                };
                for ip in addresses(sub, &sessions_of(&sub.username)) {
                    // Two subscribers claiming one address (a stale session, a static IP
                    // reused): blocked either way; the lower id names the page.
                    p.blocked
                        .entry(ip)
                        .and_modify(|c| {
                            if cut.subscriber_id < c.subscriber_id {
                                *c = cut;
                            }
                        })
                        .or_insert(cut);
                }
            }
            None => {
                p.rates.insert(sub.id, sub.rate);
                if shaping && let Some(rate) = sub.rate {
                    let ip = addresses(sub, &sessions_of(&sub.username))
                        .into_iter()
                        .find_map(|ip| match ip {
                            IpAddr::V4(v4) => Some(v4),
                            IpAddr::V6(_) => None,
                        });
                    if let Some(ip) = ip {
                        p.shaped.insert(
                            sub.id,
                            crate::shape::Shaped {
                                subscriber_id: sub.id,
                                ip,
                                rate,
                            },
                        );
                    }
                }
                if let Some(at) = sub.expires_at {
                    p.next_expiry = Some(p.next_expiry.map_or(at, |n: i64| n.min(at)));
                }
            }
        }
    }
    p
}

/// The kernel side: nftables in production (`enforce`), an in-memory set in unit tests.
pub trait Firewall: Send + 'static {
    /// Make the kernel hold exactly `blocked`, atomically, and confirm it landed.
    fn full(&mut self, blocked: &BTreeSet<IpAddr>) -> Result<(), FirewallError>;
    /// Add and remove individual addresses, and confirm each one.
    fn change(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Result<(), FirewallError>;
    /// Check the table is in place and these addresses are (not) in it.
    fn verify(&mut self, present: &[IpAddr], absent: &[IpAddr]) -> Result<(), FirewallError>;
    /// What the kernel holds per the last verified apply.
    fn enforced(&self) -> &BTreeSet<IpAddr>;
}

/// A [`Firewall`] failed.
#[derive(Debug, thiserror::Error)]
#[error("firewall: {message}")]
pub struct FirewallError {
    /// What it was doing.
    pub message: String,
    /// Why it failed.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl FirewallError {
    pub fn new(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        FirewallError {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub fn msg(message: impl Into<String>) -> Self {
        FirewallError {
            message: message.into(),
            source: None,
        }
    }
}

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
    /// Subscribers blocked by the plan whose block is not (all) in the kernel: the
    /// digest reports them as not enforced, so the controller sees the drift.
    pub unenforced: HashSet<i64>,
    /// Whether the last apply and verify succeeded.
    pub healthy: bool,
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
    /// The previous plan's standing and rates, to notice transitions.
    last: Option<Plan>,
    snapshots_seen: Option<u64>,
    needs_full: bool,
}

/// A handle to a running [`Edge`]: the view, and a way to wait for a reconcile.
#[derive(Clone)]
pub struct EdgeHandle {
    view: Arc<RwLock<View>>,
    enforced: watch::Receiver<Enforced>,
    requests: mpsc::Sender<oneshot::Sender<bool>>,
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
                last: None,
                snapshots_seen: None,
                needs_full: true,
            },
            EdgeHandle {
                view,
                enforced: enforced_rx,
                requests: tx,
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

    /// One reconcile: plan, apply, verify, publish, ask the NAS. Returns whether the
    /// kernel now holds the plan.
    pub async fn step(&mut self) -> bool {
        let store = self.store.clone();
        // Read before the state it decides from, so what is published never claims a
        // newer revision than the one enforced.
        let revision = store.revision();
        let snapshots = store.snapshots();
        let shaping = self.shaper.is_some() && store.settings().shaping_enabled;
        let plan = {
            let store = store.clone();
            match tokio::task::spawn_blocking(move || {
                let subs = store.subscribers();
                plan(
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
                    tracing::error!(error = %e, "enforcement planning failed");
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
                let wanted: BTreeSet<IpAddr> = plan.blocked.keys().copied().collect();
                let (fw_back, result) = tokio::task::spawn_blocking(move || {
                    let r = apply(fw.as_mut(), &wanted, full);
                    (fw, r)
                })
                .await
                .unwrap_or_else(|e| panic!("enforcement apply panicked: {e}"));
                let enforced = fw_back.enforced().clone();
                self.firewall = Some(fw_back);
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
                self.publish(revision, &plan, Some(&enforced), ok);
                ok
            }
            None => {
                self.publish(revision, &plan, None, true);
                true
            }
        };
        let ok = self.shape(&plan, shaping).await && ok;
        self.cut_sessions(&plan);
        self.last = Some(plan);
        ok
    }

    /// Brings the HTB classes to the plan's shaped subscribers: whole after a snapshot
    /// or a failure, else only the ones that came, went or changed rate or address.
    async fn shape(&mut self, plan: &Plan, enabled: bool) -> bool {
        let Some(mut shaper) = self.shaper.take() else {
            return true;
        };
        let rebuild = !self.shaping_applied;
        let applied = self.shaping_applied;
        let want = plan.shaped.clone();
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
        plan: &Plan,
        enforced: Option<&BTreeSet<IpAddr>>,
        healthy: bool,
    ) {
        let mut view = View {
            healthy,
            ..View::default()
        };
        for (ip, cut) in &plan.blocked {
            if enforced.is_none_or(|e| e.contains(ip)) {
                view.blocked.insert(*ip, *cut);
            } else {
                view.unenforced.insert(cut.subscriber_id);
            }
        }
        self.enforced.send_replace(Enforced {
            revision,
            unenforced: view.unenforced.clone(),
        });
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = view;
    }

    /// Disconnects the sessions of subscribers that just became blocked, and re-rates
    /// those whose plan changed. The nftables block applies whether or not the NAS agrees.
    fn cut_sessions(&self, plan: &Plan) {
        let Some(coa) = &self.coa else { return };
        for (id, reason) in &plan.reasons {
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
        for (id, rate) in &plan.rates {
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
            let session = crate::coa::Session {
                username: job.session.username.clone(),
                session_id: job.session.session_id.clone(),
                framed_ip: match job.session.framed_ip {
                    Some(IpAddr::V4(v4)) => Some(v4),
                    _ => None,
                },
            };
            let action = match job.action {
                CoaAction::Disconnect => crate::coa::Action::Disconnect,
                CoaAction::ChangeRate(r) => crate::coa::Action::ChangeRate(r),
            };
            match client.send(&job.nas, &session, &action, &job.reason).await {
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

impl Firewall for crate::enforce::Enforcer {
    fn full(&mut self, blocked: &BTreeSet<IpAddr>) -> Result<(), FirewallError> {
        crate::enforce::Enforcer::full(self, blocked)
            .map(|_| ())
            .map_err(|e| FirewallError::new("full reconcile", e))
    }

    fn change(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Result<(), FirewallError> {
        crate::enforce::Enforcer::change(self, add, remove)
            .map(|_| ())
            .map_err(|e| FirewallError::new("element change", e))
    }

    fn verify(&mut self, present: &[IpAddr], absent: &[IpAddr]) -> Result<(), FirewallError> {
        crate::enforce::Enforcer::verify(self, present, absent)
            .map_err(|e| FirewallError::new("verify", e))
    }

    fn enforced(&self) -> &BTreeSet<IpAddr> {
        crate::enforce::Enforcer::enforced(self)
    }
}

/// Counts of one apply.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    pub added: usize,
    pub removed: usize,
}

/// Brings `fw` to `wanted`: whole when `full`, else by the difference from what it
/// holds; then verifies what was touched.
pub fn apply(
    fw: &mut dyn Firewall,
    wanted: &BTreeSet<IpAddr>,
    full: bool,
) -> Result<ApplyStats, FirewallError> {
    let before = fw.enforced().clone();
    if full {
        // `full` confirms its own load; the batch is all or nothing.
        fw.full(wanted)?;
        return Ok(ApplyStats {
            added: wanted.difference(&before).count(),
            removed: before.difference(wanted).count(),
        });
    }
    let add: Vec<IpAddr> = wanted.difference(&before).copied().collect();
    let remove: Vec<IpAddr> = before.difference(wanted).copied().collect();
    if !add.is_empty() || !remove.is_empty() {
        fw.change(&add, &remove)?;
    }
    // `change` confirmed what it touched; a sample of the rest shows the table is still
    // in place: a set flushed by hand (or by `nft flush ruleset`) fails here and gets
    // rebuilt.
    let sample: Vec<IpAddr> = wanted
        .iter()
        .step_by((wanted.len() / 32).max(1))
        .copied()
        .collect();
    fw.verify(&sample, &[])?;
    Ok(ApplyStats {
        added: add.len(),
        removed: remove.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: i64, status: SubscriberStatus, ip: Option<&str>) -> SubscriberState {
        SubscriberState {
            id,
            username: format!("u{id}"),
            password: "pw".into(),
            status,
            expires_at: None,
            static_ipv4: ip.map(Into::into),
            mac: None,
            rate: None,
            max_sessions: 1,
            tenant_id: 10 + id,
        }
    }

    fn session(user: &str, v4: Option<&str>, v6: Option<&str>) -> OnlineSession {
        OnlineSession {
            nas_ip: "192.0.2.1".into(),
            session_id: format!("s-{user}"),
            username: user.into(),
            framed_ip: v4.map(|a| a.parse().unwrap()),
            framed_ipv6: v6.map(|a| a.parse().unwrap()),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn standing_follows_status_and_the_agent_clock() {
        let mut s = sub(1, SubscriberStatus::Active, None);
        assert_eq!(standing(&s, 100), None);
        s.expires_at = Some(100);
        assert_eq!(standing(&s, 99), None);
        assert_eq!(standing(&s, 100), Some(Reason::Expired));
        for (status, reason) in [
            (SubscriberStatus::Suspended, Reason::Suspended),
            (SubscriberStatus::Disabled, Reason::Disabled),
            (SubscriberStatus::Expired, Reason::Expired),
        ] {
            s.status = status;
            s.expires_at = None;
            assert_eq!(standing(&s, 0), Some(reason));
        }
    }

    #[test]
    fn blocked_addresses_come_from_static_ips_and_sessions() {
        let subs = vec![
            sub(1, SubscriberStatus::Suspended, Some("100.64.0.2")),
            sub(2, SubscriberStatus::Active, Some("100.64.0.3")),
            sub(3, SubscriberStatus::Disabled, None),
            sub(4, SubscriberStatus::Expired, None),
        ];
        let sessions = |u: &str| match u {
            "u1" => vec![session("u1", Some("100.64.1.1"), None)],
            "u2" => vec![session("u2", Some("100.64.1.2"), None)],
            "u3" => vec![session("u3", Some("100.64.1.3"), Some("2001:db8::3"))],
            _ => vec![],
        };
        let p = plan(&subs, sessions, 0, false);
        let blocked: Vec<(IpAddr, i64)> = p
            .blocked
            .iter()
            .map(|(ip, c)| (*ip, c.subscriber_id))
            .collect();
        assert_eq!(
            blocked,
            vec![
                (ip("100.64.0.2"), 1),
                (ip("100.64.1.1"), 1),
                (ip("100.64.1.3"), 3),
                (ip("2001:db8::3"), 3),
            ]
        );
        assert_eq!(p.blocked[&ip("100.64.1.3")].reason, Reason::Disabled);
        assert_eq!(p.blocked[&ip("100.64.1.3")].tenant_id, 13);
        // Blocked without a known address is still a blocked subscriber (RADIUS refuses it).
        assert_eq!(p.reasons.get(&4), Some(&Reason::Expired));
        assert!(p.rates.contains_key(&2) && !p.rates.contains_key(&1));
    }

    #[test]
    fn shaping_takes_active_subscribers_with_a_rate_and_an_ipv4_address() {
        let rate = Rate {
            download_kbps: 8_000,
            upload_kbps: 4_000,
            burst_download_kbps: None,
            burst_upload_kbps: None,
        };
        let mut with_static = sub(1, SubscriberStatus::Active, Some("100.64.0.2"));
        with_static.rate = Some(rate);
        let mut dynamic = sub(2, SubscriberStatus::Active, None);
        dynamic.rate = Some(rate);
        let mut suspended = sub(3, SubscriberStatus::Suspended, Some("100.64.0.4"));
        suspended.rate = Some(rate);
        let no_rate = sub(4, SubscriberStatus::Active, Some("100.64.0.5"));
        let mut v6_only = sub(5, SubscriberStatus::Active, None);
        v6_only.rate = Some(rate);
        let subs = [with_static, dynamic, suspended, no_rate, v6_only];
        let sessions = |u: &str| match u {
            "u2" => vec![session("u2", Some("100.64.1.2"), None)],
            "u5" => vec![session("u5", None, Some("2001:db8::5"))],
            _ => vec![],
        };
        let p = plan(&subs, sessions, 0, true);
        let shaped: Vec<(i64, String)> = p
            .shaped
            .values()
            .map(|s| (s.subscriber_id, s.ip.to_string()))
            .collect();
        assert_eq!(
            shaped,
            vec![(1, "100.64.0.2".to_string()), (2, "100.64.1.2".to_string())]
        );
        assert!(plan(&subs, sessions, 0, false).shaped.is_empty());
    }

    #[test]
    fn the_next_expiry_is_the_earliest_active_one() {
        let mut a = sub(1, SubscriberStatus::Active, None);
        a.expires_at = Some(500);
        let mut b = sub(2, SubscriberStatus::Active, None);
        b.expires_at = Some(300);
        let mut gone = sub(3, SubscriberStatus::Active, Some("100.64.0.9"));
        gone.expires_at = Some(100);
        let p = plan(&[a, b, gone], |_| vec![], 200, false);
        assert_eq!(p.next_expiry, Some(300));
        assert_eq!(p.blocked[&ip("100.64.0.9")].reason, Reason::Expired);
    }

    /// An in-memory firewall: stands in for nftables in unit tests of the policy (the
    /// real one is exercised in the netns lab tests).
    #[derive(Default)]
    struct MemoryFirewall {
        set: BTreeSet<IpAddr>,
        fail_next: bool,
        calls: Vec<&'static str>,
    }

    impl Firewall for MemoryFirewall {
        fn full(&mut self, blocked: &BTreeSet<IpAddr>) -> Result<(), FirewallError> {
            self.calls.push("full");
            if std::mem::take(&mut self.fail_next) {
                return Err(FirewallError::msg("nft refused the batch"));
            }
            self.set = blocked.clone();
            Ok(())
        }
        fn change(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Result<(), FirewallError> {
            self.calls.push("change");
            if std::mem::take(&mut self.fail_next) {
                return Err(FirewallError::msg("netlink said no"));
            }
            self.set.extend(add);
            for r in remove {
                self.set.remove(r);
            }
            Ok(())
        }
        fn verify(&mut self, present: &[IpAddr], absent: &[IpAddr]) -> Result<(), FirewallError> {
            if present.iter().all(|p| self.set.contains(p))
                && absent.iter().all(|a| !self.set.contains(a))
            {
                Ok(())
            } else {
                Err(FirewallError::msg("verify mismatch"))
            }
        }
        fn enforced(&self) -> &BTreeSet<IpAddr> {
            &self.set
        }
    }

    #[test]
    fn apply_rebuilds_whole_then_patches_the_difference() {
        let mut fw = MemoryFirewall::default();
        let a: BTreeSet<IpAddr> = [ip("100.64.0.1"), ip("100.64.0.2")].into();
        assert_eq!(
            apply(&mut fw, &a, true).unwrap(),
            ApplyStats {
                added: 2,
                removed: 0
            }
        );
        let b: BTreeSet<IpAddr> = [ip("100.64.0.2"), ip("2001:db8::1")].into();
        assert_eq!(
            apply(&mut fw, &b, false).unwrap(),
            ApplyStats {
                added: 1,
                removed: 1
            }
        );
        assert_eq!(fw.set, b);
        // Nothing to do: no kernel call, only a verify.
        apply(&mut fw, &b, false).unwrap();
        assert_eq!(fw.calls, ["full", "change"]);
        fw.fail_next = true;
        let c: BTreeSet<IpAddr> = [ip("100.64.0.3")].into();
        assert!(apply(&mut fw, &c, false).is_err());
        assert_eq!(fw.set, b, "a failed change leaves what was enforced");
    }
}
