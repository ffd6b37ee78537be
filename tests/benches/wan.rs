//! WAN checks: one sweep of N answering targets by the agent's ICMP engine against
//! Debian's fping 5.1, on the same kernel in one run.
//!
//! `cargo bench -p outpost-tests --bench wan` as root (Debian: fping, time, iproute2).
//! Environment: SIZES ("10000,100000"), RUNS (3), RATE_PPS (20000, ours), TIMEOUT_MS
//! (500, both), FPING_DEFAULT_MAX (10000: fping at its default interval only up to this
//! many targets; it takes about 100 s per 10,000).
//!
//! # Method
//! Two namespaces joined by a veth: `edge` probes, `cpe` answers every address of
//! 10.200.0.0/15 (`ip route add local … dev lo`), so the targets are N real addresses
//! behind a link, answered by the kernel, not loopback addresses of the prober's own
//! stack. Each prober is its own process, started the same way
//! (`ip netns exec edge /usr/bin/time -f "%U %S %M" …`): wall time from spawn to exit
//! (the ~3 ms of `ip netns exec` included for both), CPU-seconds (user + system) and
//! peak RSS as `/usr/bin/time` reports them from wait4. fping runs as the anchor does
//! (`-q -C1 -r0 -t500 -g FIRST LAST`) at `-i 0.1` (the fastest setting that loses no
//! answers here) and at its default; ours is `wan-sweep` (the agent's `Pinger::sweep`,
//! one raw socket, paced at RATE_PPS). Every target answers, so every down is a false
//! down. Each figure is the median of RUNS runs. Nothing is asserted here;
//! `tests/tests/wan_bench_smoke.rs` keeps the machinery correct.

use outpost_tests::system::env_or;
use outpost_tests::wan_bench::{self, Lab, Sweep};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn med(runs: &[Sweep]) -> Sweep {
    let mut m = runs[runs.len() / 2].clone();
    m.wall_secs = median(runs.iter().map(|r| r.wall_secs).collect());
    m.cpu_secs = median(runs.iter().map(|r| r.cpu_secs).collect());
    m.max_rss_kib = median(runs.iter().map(|r| r.max_rss_kib as f64).collect()) as u64;
    m.down = runs.iter().map(|r| r.down).max().unwrap_or(0);
    m.up = runs.iter().map(|r| r.up).min().unwrap_or(0);
    m
}

fn main() -> anyhow::Result<()> {
    let sizes: String = env_or("SIZES", "10000,100000".to_string())?;
    let runs: usize = env_or("RUNS", 3)?;
    let rate: u32 = env_or("RATE_PPS", 20_000)?;
    let timeout: u64 = env_or("TIMEOUT_MS", 500)?;
    let default_max: u32 = env_or("FPING_DEFAULT_MAX", 10_000)?;
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_wan-sweep"));
    println!(
        "WAN-check benchmark: sizes {sizes}, runs {runs}, ours at {rate} pps, timeout {timeout} ms"
    );
    for n in sizes.split(',').map(|s| s.trim().parse::<u32>()) {
        let n = n?;
        let lab = Lab::new(n)?;
        let mut rows = Vec::new();
        let mut each = |f: &dyn Fn() -> anyhow::Result<Sweep>| -> anyhow::Result<Sweep> {
            let r: anyhow::Result<Vec<Sweep>> = (0..runs).map(|_| f()).collect();
            let m = med(&r?);
            rows.push(m.clone());
            Ok(m)
        };
        let o = each(&|| wan_bench::ours(&lab, bin, n, rate, timeout))?;
        let fast = each(&|| wan_bench::fping(&lab, n, Some("0.1")))?;
        let default = if n <= default_max {
            Some(each(&|| wan_bench::fping(&lab, n, None))?)
        } else {
            None
        };
        println!("\n{n} targets (median of {runs}):");
        print!("{}", wan_bench::table(&rows));
        let ratio = |peer: &Sweep| {
            format!(
                "wall {:.2}x, CPU {:.2}x, RSS {:.2}x",
                peer.wall_secs / o.wall_secs,
                peer.cpu_secs / o.cpu_secs.max(0.001),
                peer.max_rss_kib as f64 / o.max_rss_kib as f64
            )
        };
        println!("ratios (peer / ours):");
        println!("  {:<28} {}", fast.prober, ratio(&fast));
        if let Some(d) = &default {
            println!("  {:<28} {}", d.prober, ratio(d));
        }
    }
    Ok(())
}
