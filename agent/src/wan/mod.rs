//! WAN checks: every subscriber's CPE probed from the site, by ICMP echo and TCP
//! connect, with up/down transitions journaled to the outbox like any other event.
//!
//! - `icmp.rs`: our echo engine: one raw socket per address family for every target,
//!   replies matched by a per-process tag and the target's index in the payload, a
//!   paced sender (global and per-reseller caps), timeouts in one deadline-ordered queue.
//! - `tcp.rs`: TCP connect probes with bounded concurrency, closed by RST.
//! - `state.rs`: per target state (down after N failures, up after one success, RTT,
//!   loss, flaps) as plain data, and the transitions it yields.
//! - `targets.rs`: the targets from the store, refused outside the site's subscriber
//!   networks (the agent must never become a scanner).
//! - `run.rs`: the loop a site runs: targets, one sweep, state, journal.
//!
//! Mechanism apart from policy: `icmp.rs` and `tcp.rs` know addresses only.

mod icmp;
mod run;
mod state;
mod targets;
mod tcp;

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use icmp::{Pinger, SweepStats};
pub use run::{WAN_STATES, WanHandle, run};
pub use state::{Observation, TargetState, Tracker};
pub use targets::{Refused, Target, collect as collect_targets};
pub use tcp::probe_all as tcp_probe_all;

/// The `[wan]` section of the agent config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanConfig {
    /// The site's subscriber networks: a target outside every one of them is refused.
    pub subscriber_networks: Vec<IpNet>,
    /// The least time between two probes of one target, milliseconds: one sweep starts
    /// no sooner than this after the one before.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// How long a probe's answer is waited for, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive failed probes after which a target is down (one success brings it up).
    #[serde(default = "default_down_after")]
    pub down_after: u32,
    /// Echo requests per second for the whole site.
    #[serde(default = "default_rate_pps")]
    pub rate_pps: u32,
    /// Echo requests per second for one reseller's subscribers, so one big reseller
    /// cannot take the whole budget.
    #[serde(default = "default_reseller_rate_pps")]
    pub reseller_rate_pps: u32,
    /// TCP ports connected to on every target, besides the echo.
    #[serde(default)]
    pub tcp_ports: Vec<u16>,
    /// TCP connects in flight at once.
    #[serde(default = "default_tcp_concurrency")]
    pub tcp_concurrency: usize,
    /// SO_RCVBUF of each raw socket: a sweep's answers wait here while the sender runs.
    /// The kernel caps it at `net.core.rmem_max` (SO_RCVBUFFORCE is tried first as root).
    #[serde(default = "default_recv_buffer")]
    pub recv_buffer_bytes: usize,
}

fn default_interval_ms() -> u64 {
    10_000
}
fn default_timeout_ms() -> u64 {
    1_000
}
fn default_down_after() -> u32 {
    3
}
fn default_rate_pps() -> u32 {
    20_000
}
fn default_reseller_rate_pps() -> u32 {
    20_000
}
fn default_tcp_concurrency() -> usize {
    256
}
fn default_recv_buffer() -> usize {
    8 << 20
}

/// The most echo requests per second the config may ask for: past it a typo, not a plan.
pub const MAX_RATE_PPS: u32 = 1_000_000;

impl WanConfig {
    /// A config for these networks with every default.
    pub fn new(subscriber_networks: Vec<IpNet>) -> WanConfig {
        WanConfig {
            subscriber_networks,
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            down_after: default_down_after(),
            rate_pps: default_rate_pps(),
            reseller_rate_pps: default_reseller_rate_pps(),
            tcp_ports: vec![],
            tcp_concurrency: default_tcp_concurrency(),
            recv_buffer_bytes: default_recv_buffer(),
        }
    }

    /// Refuses values that make no sense, naming the field.
    pub fn check(&self) -> Result<(), String> {
        let bad = |field: &str, why: &str| Err(format!("wan.{field} {why}"));
        if self.subscriber_networks.is_empty() {
            return bad(
                "subscriber_networks",
                "must list the site's subscriber networks: nothing else is probed",
            );
        }
        if let Some(n) = self
            .subscriber_networks
            .iter()
            .find(|n| n.prefix_len() == 0)
        {
            return bad(
                "subscriber_networks",
                &format!("may not hold {n}: that is every address, a scanner's list"),
            );
        }
        for (field, v, lo, hi) in [
            (
                "rate_pps",
                u64::from(self.rate_pps),
                1,
                u64::from(MAX_RATE_PPS),
            ),
            (
                "reseller_rate_pps",
                u64::from(self.reseller_rate_pps),
                1,
                u64::from(MAX_RATE_PPS),
            ),
            ("timeout_ms", self.timeout_ms, 10, 60_000),
            ("interval_ms", self.interval_ms, 100, 86_400_000),
            ("down_after", u64::from(self.down_after), 1, 100),
            ("tcp_concurrency", self.tcp_concurrency as u64, 1, 10_000),
        ] {
            if !(lo..=hi).contains(&v) {
                return bad(field, &format!("must be {lo}..={hi}, not {v}"));
            }
        }
        if self.tcp_ports.contains(&0) {
            return bad("tcp_ports", "may not hold port 0");
        }
        if !(64 << 10..=1 << 30).contains(&self.recv_buffer_bytes) {
            return bad("recv_buffer_bytes", "must be 64 KiB..=1 GiB");
        }
        Ok(())
    }

    /// How long to wait for an answer.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The least time between two probes of one target.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_or_absurd_rates_and_empty_networks_are_refused_by_name() {
        let ok = WanConfig::new(vec!["100.64.0.0/10".parse().unwrap()]);
        ok.check().unwrap();
        let err = |f: &dyn Fn(&mut WanConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c.check().unwrap_err()
        };
        assert!(err(&|c| c.rate_pps = 0).contains("wan.rate_pps"));
        assert!(err(&|c| c.rate_pps = 50_000_000).contains("wan.rate_pps"));
        assert!(err(&|c| c.reseller_rate_pps = 0).contains("wan.reseller_rate_pps"));
        assert!(err(&|c| c.timeout_ms = 0).contains("wan.timeout_ms"));
        assert!(err(&|c| c.interval_ms = 0).contains("wan.interval_ms"));
        assert!(err(&|c| c.down_after = 0).contains("wan.down_after"));
        assert!(err(&|c| c.tcp_concurrency = 0).contains("wan.tcp_concurrency"));
        assert!(err(&|c| c.tcp_ports = vec![22, 0]).contains("wan.tcp_ports"));
        assert!(err(&|c| c.subscriber_networks.clear()).contains("subscriber_networks"));
        assert!(
            err(&|c| c.subscriber_networks = vec!["0.0.0.0/0".parse().unwrap()])
                .contains("subscriber_networks")
        );
    }
}
