//! One WAN-check sweep by the agent's ICMP engine, as its own process so the benchmark
//! can measure it exactly as it measures fping (`/usr/bin/time`: wall, CPU, peak RSS).
//!
//! `wan-sweep FIRST COUNT RATE_PPS TIMEOUT_MS`: echoes COUNT consecutive IPv4 addresses
//! from FIRST, paced at RATE_PPS, and prints `sent= answered= down= sweep_ms=`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::Context;
use outpost_agent::wan::Pinger;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [first, count, rate, timeout] = args.as_slice() else {
        anyhow::bail!("usage: wan-sweep FIRST COUNT RATE_PPS TIMEOUT_MS");
    };
    let first: Ipv4Addr = first.parse().context("FIRST")?;
    let count: u32 = count.parse().context("COUNT")?;
    let rate: u32 = rate.parse().context("RATE_PPS")?;
    let timeout = Duration::from_millis(timeout.parse().context("TIMEOUT_MS")?);
    let targets: Vec<IpAddr> = (0..count)
        .map(|i| IpAddr::V4(Ipv4Addr::from(u32::from(first) + i)))
        .collect();
    let groups = vec![0i64; targets.len()];
    let mut pinger = Pinger::open(16 << 20).context("opening the raw sockets")?;
    let start = Instant::now();
    let (rtts, stats) = pinger.sweep(&targets, &groups, rate, rate, timeout);
    let elapsed = start.elapsed();
    let down = rtts.iter().filter(|r| r.is_none()).count();
    println!(
        "sent={} answered={} down={} sweep_ms={:.1} ignored={} send_errors={}",
        stats.sent,
        stats.answered,
        down,
        elapsed.as_secs_f64() * 1000.0,
        stats.ignored,
        stats.send_errors
    );
    Ok(())
}
