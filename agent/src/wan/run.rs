//! The loop a site runs: read the targets, sweep them (echo and TCP at once), fold the
//! results into the state, and write the changed rows and the transitions in one
//! transaction. Sweeps start at least `interval` apart.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use outpost_protocol::{self as proto, WanProbe};

use super::state::{Observation, TargetState, Tracker};
use super::{Pinger, WanConfig, targets, tcp};
use crate::ErrorChain;
use crate::clock::now;
use crate::store::Store;

/// What a running WAN check has done, for status and tests.
#[derive(Debug, Default)]
pub struct WanHandle {
    /// Sweeps finished.
    pub sweeps: AtomicU64,
    /// Targets refused in the last sweep (outside the subscriber networks).
    pub refused: AtomicU64,
    /// Targets probed in the last sweep.
    pub targets: AtomicU64,
    /// Probes by kind and state after the last sweep, in [`WAN_STATES`]' order
    /// (metrics: `outpost_agent_wan_targets`).
    pub by_state: [AtomicU64; 6],
}

/// The (probe, state) pairs [`WanHandle::by_state`] counts, as metrics label them.
pub const WAN_STATES: [(&str, &str); 6] = [
    ("icmp", "up"),
    ("icmp", "down"),
    ("icmp", "unknown"),
    ("tcp", "up"),
    ("tcp", "down"),
    ("tcp", "unknown"),
];

/// Counts the tracker's probes by kind and state into `handle`.
fn count_states(tracker: &Tracker, handle: &WanHandle) {
    let mut n = [0u64; 6];
    for ((_, probe), t) in &tracker.targets {
        let kind = match probe {
            WanProbe::Icmp => 0,
            WanProbe::Tcp { .. } => 3,
        };
        let state = match t.state {
            Some(proto::WanState::Up) => 0,
            Some(proto::WanState::Down) => 1,
            None => 2,
        };
        n[kind + state] += 1;
    }
    for (c, v) in handle.by_state.iter().zip(n) {
        c.store(v, Ordering::Relaxed);
    }
}

fn probe_key(p: &WanProbe) -> String {
    serde_json::to_string(p).expect("probes serialize")
}

/// Loads the stored state into a tracker.
fn load(store: &Store, down_after: u32) -> Tracker {
    let mut tracker = Tracker::new(down_after);
    match store.wan_targets() {
        Ok(rows) => {
            for (id, probe, state) in rows {
                match (
                    serde_json::from_str::<WanProbe>(&probe),
                    serde_json::from_str::<TargetState>(&state),
                ) {
                    (Ok(p), Ok(s)) => {
                        tracker.targets.insert((id, p), s);
                    }
                    _ => tracing::warn!(subscriber = id, "a damaged WAN-check row is ignored"),
                }
            }
        }
        Err(e) => tracing::error!(error = %ErrorChain(&e), "reading the WAN-check state"),
    }
    tracker
}

/// Runs WAN checks until the task is aborted.
pub async fn run(store: Arc<Store>, cfg: WanConfig, pinger: Pinger, handle: Arc<WanHandle>) {
    let mut tracker = load(&store, cfg.down_after);
    let mut pinger = Some(pinger);
    let mut refused_before: HashSet<(i64, IpAddr)> = HashSet::new();
    // Rows and transitions a failed commit left behind, written with the next sweep's.
    let (mut upserts, mut events) = (Vec::new(), Vec::new());
    loop {
        let started = tokio::time::Instant::now();
        let (targets, refused) = targets::collect(&store, &cfg.subscriber_networks);
        let refused_now: HashSet<(i64, IpAddr)> = refused
            .iter()
            .map(|r| (r.subscriber_id, r.address))
            .collect();
        for r in refused_now.difference(&refused_before) {
            tracing::warn!(
                subscriber = r.0,
                address = %r.1,
                "WAN check refused: the address is outside the site's subscriber networks"
            );
        }
        refused_before = refused_now;
        handle
            .refused
            .store(refused.len() as u64, Ordering::Relaxed);
        handle
            .targets
            .store(targets.len() as u64, Ordering::Relaxed);

        let addrs: Vec<IpAddr> = targets.iter().map(|t| t.address).collect();
        let groups: Vec<i64> = targets.iter().map(|t| t.tenant_id).collect();
        let mut p = pinger.take().expect("the pinger is back after every sweep");
        let (rate, group_rate, timeout) = (cfg.rate_pps, cfg.reseller_rate_pps, cfg.timeout());
        let icmp = tokio::task::spawn_blocking(move || {
            let r = p.sweep(&addrs, &groups, rate, group_rate, timeout);
            (p, r)
        });
        let tcp_targets = tcp_probes(&targets, &cfg.tcp_ports);
        let addrs: Vec<SocketAddr> = tcp_targets.iter().map(|t| t.2).collect();
        let (icmp, tcp) = tokio::join!(icmp, tcp::probe_all(&addrs, cfg.tcp_concurrency, timeout));
        let (p, (rtts, stats)) = match icmp {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %ErrorChain(&e), "the ICMP sweep panicked; WAN checks stop");
                return;
            }
        };
        pinger = Some(p);

        let at = now();
        let mut keep = HashSet::new();
        let mut fold = |tracker: &mut Tracker, t: &targets::Target, probe, rtt| {
            let address = t.address.to_string();
            keep.insert((t.subscriber_id, probe));
            let (transition, dirty) = tracker.observe(
                Observation {
                    subscriber_id: t.subscriber_id,
                    tenant_id: t.tenant_id,
                    address: &address,
                    probe,
                    rtt,
                },
                at,
            );
            if dirty {
                let state = &tracker.targets[&(t.subscriber_id, probe)];
                upserts.push((
                    t.subscriber_id,
                    probe_key(&probe),
                    serde_json::to_string(state).expect("states serialize"),
                ));
            }
            if let Some(tr) = transition {
                tracing::info!(
                    subscriber = tr.subscriber_id,
                    tenant = tr.tenant_id,
                    address = %tr.address,
                    probe = ?tr.probe,
                    state = ?tr.state,
                    "WAN check transition"
                );
                events.push(proto::EventBody::WanCheck(tr));
            }
        };
        for (t, rtt) in targets.iter().zip(&rtts) {
            fold(&mut tracker, t, WanProbe::Icmp, *rtt);
        }
        for ((i, port, _), rtt) in tcp_targets.iter().zip(&tcp) {
            fold(
                &mut tracker,
                &targets[*i],
                WanProbe::Tcp { port: *port },
                *rtt,
            );
        }
        let removed: Vec<(i64, String)> = tracker
            .retain(&keep)
            .into_iter()
            .map(|(id, p)| (id, probe_key(&p)))
            .collect();
        match store.wan_commit(&upserts, &removed, &events) {
            Ok(_) => {
                upserts.clear();
                events.clear();
            }
            Err(e) => tracing::error!(
                error = %ErrorChain(&e),
                pending = events.len(),
                "journaling WAN-check transitions; retried after the next sweep"
            ),
        }
        count_states(&tracker, &handle);
        handle.sweeps.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            targets = targets.len(),
            sent = stats.sent,
            answered = stats.answered,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "WAN sweep"
        );
        tokio::time::sleep_until(started + cfg.interval().max(Duration::from_millis(1))).await;
    }
}

/// The TCP probes of a sweep: each target's own ports (its plan's or its own), else the
/// site's, as (target index, port, address).
fn tcp_probes(targets: &[targets::Target], site_ports: &[u16]) -> Vec<(usize, u16, SocketAddr)> {
    targets
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            t.tcp_ports
                .as_deref()
                .unwrap_or(site_ports)
                .iter()
                .map(move |&port| (i, port, SocketAddr::new(t.address, port)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::WanState;

    #[test]
    fn a_subscriber_or_its_plan_names_its_own_ports_else_the_site_does() {
        let t = |id: i64, ports: Option<Vec<u16>>| targets::Target {
            subscriber_id: id,
            tenant_id: 2,
            address: format!("192.0.2.{id}").parse().unwrap(),
            tcp_ports: ports,
        };
        let probes = tcp_probes(
            &[t(1, None), t(2, Some(vec![22, 443])), t(3, Some(vec![]))],
            &[8291],
        );
        let got: Vec<(usize, u16, String)> =
            probes.iter().map(|p| (p.0, p.1, p.2.to_string())).collect();
        assert_eq!(
            got,
            vec![
                (0, 8291, "192.0.2.1:8291".to_string()),
                (1, 22, "192.0.2.2:22".to_string()),
                (1, 443, "192.0.2.2:443".to_string()),
            ],
            "an empty list of its own means ICMP only"
        );
    }

    #[test]
    fn an_outage_and_its_event_survive_a_restart_and_are_not_reported_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = Store::open(&path, 100).unwrap();
        let mut t = Tracker::new(2);
        let obs = |rtt| Observation {
            subscriber_id: 7,
            tenant_id: 2,
            address: "100.64.0.7",
            probe: WanProbe::Icmp,
            rtt,
        };
        t.observe(obs(Some(Duration::from_micros(300))), 100);
        t.observe(obs(None), 110);
        let (down, dirty) = t.observe(obs(None), 120);
        assert!(dirty);
        let row = |t: &Tracker| {
            (
                7,
                probe_key(&WanProbe::Icmp),
                serde_json::to_string(&t.targets[&(7, WanProbe::Icmp)]).unwrap(),
            )
        };
        let seqs = store
            .wan_commit(
                &[row(&t)],
                &[],
                &[proto::EventBody::WanCheck(down.unwrap())],
            )
            .unwrap();
        assert_eq!(seqs, vec![1]);
        drop(store);

        // Restarted: the target is still down, the event still waits in the outbox, and
        // another miss is no new transition.
        let store = Store::open(&path, 100).unwrap();
        let mut t = load(&store, 2);
        let s = &t.targets[&(7, WanProbe::Icmp)];
        assert_eq!(
            (s.state, s.failures, s.since),
            (Some(WanState::Down), 2, 120)
        );
        let batch = store.outbox_batch(10).unwrap();
        assert!(
            matches!(&batch[0].body, proto::EventBody::WanCheck(w) if w.state == WanState::Down)
        );
        assert_eq!(t.observe(obs(None), 130).0, None);
        let up = t
            .observe(obs(Some(Duration::from_micros(400))), 140)
            .0
            .unwrap();
        assert_eq!((up.state, up.previous_since), (WanState::Up, 120));
        // A subscriber gone from the store is forgotten, row and all.
        let gone = t.retain(&HashSet::new());
        let removed: Vec<(i64, String)> = gone.iter().map(|(id, p)| (*id, probe_key(p))).collect();
        store.wan_commit(&[], &removed, &[]).unwrap();
        assert!(store.wan_targets().unwrap().is_empty());
    }
}
