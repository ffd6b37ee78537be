//! Per target state as plain data: down after `down_after` consecutive failures, up
//! after one success, with RTT, loss and flaps kept, and the transitions to journal.

use std::collections::HashMap;
use std::time::Duration;

use outpost_protocol::{WanProbe, WanState, WanTransition};
use serde::{Deserialize, Serialize};

/// What the agent knows of one probe of one CPE; kept in the store across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetState {
    /// The address last probed.
    pub address: String,
    /// The owning reseller.
    pub tenant_id: i64,
    /// `None` until the first answer or the first `down_after` failures.
    pub state: Option<WanState>,
    /// Unix seconds the current state began.
    pub since: i64,
    /// Failed probes in a row.
    pub failures: u32,
    /// Probes sent.
    pub sent: u64,
    /// Probes unanswered.
    pub lost: u64,
    /// State changes, the first one (from unknown) not counted.
    pub flaps: u32,
    /// The last answer's round trip, microseconds.
    pub rtt_us: Option<u64>,
    /// Smoothed round trip (7/8 old + 1/8 new, as TCP's SRTT), microseconds.
    pub srtt_us: Option<u64>,
}

/// One probe's result for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation<'a> {
    pub subscriber_id: i64,
    pub tenant_id: i64,
    pub address: &'a str,
    pub probe: WanProbe,
    /// The answer's round trip, or `None` for no answer.
    pub rtt: Option<Duration>,
}

/// The state of every target, keyed by (subscriber, probe).
#[derive(Debug, Default)]
pub struct Tracker {
    pub down_after: u32,
    pub targets: HashMap<(i64, WanProbe), TargetState>,
}

impl Tracker {
    /// An empty tracker going down after `down_after` failures.
    pub fn new(down_after: u32) -> Tracker {
        Tracker {
            down_after,
            targets: HashMap::new(),
        }
    }

    /// Takes one result at `now` (unix seconds). Returns the transition it caused, if
    /// any, and whether the target's stored row should be rewritten.
    pub fn observe(&mut self, o: Observation<'_>, now: i64) -> (Option<WanTransition>, bool) {
        let down_after = self.down_after;
        let t = self
            .targets
            .entry((o.subscriber_id, o.probe))
            .or_insert_with(|| TargetState {
                address: o.address.to_string(),
                tenant_id: o.tenant_id,
                state: None,
                since: now,
                failures: 0,
                sent: 0,
                lost: 0,
                flaps: 0,
                rtt_us: None,
                srtt_us: None,
            });
        let mut dirty = t.address != o.address || t.tenant_id != o.tenant_id;
        t.address = o.address.to_string();
        t.tenant_id = o.tenant_id;
        t.sent += 1;
        let before = t.state;
        let previous_since = t.since;
        match o.rtt {
            Some(rtt) => {
                let us = rtt.as_micros().min(u64::MAX as u128) as u64;
                t.rtt_us = Some(us);
                t.srtt_us = Some(match t.srtt_us {
                    Some(s) => (s * 7 + us) / 8,
                    None => us,
                });
                dirty |= t.failures != 0;
                t.failures = 0;
                t.state = Some(WanState::Up);
            }
            None => {
                t.lost += 1;
                if t.failures < down_after {
                    t.failures += 1;
                    dirty = true;
                }
                if t.failures >= down_after {
                    t.state = Some(WanState::Down);
                }
            }
        }
        if t.state == before {
            return (None, dirty);
        }
        t.since = now;
        if before.is_some() {
            t.flaps += 1;
        }
        // Unknown → up is the normal start, not news; unknown → down is an outage.
        if before.is_none() && t.state == Some(WanState::Up) {
            return (None, true);
        }
        let state = t.state.expect("changed to a state");
        let transition = WanTransition {
            subscriber_id: o.subscriber_id,
            tenant_id: o.tenant_id,
            address: t.address.clone(),
            probe: o.probe,
            state,
            previous_since: if before.is_some() { previous_since } else { 0 },
            failures: if state == WanState::Down {
                t.failures
            } else {
                0
            },
            rtt_us: if state == WanState::Up {
                t.rtt_us
            } else {
                None
            },
            sent: t.sent,
            lost: t.lost,
            flaps: t.flaps,
        };
        (Some(transition), true)
    }

    /// Forgets targets not in `keep` (subscribers gone, probes no longer configured);
    /// returns their keys.
    pub fn retain(
        &mut self,
        keep: &std::collections::HashSet<(i64, WanProbe)>,
    ) -> Vec<(i64, WanProbe)> {
        let gone: Vec<_> = self
            .targets
            .keys()
            .filter(|k| !keep.contains(k))
            .copied()
            .collect();
        for k in &gone {
            self.targets.remove(k);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(rtt: Option<u64>) -> Observation<'static> {
        Observation {
            subscriber_id: 7,
            tenant_id: 2,
            address: "100.64.0.7",
            probe: WanProbe::Icmp,
            rtt: rtt.map(Duration::from_micros),
        }
    }

    #[test]
    fn down_after_n_failures_up_after_one_success_with_flaps_and_loss() {
        let mut t = Tracker::new(3);
        assert_eq!(t.observe(obs(Some(500)), 100).0, None, "first up is quiet");
        assert_eq!(t.observe(obs(None), 110).0, None);
        assert_eq!(t.observe(obs(None), 120).0, None);
        let down = t.observe(obs(None), 130).0.expect("third failure: down");
        assert_eq!(
            (down.state, down.failures, down.previous_since, down.flaps),
            (WanState::Down, 3, 100, 1)
        );
        assert_eq!(
            t.observe(obs(None), 140),
            (None, false),
            "still down, nothing to write"
        );
        let up = t.observe(obs(Some(900)), 150).0.expect("one answer: up");
        assert_eq!(
            (
                up.state,
                up.previous_since,
                up.rtt_us,
                up.flaps,
                up.sent,
                up.lost
            ),
            (WanState::Up, 130, Some(900), 2, 6, 4)
        );
        // A failure fewer than N is no outage.
        t.observe(obs(None), 160);
        t.observe(obs(None), 170);
        assert_eq!(t.observe(obs(Some(400)), 180).0, None);
        let s = &t.targets[&(7, WanProbe::Icmp)];
        assert_eq!(s.failures, 0);
        assert_eq!(s.srtt_us, Some(((500 * 7 + 900) / 8 * 7 + 400) / 8));
    }

    #[test]
    fn a_target_never_seen_up_goes_down_as_news() {
        let mut t = Tracker::new(1);
        let down = t.observe(obs(None), 100).0.unwrap();
        assert_eq!(
            (down.state, down.previous_since, down.flaps),
            (WanState::Down, 0, 0)
        );
    }
}
