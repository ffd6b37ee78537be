//! Cutting off subscribers: the agent's nftables enforcement against `nft -f`,
//! `nft -j -f`, the `nft` CLI per element and iptables, on the same kernel in one run.
//!
//! `cargo bench -p outpost-tests --bench enforce` as root (Debian: nftables, iptables,
//! iproute2, iputils-ping). Environment: N (100,000 blocked subscribers), IPT_N (= N),
//! RUNS (5), CHANGES (30), FWD_SIZES ("0,10000,100000"), FWD_SECS (1), FWD_RUNS (3),
//! PACE_US (20); see `outpost_tests::enforce_bench::BenchConfig`.
//!
//! # Method
//! Three namespaces: `sub` (10.1.1.2) ─ `bng` (router) ─ `up` (198.51.100.2). Everything
//! under test runs in `bng`: the agent's `Enforcer` in this process on a thread that
//! entered it, the peers as processes started from that thread (so no `ip netns exec`
//! start-up is counted for anyone). Blocked addresses are 100.64.0.0 + i.
//! - **Full load**: `Enforcer::full` of N addresses into a fresh namespace state (skeleton
//!   written by `nft` through the `nftables` crate, elements by our netlink batch, then
//!   verified: a terse listing plus lookups of 64 sampled elements), and again over the
//!   existing table (the agent's restart/snapshot case); against `nft -f` of a text file
//!   and `nft -j -f` of a JSON document holding a table and one set of the same N
//!   addresses, and `iptables-restore` of IPT_N `-A FORWARD -s a/32 -j DROP` rules.
//! - **One change** with the N-element set (IPT_N-rule chain) in place: our `change` of
//!   one address, to the kernel's ACK and with the lookup that verifies it; one
//!   `nft add/delete element` process; one `iptables -A` process.
//! - **Change call to first dropped packet**: the subscriber streams 8-byte datagrams
//!   (one per PACE_US, each carrying its send time) to a sink upstream; after 200 have
//!   arrived the block is issued. The first dropped datagram is the first one sent after
//!   the last one that arrived; the figure is its send time less the call's start (taken
//!   from what was sent, so a sender descheduled while a peer's process starts cannot
//!   flatter anyone). Resolution is the stream's mean interval, printed too. Per method:
//!   our `change`, `nft add element`, `iptables -I FORWARD -s 10.1.1.2 -j DROP` with
//!   IPT_N rules in the chain.
//! - **Forwarding cost**: 64-byte UDP datagrams blasted from `sub` through `bng` for
//!   FWD_SECS; datagrams delivered per second, with our table holding a set of each size
//!   (the probe's address not in it) and, separately, an iptables FORWARD chain of as many
//!   non-matching rules. Sender, forwarding and receiver share the machine's cores, so
//!   the ratios are the figures, not the absolute rates.
//!
//! Each figure is the median of its samples (min, max and count printed). Nothing is
//! asserted here; `tests/tests/enforce_bench_smoke.rs` keeps the machinery correct.

use outpost_tests::enforce_bench::{self, BenchConfig};

fn main() -> anyhow::Result<()> {
    let cfg = BenchConfig::from_env()?;
    println!("enforcement benchmark: {cfg:?}");
    let r = enforce_bench::run_all(&cfg)?;
    println!("{}", r.table());
    let ratio = |a: &str, b: &str| match (r.get(a), r.get(b)) {
        (Some(a), Some(b)) => format!("{:.1}x", a.median() / b.median()),
        _ => "n/a".into(),
    };
    println!("ratios (peer / ours):");
    let fresh = "ours: full() of";
    let existing = format!("ours: full() of {} over", cfg.n);
    let one = "ours: change(add 1) incl.";
    for (what, peer, ours) in [
        ("full load, nft -f / ours fresh", "nft -f", fresh),
        (
            "full load, nft -f / ours over existing",
            "nft -f",
            existing.as_str(),
        ),
        ("full load, nft -j -f / ours fresh", "nft -j -f", fresh),
        (
            "full load, iptables-restore / ours fresh",
            "iptables-restore",
            fresh,
        ),
        (
            "one add, nft CLI / ours (incl. verify)",
            "nft add element (one",
            one,
        ),
        (
            "one add, iptables -A / ours (incl. verify)",
            "iptables -A",
            one,
        ),
    ] {
        println!("  {what:<48} {}", ratio(peer, ours));
    }
    for f in r
        .figures
        .iter()
        .filter(|f| f.what.starts_with("ours: set of "))
    {
        let size = f.what.trim_start_matches("ours: set of ");
        if let Some(ipt) = r.get(&format!("iptables: chain of {size} rules")) {
            println!(
                "  forwarding at {size:>7}: ours / iptables = {:.2}x",
                f.median() / ipt.median()
            );
        }
    }
    Ok(())
}
